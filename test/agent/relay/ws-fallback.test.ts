/**
 * The relay client's WebSocket fallback on the sans-I/O cores and a manual clock:
 * two agents' RelayPaths and a real RelayCore, wired through a tiny network where
 * one agent's UDP to the relay can be blocked, and a WebSocket that can be cut.
 * UDP unanswered → WebSocket (challenge, sealed hello, claims, data both ways);
 * WebSocket lost → reopened with back-off; UDP back → UDP, WebSocket closed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { formatEndpoint } from '../../../shared/net/addr.js';
import type { UdpEndpoint } from '../../../shared/udp.js';
import { decodeWsData, encodeWsData, isRelayPacket } from '../../../shared/wire/relay.js';
import {
  RELAY_UDP_FAIL_MS, RELAY_WS_BACKOFF_MS, RELAY_WS_ENDPOINT, RELAY_WS_READY_MS, RelayClient, type RelayClientAction,
} from '../../../agent/relay/core.js';
import { RelayPaths, type RelayPathsAction, type RelayPathsEvent } from '../../../agent/relay/paths.js';
import { CONTROL, RelayCore, type RelayAction } from '../../../relay/core.js';
import { ManualClock, seededBytes } from '../../helpers/manual-clock.js';

const LATENCY_MS = 10;
const RELAY_IP = '198.18.0.1';
const RELAY_PORT = 3480;
const WS_URL = `ws://${RELAY_IP}:3480/v1/relay`;

interface Node {
  name: string;
  addr: UdpEndpoint;
  nodeKey: string;
  keyBytes: Uint8Array;
  paths: RelayPaths;
  timer?: ReturnType<ManualClock['setTimeout']>;
  actions: RelayPathsAction[];
  /** The WebSocket session on the relay, once the shell "opened" it; ready after ws-ready. */
  session?: number;
  wsReady: boolean;
  /** Let the next ws-connect fail (the relay unreachable over TCP too). */
  refuseWs: boolean;
  udpBlocked: boolean;
  /** WireGuard packets received (over UDP from the relay, or as WebSocket data frames). */
  wireguardIn: number;
  wsDataIn: number;
  claimsIn: number;
}

class World {
  readonly clock = new ManualClock();
  readonly random = seededBytes(7);
  readonly nodes: Node[] = [];
  readonly relay: RelayCore;
  private readonly relayKeys = generateKeyPair();
  private nextPort = 40000;
  private nextSession = 1;
  private readonly sessions = new Map<number, Node>();

  constructor() {
    const members = new Set<string>();
    this.relay = new RelayCore({ privateKey: this.relayKeys.privateKey, publicKey: this.relayKeys.publicKey, isMember: (k) => members.has(k), random: this.random });
    for (const [name, ip] of [['a', '198.18.1.1'], ['b', '198.18.1.2']] as const) {
      const kp = generateKeyPair();
      const n: Node = {
        name, addr: { address: ip, port: 41641 }, nodeKey: encodeKey(kp.publicKey), keyBytes: kp.publicKey, actions: [], wsReady: false,
        refuseWs: false, udpBlocked: false, wireguardIn: 0, wsDataIn: 0, claimsIn: 0,
        paths: new RelayPaths({ nodePublicKey: kp.publicKey, nodePrivateKey: kp.privateKey, random: this.random }, 128),
      };
      members.add(n.nodeKey);
      this.nodes.push(n);
    }
  }

  start(): void {
    for (const n of this.nodes) {
      const other = this.nodes.find((x) => x !== n)!;
      this.feed(n, { type: 'relays', relays: [{ key: encodeKey(this.relayKeys.publicKey), endpoint: { address: RELAY_IP, port: RELAY_PORT }, ws: WS_URL }] });
      // No direct path ever (disco says nothing): the peer needs the relay from the start.
      this.feed(n, { type: 'peers', peers: [{ nodeKey: other.nodeKey, online: true, discoKey: 'k' }] });
    }
  }

  feed(n: Node, e: RelayPathsEvent): void {
    for (const a of n.paths.handle(e, this.clock.now())) {
      n.actions.push(a);
      this.perform(n, a);
    }
    this.arm(n);
  }

  private perform(n: Node, a: RelayPathsAction | RelayClientAction): void {
    switch (a.type) {
      case 'send-udp': this.send(n, n.addr, a.to, a.bytes); break;
      case 'ws-connect':
        assert.equal(a.url, WS_URL);
        this.later(() => {
          if (n.refuseWs) return this.feed(n, { type: 'ws-closed' });
          const id = this.nextSession++;
          this.sessions.set(id, n);
          n.session = id;
          this.feed(n, { type: 'ws-open' });
          this.relayActions(this.relay.handle({ type: 'ws-open', session: id }, this.clock.now()));
        });
        break;
      case 'ws-send': this.toRelayWs(n, a.bytes); break;
      case 'ws-ready': n.wsReady = true; break;
      case 'ws-close': this.cutWs(n, false); break;
      case 'ws-claim': this.toRelayWs(n, encodeWsData(a.peer, claim())); break;
      default: break;
    }
  }

  /** The WebSocket goes away (`notify`: the shell reports it, as when the relay or the network closed it). */
  cutWs(n: Node, notify: boolean): void {
    const id = n.session;
    if (id === undefined) return;
    n.session = undefined;
    n.wsReady = false;
    this.sessions.delete(id);
    this.relayActions(this.relay.handle({ type: 'ws-close', session: id }, this.clock.now()));
    if (notify) this.feed(n, { type: 'ws-closed' });
  }

  private toRelayWs(n: Node, bytes: Uint8Array): void {
    const id = n.session;
    if (id === undefined) return;
    this.later(() => { if (this.sessions.has(id)) this.relayActions(this.relay.handle({ type: 'ws-message', session: id, bytes }, this.clock.now())); });
  }

  private arm(n: Node): void {
    if (n.timer !== undefined) this.clock.clearTimeout(n.timer);
    const at = n.paths.nextWakeup() ?? Infinity;
    n.timer = at === Infinity ? undefined : this.clock.setTimeout(() => {
      n.timer = undefined;
      this.feed(n, { type: 'tick' });
    }, Math.max(0, at - this.clock.now()));
  }

  private later(fn: () => void): void {
    this.clock.setTimeout(fn, LATENCY_MS);
  }

  /** WireGuard on `n` sends a packet to the peer the way the shell would: UDP to relay:port, or a WebSocket data frame. */
  wireguardSend(n: Node, to: Node): void {
    const ep = n.paths.path(to.nodeKey).endpoint!;
    const pkt = new Uint8Array(64);
    pkt[0] = 4;
    pkt[4] = 1; // not a claim
    if (ep === RELAY_WS_ENDPOINT) return this.toRelayWs(n, encodeWsData(to.keyBytes, pkt));
    const i = ep.lastIndexOf(':');
    this.send(n, n.addr, { address: ep.slice(0, i), port: Number(ep.slice(i + 1)) }, pkt);
  }

  send(n: Node | undefined, from: UdpEndpoint, to: UdpEndpoint, bytes: Uint8Array): void {
    if (n?.udpBlocked && to.address === RELAY_IP) return; // a firewall drops all UDP to the relay
    this.later(() => {
      if (to.address === RELAY_IP) {
        const port = to.port === RELAY_PORT ? CONTROL : to.port;
        if (!isRelayPacket(bytes) && port !== CONTROL) {
          const a = this.relay.forward(port, from, bytes, this.clock.now());
          if (a) this.relayActions([a]);
          return;
        }
        return this.relayActions(this.relay.handle({ type: 'udp', port, from, bytes }, this.clock.now()));
      }
      const dest = this.nodes.find((x) => formatEndpoint(x.addr) === formatEndpoint(to));
      if (!dest || dest.udpBlocked) return;
      if (isRelayPacket(bytes)) this.feed(dest, { type: 'udp', from, bytes });
      else if (bytes[4] === 1) dest.wireguardIn++; // (not a's claim, which WireGuard drops)
      else dest.claimsIn++;
    });
  }

  private relayActions(actions: RelayAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') this.send(undefined, { address: RELAY_IP, port: a.port === CONTROL ? RELAY_PORT : a.port }, a.to, a.bytes);
      else if (a.type === 'open-ports') this.relayActions(this.relay.handle({ type: 'ports-opened', pair: a.pair, ports: [this.nextPort++, this.nextPort++] }, this.clock.now()));
      else if (a.type === 'ws-send') {
        const n = this.sessions.get(a.session);
        if (!n) continue;
        const bytes = a.bytes;
        this.later(() => {
          if (n.session !== a.session) return;
          if (!n.wsReady) return this.feed(n, { type: 'ws-frame', bytes });
          const d = decodeWsData(bytes);
          if (d && d.packet[4] === 1) { n.wsDataIn++; n.wireguardIn++; }
        });
      } else if (a.type === 'ws-close') {
        const n = this.sessions.get(a.session);
        if (n) this.cutWs(n, true);
      }
    }
  }
}

function claim(): Uint8Array {
  const b = new Uint8Array(32);
  b[0] = 4;
  return b;
}

const count = (n: Node, type: string) => n.actions.filter((a) => a.type === type).length;

test('UDP to the relay unanswered → WebSocket at once after the retries; packets flow both ways; UDP back → UDP, WebSocket closed', () => {
  const w = new World();
  const [a, b] = w.nodes as [Node, Node];
  a.udpBlocked = true;
  const t0 = w.clock.now();
  w.start();
  w.clock.advance(200);
  // b's UDP works: bound at once. a's allocs go unanswered.
  assert.equal(b.paths.path(a.nodeKey).kind, 'relay');
  assert.equal(b.paths.transport(a.nodeKey), 'udp');
  assert.equal(a.paths.path(b.nodeKey).kind, 'none');
  assert.equal(count(a, 'ws-connect'), 0);
  // After RELAY_UDP_FAIL_MS of silence: the fallback, authenticated in 3 one-way trips.
  w.clock.advance(RELAY_UDP_FAIL_MS);
  assert.equal(count(a, 'udp-unanswered'), 1);
  assert.equal(count(a, 'ws-connect'), 1);
  w.clock.advance(100);
  assert.ok(a.wsReady, 'authenticated');
  assert.equal(a.paths.path(b.nodeKey).kind, 'relay');
  assert.equal(a.paths.path(b.nodeKey).endpoint, RELAY_WS_ENDPOINT);
  assert.equal(a.paths.transport(b.nodeKey), 'ws');
  assert.deepEqual(a.paths.wsPeers(), [b.nodeKey]);
  assert.equal(a.paths.client.transport, 'ws');
  assert.equal(count(a, 'ws-claim'), 1);
  const at = (a.actions.findIndex((x) => x.type === 'path' && x.to === 'relay'));
  assert.ok(at >= 0);
  const relayedAfter = w.clock.now() - t0;
  assert.ok(relayedAfter <= RELAY_UDP_FAIL_MS + 400, `relayed over the WebSocket after ${relayedAfter} ms`);
  assert.equal(w.relay.counters.wsSessions, 1);

  // b is the one to speak first (its WireGuard is the initiator here): the claim made the relay send it down a's socket.
  w.wireguardSend(b, a);
  w.clock.advance(50);
  assert.equal(a.wsDataIn, 1, 'b → relay (UDP) → a (WebSocket)');
  w.wireguardSend(a, b);
  w.clock.advance(50);
  assert.equal(b.wireguardIn, 1, 'a (WebSocket) → relay → b (UDP)');
  assert.equal(b.claimsIn, 1, "a's claim reached b's WireGuard (which drops it)");

  // Still blocked: a keeps to the WebSocket, retrying UDP only on the slow schedule.
  const allocsBefore = a.paths.client.counters.allocsSent;
  w.clock.advance(30_000);
  assert.equal(a.paths.transport(b.nodeKey), 'ws');
  const retries = a.paths.client.counters.allocsSent - allocsBefore;
  assert.ok(retries >= 2 && retries <= 4, `UDP retried ${retries} times in 30 s`);
  assert.equal(count(a, 'ws-connect'), 1, 'no reconnects while the socket holds');

  // UDP comes back: the next retry is answered, the pair moves to UDP and the WebSocket is closed.
  a.udpBlocked = false;
  const t1 = w.clock.now();
  w.clock.advance(11_000);
  assert.equal(a.paths.transport(b.nodeKey), 'udp');
  assert.ok(a.paths.path(b.nodeKey).endpoint!.startsWith(`${RELAY_IP}:`));
  assert.equal(a.paths.client.transport, 'udp');
  assert.equal(a.paths.client.webSocketState, 'closed');
  assert.ok(count(a, 'ws-close') >= 1);
  assert.equal(w.relay.counters.wsSessions, 0);
  const back = a.actions.filter((x) => x.type === 'path' && x.to === 'relay').length;
  assert.equal(back, 2, 'relay (ws) then relay (udp)');
  const backAfter = w.clock.now() - t1;
  w.wireguardSend(a, b);
  w.wireguardSend(b, a);
  w.clock.advance(50);
  assert.equal(b.wireguardIn, 2);
  assert.equal(a.wireguardIn, 2);
  assert.equal(a.wsDataIn, 1, 'the second packet came over UDP');
  assert.ok(backAfter <= 11_000);
});

test('a WebSocket that closes is reopened with back-off; one that never authenticates is given up after RELAY_WS_READY_MS', () => {
  const w = new World();
  const [a, b] = w.nodes as [Node, Node];
  a.udpBlocked = true;
  w.start();
  w.clock.advance(RELAY_UDP_FAIL_MS + 200);
  assert.ok(a.wsReady);
  // The relay (or the network) closes it: the pair loses its path, and a new socket follows after 1 s.
  w.cutWs(a, true);
  assert.equal(a.paths.path(b.nodeKey).kind, 'none');
  w.clock.advance(RELAY_WS_BACKOFF_MS[0]! - 50);
  assert.equal(count(a, 'ws-connect'), 1);
  w.clock.advance(200);
  assert.equal(count(a, 'ws-connect'), 2);
  assert.ok(a.wsReady);
  assert.equal(a.paths.transport(b.nodeKey), 'ws');
  assert.equal(count(a, 'ws-claim'), 2, 'claimed again on the new socket');

  // Now TCP is refused too: 1 s (reset by the success), 2 s, 4 s, 8 s … between tries.
  a.refuseWs = true;
  w.cutWs(a, true);
  const times: number[] = [];
  const seen = () => count(a, 'ws-connect');
  let last = seen();
  const t0 = w.clock.now();
  for (let i = 0; i < 400 && times.length < 5; i++) {
    w.clock.advance(100);
    if (seen() !== last) { last = seen(); times.push(w.clock.now() - t0); }
  }
  const gaps = times.map((t, i) => t - (i === 0 ? 0 : times[i - 1]!));
  assert.equal(gaps.length, 5);
  for (let i = 0; i < gaps.length; i++) {
    const want = RELAY_WS_BACKOFF_MS[i]! + (i === 0 ? 0 : LATENCY_MS);
    assert.ok(Math.abs(gaps[i]! - want) <= 100, `gap ${i}: ${gaps[i]} ms, want ~${want}`);
  }

  // A socket that opens but never gets ws-ok (a proxy that swallows frames) is closed after RELAY_WS_READY_MS.
  a.refuseWs = false;
  const w2 = new World();
  const [c] = w2.nodes as [Node, Node];
  c.udpBlocked = true;
  w2.start();
  // Swallow the relay's challenge: the session opens on the relay, but c never hears it.
  const real = w2.relay.handle.bind(w2.relay);
  w2.relay.handle = (e, now) => (e.type === 'ws-open' ? [] : real(e, now));
  w2.clock.advance(RELAY_UDP_FAIL_MS + 100);
  assert.equal(count(c, 'ws-connect'), 1);
  assert.equal(c.paths.client.webSocketState, 'authenticating');
  w2.clock.advance(RELAY_WS_READY_MS);
  assert.ok(count(c, 'ws-close') >= 1, 'given up');
  w2.clock.advance(RELAY_WS_BACKOFF_MS[0]! + 100);
  assert.equal(count(c, 'ws-connect'), 2, 'and tried again after the back-off');
});

test('UDP that worked and stops: bound pair moves to the WebSocket; no ws URL: only the warning', () => {
  const w = new World();
  const [a, b] = w.nodes as [Node, Node];
  w.start();
  w.clock.advance(200);
  assert.equal(a.paths.transport(b.nodeKey), 'udp');
  a.udpBlocked = true;
  // The next refresh (≤ 10 s) goes unanswered, is seen so at the one after (10 s later) and retried
  // 0.9 s after that: 3 unanswered, UDP counts as failed (~21 s); the WebSocket takes over.
  w.clock.advance(15_000);
  assert.equal(a.paths.transport(b.nodeKey), 'udp');
  w.clock.advance(8000);
  assert.equal(a.paths.transport(b.nodeKey), 'ws');
  w.wireguardSend(a, b);
  w.clock.advance(50);
  assert.equal(b.wireguardIn, 1, 'a → b over the WebSocket at once');
  // And the other way at once too: a's WebSocket claim is newer than its last UDP bind, so the
  // relay stops sending to a's dead UDP address.
  w.wireguardSend(b, a);
  w.clock.advance(50);
  assert.equal(a.wsDataIn, 1, 'b → a over the WebSocket at once');

  // A relay without a WebSocket URL: UDP failing is reported, nothing else is tried.
  const client = new RelayClient({ nodePublicKey: a.keyBytes, nodePrivateKey: generateKeyPair().privateKey, random: seededBytes(3) });
  const clock = new ManualClock();
  const out: RelayClientAction[] = [];
  out.push(...client.handle({ type: 'relays', relays: [{ key: encodeKey(generateKeyPair().publicKey), endpoint: { address: RELAY_IP, port: RELAY_PORT } }] }, clock.now()));
  out.push(...client.handle({ type: 'need', nodeKey: b.nodeKey, needed: true }, clock.now()));
  for (let i = 0; i < 100; i++) {
    clock.advance(100);
    out.push(...client.handle({ type: 'tick' }, clock.now()));
  }
  assert.equal(out.filter((x) => x.type === 'udp-unanswered').length, 1);
  assert.equal(out.filter((x) => x.type === 'ws-connect').length, 0);
  assert.equal(client.transport, 'udp');
});
