import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { encodeWsData, openRelay, relaySharedKey, sealRelay, type RelayMessage } from '../../shared/wire/relay.js';
import { CONTROL, RelayCore, RELAY_BIND_TTL_MS, RELAY_PAIR_IDLE_MS, RELAY_SWEEP_MS, type RelayAction } from '../../relay/core.js';
import { seededBytes } from '../helpers/manual-clock.js';

const T0 = 1_700_000_000_000;
const relayKeys = generateKeyPair();

function node(address: string) {
  const kp = generateKeyPair();
  const key = relaySharedKey(kp.privateKey, relayKeys.publicKey)!;
  const rnd = seededBytes(address.length);
  return {
    kp, nodeKey: encodeKey(kp.publicKey), addr: { address, port: 41641 } as UdpEndpoint,
    seal: (m: RelayMessage) => sealRelay(m, kp.publicKey, key, rnd(24)),
    open: (b: Uint8Array) => openRelay(b, key),
  };
}

function setup(opts: { packetsPerSec?: number; maxPairs?: number } = {}) {
  const a = node('198.18.1.10');
  const b = node('198.18.1.11');
  const members = new Set([a.nodeKey, b.nodeKey]);
  const core = new RelayCore({ privateKey: relayKeys.privateKey, publicKey: relayKeys.publicKey, isMember: (k) => members.has(k), random: seededBytes(3), ...opts });
  let nextPort = 50000;
  /** Feeds an event; opens ports at once when asked (the shell's job). */
  const feed = (e: Parameters<RelayCore['handle']>[0], now = T0): RelayAction[] => {
    const out: RelayAction[] = [];
    for (const x of core.handle(e, now)) {
      if (x.type === 'open-ports') out.push(...core.handle({ type: 'ports-opened', pair: x.pair, ports: [nextPort++, nextPort++] }, now));
      else out.push(x);
    }
    return out;
  };
  const txid = new Uint8Array(12).fill(1);
  const alloc = (who: typeof a, peer: typeof a, now = T0): number => {
    const out = feed({ type: 'udp', port: CONTROL, from: who.addr, bytes: who.seal({ type: 'alloc', txid, peer: peer.kp.publicKey }) }, now);
    assert.equal(out.length, 1);
    const x = out[0]!;
    assert.ok(x.type === 'send' && x.port === CONTROL);
    const m = who.open(x.bytes);
    assert.ok(m?.type === 'alloc-ok', `alloc answered ${m?.type}`);
    return m.port;
  };
  const bind = (who: typeof a, port: number, counter: number, from = who.addr, now = T0) =>
    feed({ type: 'udp', port, from, bytes: who.seal({ type: 'bind', txid, port, counter }) }, now);
  return { a, b, members, core, feed, alloc, bind };
}

const wg = (n = 100) => { const p = new Uint8Array(n); p[0] = 4; return p; };

test('alloc → bind on both sides → WireGuard packets are forwarded between the bound addresses only', () => {
  const { a, b, core, alloc, bind, feed } = setup();
  const pa = alloc(a, b);
  const pb = alloc(b, a);
  assert.notEqual(pa, pb);
  assert.equal(alloc(a, b), pa, 'a second alloc for the same pair gets the same port');
  // Before b binds, a's packets have nowhere to go.
  const ok = bind(a, pa, 1);
  assert.equal(ok.length, 1);
  assert.equal(a.open((ok[0] as { bytes: Uint8Array }).bytes)?.type, 'bind-ok');
  assert.equal((a.open((ok[0] as { bytes: Uint8Array }).bytes) as { observedPort?: number }).observedPort, a.addr.port, 'it says which port the bind came from');
  assert.equal(ok[0]!.type === 'send' && ok[0]!.port, pa, 'bind-ok comes from the allocated port');
  assert.equal(core.forward(pa, a.addr, wg(), T0), undefined);
  assert.equal(core.counters.dropPeerNotBound, 1);
  bind(b, pb, 1);
  assert.deepEqual(core.forward(pa, a.addr, wg(), T0), { type: 'send', port: pb, to: b.addr, bytes: wg() });
  assert.deepEqual(core.forward(pb, b.addr, wg(), T0), { type: 'send', port: pa, to: a.addr, bytes: wg() });
  // Through handle() too (what the shell does for non-control packets).
  assert.deepEqual(feed({ type: 'udp', port: pa, from: a.addr, bytes: wg(64) }), [{ type: 'send', port: pb, to: b.addr, bytes: wg(64) }]);
  assert.equal(core.counters.forwardedPackets, 3);
  // Never from anyone else, never anything but WireGuard.
  assert.equal(core.forward(pa, { address: '198.18.9.9', port: 41641 }, wg(), T0), undefined);
  assert.equal(core.forward(pa, b.addr, wg(), T0), undefined, "b can't send on a's port");
  assert.equal(core.forward(pa, a.addr, new Uint8Array(100).fill(9), T0), undefined);
  assert.equal(core.forward(12345, a.addr, wg(), T0), undefined);
  assert.equal(core.counters.dropUnknownSource, 3);
  assert.equal(core.counters.dropMalformed, 1);
});

test('a bind moves the address only forward in counter; another node cannot bind my port', () => {
  const { a, b, core, alloc, bind } = setup();
  const pa = alloc(a, b);
  const pb = alloc(b, a);
  bind(a, pa, 10);
  bind(b, pb, 10);
  const elsewhere = { address: '198.18.7.7', port: 999 };
  const stale = bind(a, pa, 10, elsewhere);
  assert.deepEqual(a.open((stale[0] as { bytes: Uint8Array }).bytes), { type: 'error', txid: new Uint8Array(12).fill(1), code: 5 });
  assert.deepEqual(core.forward(pb, b.addr, wg(), T0)?.type === 'send' && core.forward(pb, b.addr, wg(), T0), { type: 'send', port: pa, to: a.addr, bytes: wg() });
  const wrong = bind(b, pa, 99);
  assert.equal(b.open((wrong[0] as { bytes: Uint8Array }).bytes)?.type, 'error');
  // A newer bind from a new address (a's NAT mapping changed) moves it.
  bind(a, pa, 11, elsewhere);
  assert.deepEqual(core.forward(pb, b.addr, wg(), T0), { type: 'send', port: pa, to: elsewhere, bytes: wg() });
});

test('non-members are never answered; a peer that is not a member is refused', () => {
  const { a, b, members, feed, core } = setup();
  const stranger = node('198.18.3.3');
  const txid = new Uint8Array(12);
  assert.deepEqual(feed({ type: 'udp', port: CONTROL, from: stranger.addr, bytes: stranger.seal({ type: 'alloc', txid, peer: a.kp.publicKey }) }), []);
  assert.equal(core.counters.dropNotMember, 1);
  const out = feed({ type: 'udp', port: CONTROL, from: a.addr, bytes: a.seal({ type: 'alloc', txid, peer: stranger.kp.publicKey }) });
  assert.equal(a.open((out[0] as { bytes: Uint8Array }).bytes)?.type, 'error');
  assert.deepEqual(feed({ type: 'udp', port: CONTROL, from: a.addr, bytes: new Uint8Array(90) }), []);
  assert.equal(core.counters.dropMalformed, 1);
  // A member removed from the mesh loses its pairs at the next sweep.
  const pa = setupAlloc(feed, a, b);
  members.delete(b.nodeKey);
  const swept = feed({ type: 'tick' }, T0 + RELAY_SWEEP_MS);
  assert.ok(swept.some((x) => x.type === 'close-port' && x.port === pa));
  assert.equal(core.counters.pairsOpen, 0);
});

function setupAlloc(feed: ReturnType<typeof setup>['feed'], a: ReturnType<typeof node>, b: ReturnType<typeof node>): number {
  const out = feed({ type: 'udp', port: CONTROL, from: a.addr, bytes: a.seal({ type: 'alloc', txid: new Uint8Array(12), peer: b.kp.publicKey }) });
  const m = a.open((out[0] as { bytes: Uint8Array }).bytes);
  assert.ok(m?.type === 'alloc-ok');
  return m.port;
}

test('per-node packet budget: a flood is cut at the rate, then refills', () => {
  const { a, b, core, alloc, bind } = setup({ packetsPerSec: 100 });
  const pa = alloc(a, b);
  const pb = alloc(b, a);
  bind(a, pa, 1);
  bind(b, pb, 1);
  let sent = 0;
  for (let i = 0; i < 300; i++) if (core.forward(pa, a.addr, wg(), T0)) sent++;
  assert.equal(sent, 100);
  assert.equal(core.counters.dropRateLimited, 200);
  assert.ok(core.forward(pa, a.addr, wg(), T0 + 1000), 'refilled after a second');
});

test('bindings expire without refresh; idle pairs give their ports back; capacity is bounded', () => {
  const { a, b, core, alloc, bind, feed } = setup({ maxPairs: 1 });
  const pa = alloc(a, b);
  const pb = alloc(b, a);
  bind(a, pa, 1);
  bind(b, pb, 1);
  const c = node('198.18.4.4');
  const out = feed({ type: 'udp', port: CONTROL, from: a.addr, bytes: a.seal({ type: 'alloc', txid: new Uint8Array(12), peer: b.kp.publicKey }) });
  assert.equal(a.open((out[0] as { bytes: Uint8Array }).bytes)?.type, 'alloc-ok');
  void c;
  assert.equal(core.forward(pa, a.addr, wg(), T0 + RELAY_BIND_TTL_MS + 1), undefined, 'b is no longer bound');
  feed({ type: 'tick' }, T0 + RELAY_BIND_TTL_MS + RELAY_SWEEP_MS);
  const closed = feed({ type: 'tick' }, T0 + RELAY_BIND_TTL_MS + RELAY_PAIR_IDLE_MS + 2 * RELAY_SWEEP_MS);
  assert.deepEqual(closed.filter((x) => x.type === 'close-port').map((x) => (x as { port: number }).port).sort(), [pa, pb].sort());
});

test('WebSocket: challenge, sealed hello, then frames to a UDP-bound peer and back', () => {
  const { a, b, core, alloc, bind, feed } = setup();
  const pb = alloc(b, a);
  bind(b, pb, 1);
  const hello = feed({ type: 'ws-open', session: 7 });
  assert.equal(hello.length, 1);
  const challenge = (hello[0] as { bytes: Uint8Array }).bytes;
  // Garbage instead of a hello closes the session.
  assert.equal(feed({ type: 'ws-open', session: 8 }).length, 1);
  assert.deepEqual(feed({ type: 'ws-message', session: 8, bytes: new Uint8Array(80) }), [{ type: 'ws-close', session: 8, reason: 'authentication failed' }]);
  const ok = feed({ type: 'ws-message', session: 7, bytes: a.seal({ type: 'ws-hello', challenge }) });
  assert.equal(a.open((ok[0] as { bytes: Uint8Array }).bytes)?.type, 'ws-ok');
  const fwd = feed({ type: 'ws-message', session: 7, bytes: encodeWsData(b.kp.publicKey, wg()) });
  assert.deepEqual(fwd, [{ type: 'send', port: pb, to: b.addr, bytes: wg() }]);
  const back = core.forward(pb, b.addr, wg(40), T0);
  assert.deepEqual(back, { type: 'ws-send', session: 7, bytes: encodeWsData(b.kp.publicKey, wg(40)) });
  feed({ type: 'ws-close', session: 7 });
  assert.equal(core.forward(pb, b.addr, wg(), T0), undefined);
});
