/**
 * Hard-NAT traversal: the pure planning (roles, prediction, probe ports,
 * budget, pacing, back-off) as tables, then two disco cores on a manual
 * timeline: the hard side's paced openers from extra sockets, the easy
 * side's paced probes, a meeting on one socket that becomes the path on both
 * sides after authenticated pongs, and the other sockets given back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import type { UdpEndpoint } from '../../../shared/udp.js';
import type { NatType } from '../../../shared/wire/control.js';
import { DiscoCore } from '../../../agent/disco/core.js';
import type { DiscoAction } from '../../../agent/disco/events.js';
import {
  BIRTHDAY_SOCKETS, birthdaySuccessProbability, HARD_NAT_BACKOFF_BASE_MS, HARD_NAT_BACKOFF_CAP_MS, HARD_NAT_HOLD_MS, HARD_NAT_MAX_PROBES_PER_ATTEMPT,
  HARD_NAT_PORT_MAX, HARD_NAT_PORT_MIN, HARD_NAT_PROBES, HARD_NAT_PROBES_PER_S, hardNatRole, newHardNatState, predictPorts, probePorts, startAttempt, takeSlice,
  type PortPrediction,
} from '../../../agent/disco/hard-nat.js';
import { seededBytes } from '../../helpers/manual-clock.js';

test('roles: only endpoint-dependent ↔ endpoint-independent pairs probe', () => {
  const table: [NatType, NatType, string | undefined][] = [
    ['endpoint-dependent', 'endpoint-independent', 'hard'],
    ['endpoint-independent', 'endpoint-dependent', 'easy'],
    ['endpoint-dependent', 'endpoint-dependent', undefined], // hard ↔ hard: the relay
    ['endpoint-independent', 'endpoint-independent', undefined], // plain punching works
    ['endpoint-dependent', 'none', undefined], // a public peer is reachable anyway
    ['endpoint-dependent', 'unknown', undefined],
    ['blocked', 'endpoint-dependent', undefined],
  ];
  for (const [self, peer, want] of table) assert.equal(hardNatRole(self, peer), want, `${self} ↔ ${peer}`);
});

test('prediction: two STUN mappings a small stride apart mean a sequential allocator', () => {
  const table: [string[], PortPrediction | undefined][] = [
    [['198.51.100.7:40000', '198.51.100.7:40001', '10.0.0.2:41641'], { kind: 'sequential', address: '198.51.100.7', last: 40001, stride: 1 }],
    [['198.51.100.7:40010', '198.51.100.7:40008'], { kind: 'sequential', address: '198.51.100.7', last: 40008, stride: -2 }],
    [['198.51.100.7:2345', '198.51.100.7:51234'], { kind: 'random', address: '198.51.100.7' }],
    [['198.51.100.7:2345'], { kind: 'random', address: '198.51.100.7' }], // one mapping: can't tell, assume the worst
    [['10.0.0.2:41641', '192.168.1.2:41641'], undefined], // nothing public to aim at
    [['[2001:db8::1]:5000', '198.51.100.7:40000', '198.51.100.7:40001'], { kind: 'sequential', address: '198.51.100.7', last: 40001, stride: 1 }],
    [['garbage', '198.51.100.7:40000', '198.51.100.7:40000'], { kind: 'random', address: '198.51.100.7' }],
  ];
  for (const [eps, want] of table) assert.deepEqual(predictPorts(eps), want, eps.join(' '));
});

test('probe ports: the predicted window first; random ports distinct; always in range and within budget', () => {
  const seq = probePorts({ kind: 'sequential', address: 'x', last: 40001, stride: 1 }, seededBytes(1));
  assert.equal(seq.length, HARD_NAT_PROBES);
  assert.deepEqual(seq.slice(0, 3), [40002, 40003, 40004], 'the next mappings come first');
  assert.ok(seq.includes(40001) && seq.includes(39980), 'a few before the last one seen too');
  const wrap = probePorts({ kind: 'sequential', address: 'x', last: HARD_NAT_PORT_MAX - 1, stride: 1 }, seededBytes(1));
  assert.deepEqual(wrap.slice(0, 3), [HARD_NAT_PORT_MAX, HARD_NAT_PORT_MIN, HARD_NAT_PORT_MIN + 1], 'wraps as the allocator does');
  const rnd = probePorts({ kind: 'random', address: 'x' }, seededBytes(2));
  assert.equal(rnd.length, HARD_NAT_PROBES);
  assert.equal(new Set(rnd).size, rnd.length, 'distinct');
  for (const p of [...seq, ...wrap, ...rnd]) assert.ok(p >= HARD_NAT_PORT_MIN && p <= HARD_NAT_PORT_MAX && Number.isInteger(p), `port ${p}`);
  assert.throws(() => probePorts({ kind: 'random', address: 'x' }, seededBytes(1), HARD_NAT_MAX_PROBES_PER_ATTEMPT + 1), RangeError);
});

test('budget and the maths: K + N ≤ 1,024 and P(meet) ≈ 98% per birthday attempt', () => {
  assert.ok(BIRTHDAY_SOCKETS + HARD_NAT_PROBES <= HARD_NAT_MAX_PROBES_PER_ATTEMPT);
  const p = birthdaySuccessProbability();
  assert.ok(p > 0.98 && p < 0.985, String(p));
  assert.ok(birthdaySuccessProbability(1, 1024) < 0.02, 'one socket and the whole budget in probes: ~1.6%');
});

test('attempts: sequential alternates prediction and birthday, random is always birthday; back-off doubles to its cap', () => {
  const s = newHardNatState();
  const seq: PortPrediction = { kind: 'sequential', address: '198.51.100.7', last: 40001, stride: 1 };
  const peer = { address: '203.0.113.5', port: 41641 };
  const modes: string[] = [];
  const starts: number[] = [];
  let now = 0;
  for (let i = 0; i < 8; i++) {
    const a = startAttempt(s, { role: 'hard', prediction: seq, peerEndpoint: peer, canOpenSockets: true, random: seededBytes(i) }, now);
    modes.push(`${a.mode}:${a.sockets}`);
    starts.push(now);
    now = s.nextAttemptAt!;
  }
  assert.deepEqual(modes.slice(0, 4), ['predict:0', `birthday:${BIRTHDAY_SOCKETS}`, 'predict:0', `birthday:${BIRTHDAY_SOCKETS}`]);
  const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
  assert.deepEqual(gaps.slice(0, 3), [HARD_NAT_BACKOFF_BASE_MS, 2 * HARD_NAT_BACKOFF_BASE_MS, 4 * HARD_NAT_BACKOFF_BASE_MS]);
  assert.ok(gaps.every((g) => g <= HARD_NAT_BACKOFF_CAP_MS));
  const r = newHardNatState();
  const easy = startAttempt(r, { role: 'easy', prediction: { kind: 'random', address: '198.51.100.7' }, canOpenSockets: false, random: seededBytes(3) }, 0);
  assert.equal(easy.mode, 'birthday');
  assert.equal(easy.ports.length, HARD_NAT_PROBES);
  const noSockets = startAttempt(newHardNatState(), { role: 'hard', prediction: { kind: 'random', address: 'x' }, peerEndpoint: peer, canOpenSockets: false, random: seededBytes(3) }, 0);
  assert.equal(noSockets.sockets, 0, 'a shell without extra sockets opens none');
});

test('pacing: one slice of 10 per 100 ms, a late wakeup sends one slice, never a burst', () => {
  const s = newHardNatState();
  const a = startAttempt(s, { role: 'easy', prediction: { kind: 'random', address: 'x' }, canOpenSockets: false, random: seededBytes(4) }, 1000);
  const table: { at: number; want: number }[] = [
    { at: 1000, want: 10 }, { at: 1050, want: 0 }, { at: 1100, want: 10 }, { at: 1100, want: 0 }, { at: 5000, want: 10 }, { at: 5050, want: 0 }, { at: 5100, want: 10 },
  ];
  for (const { at, want } of table) {
    const n = takeSlice(a, at);
    assert.equal(n, want, `at ${at}`);
    a.sent += n;
  }
  let t = 5200;
  let windowMax = 0;
  const sentAt: number[] = [];
  while (a.sent < a.ports.length && t < 60_000) {
    const n = takeSlice(a, t);
    for (let i = 0; i < n; i++) sentAt.push(t);
    a.sent += n;
    t += 10;
  }
  assert.equal(a.sent, HARD_NAT_PROBES);
  for (const x of sentAt) windowMax = Math.max(windowMax, sentAt.filter((y) => y >= x && y < x + 1000).length);
  assert.ok(windowMax <= HARD_NAT_PROBES_PER_S, `at most ${HARD_NAT_PROBES_PER_S} in any second, saw ${windowMax}`);
});

// ---- two cores on a manual timeline ---------------------------------------------------------

const H_PUBLIC = '198.51.100.7';
const E_PUBLIC: UdpEndpoint = { address: '203.0.113.5', port: 41641 };

interface Side { core: DiscoCore; nodeKey: string; discoKey: string; out: DiscoAction[] }

function side(seed: number, hardNatSockets: boolean): Side {
  const node = generateKeyPair();
  const disco = generateKeyPair();
  const core = new DiscoCore({ nodeKey: encodeKey(node.publicKey), discoPrivateKey: disco.privateKey, discoPublicKey: disco.publicKey, random: seededBytes(seed), nodePrivateKey: node.privateKey, hardNatSockets });
  return { core, nodeKey: encodeKey(node.publicKey), discoKey: encodeKey(disco.publicKey), out: [] };
}

/** Runs a core's timers from `from` to `to` in 10 ms steps (bounded), collecting every action. */
function run(s: Side, from: number, to: number): void {
  for (let t = from; t <= to; t += 10) s.out.push(...s.core.handle({ type: 'tick' }, t));
}

function pair(hNat: NatType, eNat: NatType) {
  const h = side(21, true);
  const e = side(22, false);
  const hEndpoints = [`${H_PUBLIC}:2345`, `${H_PUBLIC}:51234`, '10.0.0.2:41641']; // two STUN servers, two random mappings
  const eEndpoints = [`${E_PUBLIC.address}:${E_PUBLIC.port}`, '10.1.0.2:41641'];
  h.core.handle({ type: 'self-endpoints', endpoints: hEndpoints, natType: hNat }, 0);
  e.core.handle({ type: 'self-endpoints', endpoints: eEndpoints, natType: eNat }, 0);
  h.out.push(...h.core.handle({ type: 'peers-updated', peers: [{ nodeKey: e.nodeKey, discoKey: e.discoKey, name: 'e', endpoints: eEndpoints, natType: eNat, online: true }] }, 0));
  e.out.push(...e.core.handle({ type: 'peers-updated', peers: [{ nodeKey: h.nodeKey, discoKey: h.discoKey, name: 'h', endpoints: hEndpoints, natType: hNat, online: true }] }, 0));
  return { h, e };
}

const sends = (s: Side) => s.out.filter((a): a is Extract<DiscoAction, { type: 'send-udp' }> => a.type === 'send-udp');

test('cores: after the first burst fails, the hard side opens 512 paced sockets and the easy side probes 512 ports', () => {
  const { h, e } = pair('endpoint-dependent', 'endpoint-independent');
  run(h, 0, 12_000);
  run(e, 0, 12_000);
  const openers = sends(h).filter((a) => a.via !== undefined);
  assert.equal(openers.length, BIRTHDAY_SOCKETS);
  assert.equal(new Set(openers.map((a) => a.via)).size, BIRTHDAY_SOCKETS, 'one opener per socket');
  assert.ok(openers.every((a) => a.to.address === E_PUBLIC.address && a.to.port === E_PUBLIC.port), 'openers go to the easy side\'s public endpoint');
  const probes = sends(e).filter((a) => a.to.address === H_PUBLIC && a.to.port !== 2345 && a.to.port !== 51234);
  assert.equal(probes.length, HARD_NAT_PROBES);
  assert.equal(new Set(probes.map((a) => a.to.port)).size, HARD_NAT_PROBES);
  assert.ok(openers.length + probes.length <= HARD_NAT_MAX_PROBES_PER_ATTEMPT);
  assert.equal(h.core.counters.hardNatAttempts, 1);
  assert.equal(e.core.counters.hardNatProbes, HARD_NAT_PROBES);
  // Nothing met (nobody delivered anything): the hold ends and every socket goes back, just before
  // the next attempt (20 s after the first began) opens new ones.
  run(h, 12_010, 4000 + HARD_NAT_HOLD_MS);
  const released = new Set(h.out.filter((a) => a.type === 'release-sockets').flatMap((a) => (a as { ids: number[] }).ids));
  for (const a of openers) assert.ok(released.has(a.via!), `socket ${a.via} released`);
  assert.equal(h.core.counters.hardNatAttempts, 2);
  assert.equal(h.core.counters.hardNatSockets, 10, 'only the second attempt\'s first slice is open');
});

test('cores: a probe meeting socket N becomes the path on both sides after authenticated pongs; the other sockets are released', () => {
  const { h, e } = pair('endpoint-dependent', 'endpoint-independent');
  run(h, 0, 6000);
  run(e, 0, 6000);
  // Say the hard NAT gave socket 7's mapping port X, and X is among the easy side's probes.
  const opener = sends(h).find((a) => a.via === 7)!;
  const probe = sends(e).find((a) => a.to.address === H_PUBLIC && a.to.port > 2345 && a.to.port !== 51234)!;
  const X: UdpEndpoint = { address: H_PUBLIC, port: probe.to.port };
  const t = 6000;
  // The easy side's probe arrives on socket 7: the hard side answers from socket 7 and pings back through it.
  let hOut = h.core.handle({ type: 'udp', from: E_PUBLIC, bytes: probe.bytes, via: 7 }, t);
  const pong = hOut.find((a) => a.type === 'send-udp' && a.via === 7 && a.to.port === E_PUBLIC.port) as Extract<DiscoAction, { type: 'send-udp' }>;
  assert.ok(pong, 'pong leaves from the socket the probe came in on');
  const pingBack = hOut.filter((a) => a.type === 'send-udp' && a.via === 7).at(-1) as Extract<DiscoAction, { type: 'send-udp' }>;
  // The pong reaches the easy side from X: its probe is answered, X is its path.
  let eOut = e.core.handle({ type: 'udp', from: X, bytes: pong.bytes }, t + 30);
  const eSet = eOut.find((a) => a.type === 'set-peer-endpoint') as Extract<DiscoAction, { type: 'set-peer-endpoint' }>;
  assert.equal(eSet.endpoint, `${X.address}:${X.port}`);
  assert.equal(eSet.via, undefined);
  // The hard side's ping through socket 7 gets the easy side's pong, which comes back on socket 7.
  eOut = e.core.handle({ type: 'udp', from: X, bytes: pingBack.bytes }, t + 30);
  const ePong = eOut.find((a) => a.type === 'send-udp' && a.to.port === X.port) as Extract<DiscoAction, { type: 'send-udp' }>;
  hOut = h.core.handle({ type: 'udp', from: E_PUBLIC, bytes: ePong.bytes, via: 7 }, t + 60);
  const hSet = hOut.find((a) => a.type === 'set-peer-endpoint') as Extract<DiscoAction, { type: 'set-peer-endpoint' }>;
  assert.deepEqual({ endpoint: hSet.endpoint, via: hSet.via, path: hSet.path }, { endpoint: `${E_PUBLIC.address}:${E_PUBLIC.port}`, via: 7, path: 'direct' });
  assert.equal(h.core.peerStatus(t + 60)[0]!.path, 'direct');
  // Found: no more openers. The path lives on (heartbeats through socket 7 answered) past the
  // hold: every socket but 7 goes back.
  h.out.length = 0;
  const echo = (from: number, to: number) => {
    for (let now = from; now <= to; now += 10) {
      for (const a of h.core.handle({ type: 'tick' }, now)) {
        h.out.push(a);
        if (a.type !== 'send-udp' || a.via !== 7) continue;
        for (const b of e.core.handle({ type: 'udp', from: X, bytes: a.bytes }, now)) {
          if (b.type === 'send-udp' && b.to.port === X.port) h.out.push(...h.core.handle({ type: 'udp', from: E_PUBLIC, bytes: b.bytes, via: 7 }, now + 20));
        }
      }
    }
  };
  echo(t + 100, 4000 + HARD_NAT_HOLD_MS + 500);
  assert.ok(sends(h).every((a) => a.via === undefined || a.via === 7), 'only heartbeats through socket 7 after the meeting');
  assert.ok(opener.via !== undefined);
  const released = () => h.out.filter((a) => a.type === 'release-sockets').flatMap((a) => (a as { ids: number[] }).ids);
  assert.ok(h.core.counters.hardNatOpeners < BIRTHDAY_SOCKETS, 'sending stopped at the meeting: budget saved');
  assert.equal(released().length, h.core.counters.hardNatOpeners - 1);
  assert.ok(!released().includes(7), 'the socket carrying the path is kept');
  assert.equal(h.core.peerStatus(4000 + HARD_NAT_HOLD_MS + 500)[0]!.path, 'direct');
  // The peer stops answering: the path dies, and socket 7 goes back too.
  run(h, 4000 + HARD_NAT_HOLD_MS + 510, 4000 + HARD_NAT_HOLD_MS + 12_000);
  assert.ok(released().includes(7));
  assert.equal(h.core.peerStatus(4000 + HARD_NAT_HOLD_MS + 12_000)[0]!.path, 'none', 'dead, so the relay carries it (and the next attempt is due)');
});

test('cores: an extra socket serves only its own peer; hard ↔ hard spends nothing', () => {
  const { h, e } = pair('endpoint-dependent', 'endpoint-independent');
  run(h, 0, 6000);
  run(e, 0, 6000);
  // A peer's packet on a socket that isn't one of its own (here: one never opened) is not looked at.
  const probe = sends(e).find((a) => a.to.address === H_PUBLIC)!;
  const before = h.core.counters.dropUnknownSender;
  h.core.handle({ type: 'udp', from: E_PUBLIC, bytes: probe.bytes, via: 100_000 }, 6000);
  assert.equal(h.core.counters.dropWrongSocket, 1, 'socket not owned by this peer');
  assert.equal(h.core.counters.dropUnknownSender, before);

  const hh = pair('endpoint-dependent', 'endpoint-dependent');
  run(hh.h, 0, 30_000);
  run(hh.e, 0, 30_000);
  assert.equal(hh.h.core.counters.hardNatAttempts + hh.e.core.counters.hardNatAttempts, 0);
  assert.ok(sends(hh.h).every((a) => a.via === undefined));
  assert.match(hh.h.core.peerStatus(30_000)[0]!.why ?? '', /relay is needed/);
});
