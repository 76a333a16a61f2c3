/**
 * The agent's path choice between disco and the relay, on the sans-I/O cores
 * and a manual clock: two agents' DiscoCore + RelayPaths and a real RelayCore
 * wired through a tiny network whose direct link can be cut. Relay first,
 * direct when it becomes possible, relay again when direct dies.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { formatEndpoint } from '../../../shared/net/addr.js';
import type { UdpEndpoint } from '../../../shared/udp.js';
import { isDiscoPacket } from '../../../shared/wire/disco.js';
import { isRelayPacket } from '../../../shared/wire/relay.js';
import { DiscoCore } from '../../../agent/disco/core.js';
import type { DiscoAction } from '../../../agent/disco/events.js';
import { PATH_DEAD_MS } from '../../../agent/disco/peer-path.js';
import { choosePath } from '../../../agent/relay/core.js';
import { RelayPaths, type RelayPathsAction } from '../../../agent/relay/paths.js';
import { CONTROL, RelayCore, type RelayAction } from '../../../relay/core.js';
import { ManualClock, seededBytes } from '../../helpers/manual-clock.js';

const LATENCY_MS = 10;
const RELAY_IP = '198.18.0.1';
const RELAY_PORT = 3480;

interface Node {
  name: string;
  addr: UdpEndpoint;
  nodeKey: string;
  disco: DiscoCore;
  discoKey: string;
  paths: RelayPaths;
  timer?: ReturnType<ManualClock['setTimeout']>;
  changes: { from: string; to: string; at: number }[];
  wireguardIn: number;
}

class World {
  readonly clock = new ManualClock();
  readonly random = seededBytes(4);
  readonly nodes: Node[] = [];
  directBlocked = true;
  private readonly relayKeys = generateKeyPair();
  readonly relay: RelayCore;
  private nextPort = 40000;

  constructor() {
    const members = new Set<string>();
    this.relay = new RelayCore({ privateKey: this.relayKeys.privateKey, publicKey: this.relayKeys.publicKey, isMember: (k) => members.has(k), random: this.random });
    for (const [name, ip] of [['a', '198.18.1.1'], ['b', '198.18.1.2']] as const) {
      const node = generateKeyPair();
      const disco = generateKeyPair();
      const n: Node = {
        name, addr: { address: ip, port: 41641 }, nodeKey: encodeKey(node.publicKey), discoKey: encodeKey(disco.publicKey), changes: [], wireguardIn: 0,
        disco: new DiscoCore({ nodeKey: encodeKey(node.publicKey), discoPrivateKey: disco.privateKey, discoPublicKey: disco.publicKey, random: this.random }),
        paths: new RelayPaths({ nodePublicKey: node.publicKey, nodePrivateKey: node.privateKey, random: this.random }, 128),
      };
      members.add(n.nodeKey);
      this.nodes.push(n);
    }
  }

  start(): void {
    for (const n of this.nodes) {
      const other = this.nodes.find((x) => x !== n)!;
      this.relayFeed(n, { type: 'relays', relays: [{ key: encodeKey(this.relayKeys.publicKey), endpoint: { address: RELAY_IP, port: RELAY_PORT } }] });
      this.relayFeed(n, { type: 'peers', peers: [{ nodeKey: other.nodeKey, online: true, discoKey: 'k' }] });
      this.discoFeed(n, { type: 'peers-updated', peers: [{ nodeKey: other.nodeKey, discoKey: other.discoKey, name: other.name, endpoints: [formatEndpoint(other.addr)], natType: 'endpoint-dependent', online: true }] });
    }
  }

  discoFeed(n: Node, e: Parameters<DiscoCore['handle']>[0]): void {
    for (const a of n.disco.handle(e, this.clock.now()) as DiscoAction[]) {
      if (a.type === 'send-udp') this.send(n.addr, a.to, a.bytes);
      else if (a.type === 'path-changed') this.relayFeed(n, { type: 'disco-path', nodeKey: a.nodeKey, kind: a.to, endpoint: a.endpoint });
    }
    this.arm(n);
  }

  relayFeed(n: Node, e: Parameters<RelayPaths['handle']>[0]): void {
    for (const a of n.paths.handle(e, this.clock.now()) as RelayPathsAction[]) {
      if (a.type === 'send-udp') this.send(n.addr, a.to, a.bytes);
      else if (a.type === 'path') n.changes.push({ from: a.from, to: a.to, at: this.clock.now() });
    }
    this.arm(n);
  }

  private arm(n: Node): void {
    if (n.timer !== undefined) this.clock.clearTimeout(n.timer);
    const at = Math.min(n.disco.nextWakeup() ?? Infinity, n.paths.nextWakeup() ?? Infinity);
    n.timer = at === Infinity ? undefined : this.clock.setTimeout(() => {
      n.timer = undefined;
      this.discoFeed(n, { type: 'tick' });
      this.relayFeed(n, { type: 'tick' });
    }, Math.max(0, at - this.clock.now()));
  }

  /** WireGuard on `n` sends a packet to wherever the engine was told the peer is. */
  wireguardSend(n: Node, to: Node): void {
    const ep = n.paths.path(to.nodeKey).endpoint!;
    const [address, port] = [ep.slice(0, ep.lastIndexOf(':')), Number(ep.slice(ep.lastIndexOf(':') + 1))];
    const pkt = new Uint8Array(64);
    pkt[0] = 4;
    this.send(n.addr, { address, port }, pkt);
  }

  send(from: UdpEndpoint, to: UdpEndpoint, bytes: Uint8Array): void {
    this.clock.setTimeout(() => {
      if (to.address === RELAY_IP) return this.relayActions(this.relay.handle({ type: 'udp', port: to.port === RELAY_PORT ? CONTROL : to.port, from, bytes }, this.clock.now()));
      const n = this.nodes.find((x) => formatEndpoint(x.addr) === formatEndpoint(to));
      if (!n) return;
      if (from.address !== RELAY_IP && this.directBlocked) return; // symmetric NATs: no direct packet gets through
      if (isRelayPacket(bytes)) this.relayFeed(n, { type: 'udp', from, bytes });
      else if (isDiscoPacket(bytes)) this.discoFeed(n, { type: 'udp', from, bytes });
      else n.wireguardIn++;
    }, LATENCY_MS);
  }

  private relayActions(actions: RelayAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') this.send({ address: RELAY_IP, port: a.port === CONTROL ? RELAY_PORT : a.port }, a.to, a.bytes);
      else if (a.type === 'open-ports') this.relayActions(this.relay.handle({ type: 'ports-opened', pair: a.pair, ports: [this.nextPort++, this.nextPort++] }, this.clock.now()));
    }
  }
}

test('choosePath: confirmed lan/direct first, the bound relay otherwise, none without either', () => {
  const rows: [Parameters<typeof choosePath>[0], string | undefined, ReturnType<typeof choosePath>][] = [
    [{ kind: 'direct', endpoint: '1.2.3.4:5' }, '9.9.9.9:1', { kind: 'direct', endpoint: '1.2.3.4:5' }],
    [{ kind: 'lan', endpoint: '10.0.0.2:5' }, undefined, { kind: 'lan', endpoint: '10.0.0.2:5' }],
    [{ kind: 'none' }, '9.9.9.9:1', { kind: 'relay', endpoint: '9.9.9.9:1' }],
    [{ kind: 'none' }, undefined, { kind: 'none' }],
  ];
  for (const [disco, relay, want] of rows) assert.deepEqual(choosePath(disco, relay), want);
});

test('relay at once, direct when it becomes possible, relay again when direct dies', () => {
  const w = new World();
  const [a, b] = w.nodes as [Node, Node];
  const t0 = w.clock.now();
  w.start();
  // Symmetric NATs on both sides: punching fails, the relay carries the pair within a few RTTs.
  w.clock.advance(200);
  assert.equal(a.paths.path(b.nodeKey).kind, 'relay');
  assert.equal(b.paths.path(a.nodeKey).kind, 'relay');
  assert.ok(a.changes[0]!.at - t0 <= 100, `relay path after ${a.changes[0]!.at - t0} ms (alloc + bind: 2 RTT)`);
  const relayEp = a.paths.path(b.nodeKey).endpoint!;
  assert.ok(relayEp.startsWith(`${RELAY_IP}:`));
  w.wireguardSend(a, b);
  w.wireguardSend(b, a);
  w.clock.advance(50);
  assert.equal(b.wireguardIn, 1, "a's WireGuard packet reached b through the relay");
  assert.equal(a.wireguardIn, 1);
  assert.equal(w.relay.counters.forwardedPackets, 2);
  // Still relayed a while later: bindings are refreshed, disco keeps trying in the background.
  w.clock.advance(30_000);
  assert.equal(a.paths.path(b.nodeKey).kind, 'relay');
  assert.ok(a.disco.counters.pingsSent > 5, 'direct attempts continued in the background');
  // A direct path becomes possible: the next punch round confirms it and the path moves.
  w.directBlocked = false;
  const opened = w.clock.now();
  w.clock.advance(35_000);
  assert.equal(a.paths.path(b.nodeKey).kind, 'direct');
  assert.equal(b.paths.path(a.nodeKey).kind, 'direct');
  const up = a.changes.find((c) => c.from === 'relay' && c.to === 'direct')!;
  assert.ok(up && up.at >= opened);
  // The direct path dies: back to the relay as soon as disco declares it dead, on the same port.
  w.directBlocked = true;
  const cut = w.clock.now();
  w.clock.advance(PATH_DEAD_MS + 2500);
  assert.equal(a.paths.path(b.nodeKey).kind, 'relay');
  assert.equal(a.paths.path(b.nodeKey).endpoint, relayEp, 'the allocation was kept warm');
  const down = [...a.changes].reverse().find((c) => c.from === "direct" && c.to === "relay")!;
  assert.ok(down.at - cut <= PATH_DEAD_MS + 2100, `fell back after ${down.at - cut} ms`);
  w.wireguardSend(a, b);
  w.clock.advance(50);
  assert.equal(b.wireguardIn, 2, 'and the relay still forwards at once');
  assert.deepEqual(a.changes.map((c) => c.to), ['relay', 'direct', 'relay']);
});

test('a peer offline or never connected gets no relay allocation; a relay that never answers is reported', () => {
  const w = new World();
  const [a, b] = w.nodes as [Node, Node];
  w.relayFeed(a, { type: 'relays', relays: [{ key: encodeKey(generateKeyPair().publicKey), endpoint: { address: '198.18.0.99', port: 3480 } }] });
  w.relayFeed(a, { type: 'peers', peers: [{ nodeKey: b.nodeKey, online: false, discoKey: 'k' }] });
  w.clock.advance(1000);
  assert.equal(a.paths.client.counters.allocsSent, 0);
  const actions: RelayPathsAction[] = [];
  actions.push(...a.paths.handle({ type: 'peers', peers: [{ nodeKey: b.nodeKey, online: true, discoKey: 'k' }] }, w.clock.now()));
  for (let i = 0; i < 10; i++) {
    w.clock.advance(1000);
    actions.push(...a.paths.handle({ type: 'tick' }, w.clock.now()));
  }
  assert.ok(a.paths.client.counters.allocsSent >= 5);
  assert.ok(actions.some((x) => x.type === 'udp-unanswered'));
  assert.equal(a.paths.path(b.nodeKey).kind, 'none');
});
