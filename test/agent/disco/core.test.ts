import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatEndpoint } from '../../../shared/net/addr.js';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { discoPacketKind, sealDisco, discoSharedKey } from '../../../shared/wire/disco.js';
import { PATH_DEAD_MS } from '../../../agent/disco/peer-path.js';
import { Net, LATENCY_MS } from './harness.js';

const A = { address: '198.18.0.1', port: 41641 };
const B = { address: '198.18.0.2', port: 41641 };

test('peer appears → authenticated pong → direct path on both sides within a few RTTs', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.introduce();
  net.clock.advance(4 * LATENCY_MS);
  assert.equal(net.status(a, b).path, 'direct');
  assert.equal(net.status(b, a).path, 'direct');
  assert.equal(net.status(a, b).endpoint, formatEndpoint(B));
  assert.equal(net.status(a, b).rttMs, 2 * LATENCY_MS);
  assert.deepEqual(a.chosen, [{ endpoint: formatEndpoint(B), path: 'direct' }]);
  const initiators = [a, b].map((h) => (h.actions.find((x) => x.type === 'set-peer-endpoint') as { initiator: boolean }).initiator);
  assert.deepEqual(initiators.sort(), [false, true], 'exactly one side initiates WireGuard (anti-stall)');
});

test('behind a port-restricted NAT: the first pings are filtered, crossing pings open the way', () => {
  const net = new Net();
  const a = net.add('a', A, { natType: 'endpoint-independent' });
  const b = net.add('b', B, { natType: 'endpoint-independent' });
  // Each NAT admits a source only after its host has sent to it.
  const opened = new Map<string, Set<string>>([['a', new Set()], ['b', new Set()]]);
  for (const h of [a, b]) {
    const orig = h.core.handle.bind(h.core);
    h.core.handle = (e, now) => {
      const out = orig(e, now);
      for (const x of out) if (x.type === 'send-udp') opened.get(h.name)!.add(formatEndpoint(x.to));
      return out;
    };
    h.accept = (from) => opened.get(h.name)!.has(formatEndpoint(from));
  }
  // b learns about a a little later than a learns about b (as with real joins).
  net.feed(a, { type: 'peers-updated', peers: [net.input(b)] });
  net.clock.advance(100);
  net.feed(b, { type: 'peers-updated', peers: [net.input(a)] });
  net.clock.advance(1000);
  assert.ok(net.dropped > 0, 'some pings were filtered');
  assert.equal(net.status(a, b).path, 'direct');
  assert.equal(net.status(b, a).path, 'direct');
});

test('a LAN candidate wins over a direct one, and an mDNS-learned address counts as LAN', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', { address: '10.0.0.2', port: 41641 }, { endpoints: ['198.18.0.2:41641', '10.0.0.2:41641'] });
  net.introduce();
  net.clock.advance(200);
  assert.equal(net.status(a, b).path, 'lan');
  assert.equal(net.status(a, b).endpoint, '10.0.0.2:41641');
});

test('pongs that were not asked for are ignored: wrong txid, wrong source, unknown disco key', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.feed(a, { type: 'peers-updated', peers: [net.input(b)] }); // b never learns about a: a's pings go unanswered
  const k = discoSharedKey(generateKeyPair().privateKey, generateKeyPair().publicKey)!;
  const stranger = generateKeyPair();
  // A pong from an unknown disco key.
  net.feed(a, { type: 'udp', from: B, bytes: sealDisco({ type: 'pong', txid: new Uint8Array(12), src: A }, stranger.publicKey, k, new Uint8Array(24)) });
  assert.equal(a.core.counters.dropUnknownSender, 1);
  // Garbage with the magic.
  net.feed(a, { type: 'udp', from: B, bytes: Uint8Array.from([0x4b, 0x4e, 0x49, 0x54, 0xf0, 0x9f, ...new Array(100).fill(1)]) });
  assert.equal(a.core.counters.dropUnknownSender + a.core.counters.dropMalformed, 2);
  net.clock.advance(3000);
  assert.equal(net.status(a, b).path, 'none');
  assert.match(net.status(a, b).why ?? '', /no candidate answered/);
});

test('a pong for a real ping but from another address is not accepted', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.introduce();
  // Deliver b's pongs as if they came from elsewhere: rewrite the source.
  const orig = a.core.handle.bind(a.core);
  a.core.handle = (e, now) => orig(e.type === 'udp' ? { ...e, from: { address: '198.18.0.99', port: 1 } } : e, now);
  net.clock.advance(500);
  assert.ok(a.core.counters.dropUnexpectedPong > 0);
  assert.notEqual(net.status(a, b).endpoint, '198.18.0.99:1');
});

test('silence kills the path after about 6.5 s; the core re-punches and asks the peer to call back', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.introduce();
  net.clock.advance(100);
  assert.equal(net.status(a, b).path, 'direct');
  b.accept = () => false; // b goes dark
  a.accept = () => false;
  const cmmBefore = a.actions.filter((x) => x.type === 'send-call-me-maybe').length;
  net.clock.advance(PATH_DEAD_MS - 500);
  assert.equal(net.status(a, b).path, 'direct', 'still alive before the deadline');
  net.clock.advance(1000);
  assert.equal(net.status(a, b).path, 'none');
  assert.ok(a.actions.some((x) => x.type === 'path-changed' && x.to === 'none'));
  assert.ok(a.actions.filter((x) => x.type === 'send-call-me-maybe').length > cmmBefore);
  b.accept = a.accept = () => true;
  net.clock.advance(6000);
  assert.equal(net.status(a, b).path, 'direct', 'comes back when the peer answers again');
});

test('roaming: the peer moves; its endpoint is replaced only after an authenticated pong from the new address', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.introduce();
  net.clock.advance(1000);
  const moved = { address: '198.18.5.5', port: 41641 };
  b.addr = moved;
  b.endpoints = [formatEndpoint(moved)];
  // An unauthenticated hint alone (the coordinator's new endpoint list) changes nothing yet.
  net.feed(b, { type: 'network-changed' });
  net.clock.advance(LATENCY_MS * 6);
  assert.equal(net.status(a, b).endpoint, formatEndpoint(moved));
  assert.equal(a.chosen.at(-1)!.endpoint, formatEndpoint(moved));
  // And a forged pong-less claim of a third address never becomes the endpoint.
  net.feed(a, { type: 'call-me-maybe', fromNodeKey: b.nodeKey, endpoints: ['198.18.6.6:1'] });
  net.clock.advance(1000);
  assert.notEqual(net.status(a, b).endpoint, '198.18.6.6:1');
});

test('rate limits: a flood of valid pings from one source gets at most 20 pongs per second', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  net.introduce();
  net.clock.advance(100);
  const bDisco = generateKeyPair();
  b.discoKey = encodeKey(bDisco.publicKey);
  net.feed(a, { type: 'peers-updated', peers: [net.input(b)] });
  const pongsBefore = a.core.counters.pongsSent;
  // b's node key signs pings with its new disco key; build them directly.
  const shared = discoSharedKey(bDisco.privateKey, Buffer.from(a.discoKey, 'base64'))!;
  for (let i = 0; i < 200; i++) {
    const ping = sealDisco({ type: 'ping', txid: Uint8Array.from([i, ...new Array(11).fill(0)]), nodeKey: Buffer.from(b.nodeKey, 'base64') }, bDisco.publicKey, shared, Uint8Array.from({ length: 24 }, () => i));
    net.feed(a, { type: 'udp', from: B, bytes: ping });
  }
  assert.ok(a.core.counters.pongsSent - pongsBefore <= 20, `${a.core.counters.pongsSent - pongsBefore} pongs`);
  assert.ok(a.core.counters.dropRateLimited > 0);
});

test('a ping carrying another node key than the one bound to the disco key is dropped', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  const bDisco = generateKeyPair();
  b.discoKey = encodeKey(bDisco.publicKey);
  net.feed(a, { type: 'peers-updated', peers: [net.input(b)] });
  const shared = discoSharedKey(bDisco.privateKey, Buffer.from(a.discoKey, 'base64'))!;
  const ping = sealDisco({ type: 'ping', txid: new Uint8Array(12), nodeKey: generateKeyPair().publicKey }, bDisco.publicKey, shared, new Uint8Array(24));
  net.feed(a, { type: 'udp', from: B, bytes: ping });
  assert.equal(a.core.counters.dropBadNodeKey, 1);
  assert.equal(a.core.counters.pongsSent, 0);
});

test('big meshes punch on demand: nothing until wanted, then a path; the peer answers and punches back', () => {
  const net = new Net();
  const a = net.add('a', A, { eagerLimit: 1 });
  const b = net.add('b', B, { eagerLimit: 1 });
  const c = net.add('c', { address: '198.18.0.3', port: 41641 }, { eagerLimit: 1 });
  net.introduce();
  net.clock.advance(10_000);
  assert.equal(a.core.counters.pingsSent + b.core.counters.pingsSent + c.core.counters.pingsSent, 0, 'no probing of idle peers');
  assert.match(net.status(a, b).why ?? '', /on demand/);
  net.feed(a, { type: 'want', nodeKey: b.nodeKey });
  net.clock.advance(200);
  assert.equal(net.status(a, b).path, 'direct');
  assert.equal(net.status(b, a).path, 'direct', 'b answers and punches back because a reached out');
  assert.equal(net.status(a, c).path, 'none', 'c was never wanted');
  assert.equal(c.core.counters.pingsSent, 0);
});

test('a peer restarted while the coordinator is away is believed by its node-key binding, a forger is not', () => {
  const net = new Net();
  const a = net.add('a', A, { bind: true });
  const b1 = net.add('b', B, { bind: true });
  net.introduce();
  net.clock.advance(200);
  assert.equal(net.status(a, b1).path, 'direct');
  // b restarts: same node key, new disco key. Nobody tells a (the coordinator is down);
  // b knows a from its cached map.
  net.remove(b1);
  const b2 = net.add('b', B, { bind: true, node: b1.node });
  net.feed(b2, { type: 'peers-updated', peers: [net.input(a)] });
  net.clock.advance(1000);
  assert.equal(a.core.counters.discoKeysAdopted, 1);
  assert.equal(net.status(a, b2).path, 'direct');
  assert.equal(net.status(b2, a).path, 'direct');

  // A forger claims b's node key from another address, but can't make b's node-sealed key.
  const forger = net.add('forger', { address: '198.18.0.66', port: 41641 }, { bind: true, node: { publicKey: b1.node.publicKey, privateKey: generateKeyPair().privateKey } });
  const adoptedBefore = a.core.counters.discoKeysAdopted;
  const unknownBefore = a.core.counters.dropUnknownSender;
  net.feed(forger, { type: 'peers-updated', peers: [net.input(a)] });
  net.clock.advance(1000);
  assert.equal(a.core.counters.discoKeysAdopted, adoptedBefore);
  assert.ok(a.core.counters.dropUnknownSender > unknownBefore, 'the forger\'s pings were dropped');
  assert.equal(net.status(a, b2).endpoint, formatEndpoint(B), 'b is still where it was');
});

test('a replayed older disco-key announcement is refused: the peer keeps the newest key', () => {
  const net = new Net();
  const a = net.add('a', A, { bind: true });
  const b1 = net.add('b', B, { bind: true });
  net.introduce();
  net.clock.advance(200);
  const restart = () => {
    net.remove(net.hosts.find((h) => h.name === 'b')!);
    const b = net.add('b', B, { bind: true, node: b1.node });
    net.feed(b, { type: 'peers-updated', peers: [net.input(a)] });
    net.clock.advance(1000);
    return b;
  };
  const b2 = restart();
  const captured = b2.actions.find((x) => x.type === 'send-udp' && discoPacketKind(x.bytes) === 'node') as { bytes: Uint8Array } | undefined;
  assert.ok(captured, 'b2 announced its key');
  const b3 = restart();
  assert.equal(a.core.counters.discoKeysAdopted, 2);
  assert.equal(net.status(a, b3).path, 'direct');
  // An on-path attacker replays b2's announcement (from b's address, even).
  net.feed(a, { type: 'udp', from: B, bytes: captured!.bytes });
  assert.equal(a.core.counters.discoKeysAdopted, 2, 'the stale key is not adopted');
  assert.equal(a.core.counters.dropReplay, 1);
  net.clock.advance(3000);
  assert.equal(net.status(a, b3).path, 'direct', 'a still talks to b3');
});
