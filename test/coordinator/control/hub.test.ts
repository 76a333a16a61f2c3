import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeKey, generateKeyPair, type KeyPair } from '../../../shared/crypto/keys.js';
import { silentLogger } from '../../../shared/log.js';
import { controlAuthKey, helloProof, welcomeProof } from '../../../shared/wire/control.js';
import { ControlHub } from '../../../coordinator/control/hub.js';
import { CoordinatorMetrics } from '../../../coordinator/metrics.js';
import { Registry } from '../../../coordinator/registry/registry.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';
import { ManualClock } from '../../helpers/manual-clock.js';

/** Lets the store's promise chains (and the hub's follow of the feed) run to the end. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Moves a manual clock timer by timer, letting the work each timer starts finish before time moves on. */
function advance(clock: ManualClock, ms: number): Promise<void> {
  return clock.advanceAsync(ms, settle);
}

async function setup(opts: { allowLoopbackEndpoints?: boolean } = {}) {
  const clock = new ManualClock();
  const reg = await Registry.open(new SqliteStore(':memory:'), { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const metrics = new CoordinatorMetrics();
  const hub = new ControlHub({ registry: reg, clock, logger: silentLogger, metrics, stunPorts: [3478], coalesceMs: 50, ...opts });
  const token = (await reg.createToken({ reusable: true })).token;
  const join = async (name: string) => {
    const kp = generateKeyPair();
    await reg.join({ token, nodeKey: encodeKey(kp.publicKey), hostname: name });
    await settle();
    return kp;
  };
  /** Moves the manual clock, then lets what its timers started finish. */
  const tick = (ms: number) => advance(clock, ms);
  return { clock, reg, hub, metrics, join, tick };
}

/** A minimal agent speaking the protocol by hand, recording what the hub sends. */
function client(hub: ControlHub) {
  const sent: any[] = [];
  let closed: { code: number; reason: string } | undefined;
  const h = hub.connect({ send: (t) => sent.push(JSON.parse(t)), close: (code, reason) => { closed = { code, reason }; }, remoteAddress: '127.0.0.1' });
  return {
    sent, h,
    get closed() { return closed; },
    hello(kp: KeyPair, opts: { lastVersion?: number; proofKey?: Uint8Array } = {}) {
      const challenge = sent.find((m) => m.type === 'challenge');
      const nodeKey = encodeKey(kp.publicKey);
      const discoKey = encodeKey(generateKeyPair().publicKey);
      const k = controlAuthKey(opts.proofKey ?? kp.privateKey, challenge.coordinatorKey)!;
      const clientNonce = Buffer.alloc(32, 7).toString('base64');
      h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey, clientNonce, proof: helloProof(k, challenge.serverNonce, clientNonce, nodeKey, discoKey), lastVersion: opts.lastVersion ?? 0 }));
      return { k, clientNonce, challenge };
    },
  };
}

test('hello with the right key: welcome proves the coordinator key, then a snapshot that includes every node', async () => {
  const { hub, join } = await setup();
  const a = await join('a');
  await join('b');
  const c = client(hub);
  const { k, clientNonce, challenge } = c.hello(a);
  const welcome = c.sent.find((m) => m.type === 'welcome');
  assert.equal(welcome.serverProof, welcomeProof(k, clientNonce, challenge.serverNonce));
  assert.deepEqual(welcome.stun, [3478]);
  const snap = c.sent.find((m) => m.type === 'snapshot');
  assert.deepEqual(snap.peers.map((p: any) => p.name).sort(), ['a', 'b']);
  assert.equal(c.closed, undefined);
});

test('proof made with the wrong private key is refused with 4403 and changes nothing', async () => {
  const { hub, join, reg, metrics } = await setup();
  const a = await join('a');
  const c = client(hub);
  c.hello(a, { proofKey: generateKeyPair().privateKey });
  assert.equal(c.closed?.code, 4403);
  assert.equal(c.sent.at(-1).code, 'KNIT_ERR_AUTH_FAILED');
  assert.equal([...reg.peers()][0]!.online, false);
  assert.equal(metrics.authFailures, 1);
});

test('an unknown node key is refused with 4404 (the agent stops retrying)', async () => {
  const { hub } = await setup();
  const c = client(hub);
  c.hello(generateKeyPair());
  assert.equal(c.closed?.code, 4404);
});

test('malformed frames close with 4400; silence before hello closes with 4408', async () => {
  const { hub, tick } = await setup();
  for (const frame of ['not json', '{"type":"bogus"}', '{"type":"endpoints","endpoints":"x"}', JSON.stringify({ type: 'hello', v: 1 })]) {
    const c = client(hub);
    c.h.receive(frame);
    assert.equal(c.closed?.code, 4400, frame);
  }
  const quiet = client(hub);
  await tick(10_000);
  assert.equal(quiet.closed?.code, 4408);
});

test('deltas: a change after a quiet spell goes out at once; what follows a delta folds into one at the end of its window', async () => {
  const { hub, join, tick } = await setup();
  const [a, b, c] = [await join('a'), await join('b'), await join('c')];
  const ca = client(hub);
  ca.hello(a);
  const cb = client(hub);
  cb.hello(b);
  const cc = client(hub);
  cc.hello(c);
  await tick(100); // quiet since: the connects' window is long gone
  const before = ca.sent.length;
  const report = (x: typeof cb, port: number) => x.h.receive(JSON.stringify({ type: 'endpoints', endpoints: [`198.18.0.9:${port}`], natType: 'none' }));
  report(cb, 1);
  await tick(0); // the next turn of the event loop
  assert.equal(ca.sent.length, before + 1, 'a lone change is not held back');
  assert.deepEqual(ca.sent.at(-1).changes.map((x: any) => [x.op, x.endpoints]), [['endpoints', ['198.18.0.9:1']]]);
  await tick(10);
  report(cb, 2);
  report(cc, 3);
  report(cb, 4);
  await tick(39);
  assert.equal(ca.sent.length, before + 1, 'nothing more until 50 ms after the last delta');
  await tick(1);
  const delta = ca.sent.at(-1);
  assert.equal(delta.type, 'delta');
  assert.deepEqual(delta.changes.map((x: any) => x.endpoints), [['198.18.0.9:4'], ['198.18.0.9:3']], 'one delta, the last report per node');
});

test('joins commit their own version at once, one per batch, without waiting for a window', async () => {
  const { hub, join, reg } = await setup();
  const a = await join('a');
  const c = client(hub);
  c.hello(a);
  await settle();
  const before = c.sent.length;
  const token = (await reg.createToken({ reusable: true })).token;
  await reg.joinMany(['x', 'y'].map((hostname) => ({ token, nodeKey: encodeKey(generateKeyPair().publicKey), hostname })));
  await settle();
  assert.equal(c.sent.length, before + 1);
  assert.deepEqual(c.sent.at(-1).changes.map((x: any) => [x.op, x.peer.name]), [['upsert', 'x'], ['upsert', 'y']]);
  assert.equal(c.sent.at(-1).version, hub.log.version);
});

test('reconnecting with the last version gets only the missed deltas, not a snapshot', async () => {
  const { hub, join, tick } = await setup();
  const a = await join('a');
  const c1 = client(hub);
  c1.hello(a);
  await tick(50);
  const version = c1.sent.filter((m) => m.type === 'delta' || m.type === 'snapshot').at(-1).version;
  c1.h.closed();
  await tick(50);
  await join('b');
  await tick(50);
  const c2 = client(hub);
  c2.hello(a, { lastVersion: version });
  assert.equal(c2.sent.some((m) => m.type === 'snapshot'), false);
  const deltas = c2.sent.filter((m) => m.type === 'delta');
  assert.equal(deltas[0].from, version);
  assert.ok(deltas.some((d: any) => d.changes.some((x: any) => x.peer?.name === 'b')));
});

test('endpoint reports: loopback dropped unless allowed, the rest kept and the session with it; accepted ones fan out', async () => {
  const strict = await setup();
  const a = await strict.join('a');
  const c = client(strict.hub);
  c.hello(a);
  c.h.receive(JSON.stringify({ type: 'endpoints', endpoints: ['127.0.0.1:41641', '198.18.0.2:41641'], natType: 'none' }));
  await strict.tick(50);
  assert.equal(c.closed, undefined, 'one refused endpoint costs that endpoint, never the session');
  assert.deepEqual([...strict.reg.peers()][0]!.endpoints, ['198.18.0.2:41641']);
  assert.equal(c.sent.find((m) => m.type === 'welcome')?.loopbackEndpoints, undefined);

  const lax = await setup({ allowLoopbackEndpoints: true });
  const b = await lax.join('b');
  const c2 = client(lax.hub);
  c2.hello(b);
  assert.equal(c2.sent.find((m) => m.type === 'welcome')?.loopbackEndpoints, true, 'the welcome tells agents loopback endpoints are passed on');
  c2.h.receive(JSON.stringify({ type: 'endpoints', endpoints: ['127.0.0.1:41641', '198.18.0.2:41641'], natType: 'endpoint-independent' }));
  await lax.tick(50);
  assert.deepEqual([...lax.reg.peers()][0]!.endpoints, ['127.0.0.1:41641', '198.18.0.2:41641']);
});

test('call-me-maybe is relayed with the sender proven by its session, never a claimed key', async () => {
  const { hub, join } = await setup();
  const a = await join('a');
  const b = await join('b');
  const ca = client(hub);
  ca.hello(a);
  const cb = client(hub);
  cb.hello(b);
  ca.h.receive(JSON.stringify({ type: 'call-me-maybe', to: encodeKey(b.publicKey), endpoints: ['198.18.0.9:1'], from: encodeKey(b.publicKey) }));
  const got = cb.sent.filter((m) => m.type === 'call-me-maybe');
  assert.equal(got.length, 1);
  assert.equal(got[0].from, encodeKey(a.publicKey));
});

test('a new session of the same node replaces the old one without marking it offline', async () => {
  const { hub, join, reg, tick } = await setup();
  const a = await join('a');
  const c1 = client(hub);
  c1.hello(a);
  const c2 = client(hub);
  c2.hello(a);
  assert.equal(c1.closed?.code, 4409);
  await tick(50);
  assert.equal([...reg.peers()][0]!.online, true);
  assert.equal(hub.onlineCount, 1);
});

test('removing a node closes its session with 4404 and tells the others', async () => {
  const { hub, join, tick } = await setup();
  const a = await join('a');
  const b = await join('b');
  const ca = client(hub);
  ca.hello(a);
  const cb = client(hub);
  cb.hello(b);
  await tick(50);
  const idB = cb.sent.find((m) => m.type === 'welcome').node.id;
  assert.ok(await hub.removeNode(idB));
  assert.equal(cb.closed?.code, 4404);
  assert.equal(cb.sent.at(-1).code, 'KNIT_ERR_NODE_UNKNOWN');
  await tick(50);
  assert.ok(ca.sent.filter((m) => m.type === 'delta').some((d: any) => d.changes.some((x: any) => x.op === 'remove' && x.id === idB)));
});

test('ephemeral nodes are swept after being offline for the timeout; others stay', async () => {
  const clock = new ManualClock();
  const reg = await Registry.open(new SqliteStore(':memory:'), { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const hub = new ControlHub({ registry: reg, clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: [], ephemeralTimeoutMs: 600_000 });
  const eph = (await reg.createToken({ ephemeral: true })).token;
  const keep = (await reg.createToken({})).token;
  const e = generateKeyPair();
  await reg.join({ token: eph, nodeKey: encodeKey(e.publicKey), hostname: 'ci-runner' });
  await reg.join({ token: keep, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: 'server' });
  const c = client(hub);
  c.hello(e);
  const tick = (ms: number) => advance(clock, ms);
  await tick(3_600_000);
  assert.equal(reg.nodeCount, 2, 'online ephemeral nodes are kept');
  c.h.closed();
  await tick(590_000);
  assert.equal(reg.nodeCount, 2);
  await tick(20_000); // past the timeout, at the next sweep
  assert.deepEqual([...reg.peers()].map((p) => p.name), ['server']);
  await hub.stop();
});

test('an unregistered key with a bad proof learns nothing: 4403, not 4404', async () => {
  const { hub } = await setup();
  const c = client(hub);
  c.hello(generateKeyPair(), { proofKey: generateKeyPair().privateKey });
  assert.equal(c.closed?.code, 4403);
  assert.equal(c.sent.at(-1).code, 'KNIT_ERR_AUTH_FAILED');
});

test('a hello for another protocol version is refused with 4400', async () => {
  const { hub, join } = await setup();
  const a = await join('a');
  const c = client(hub);
  c.h.receive(JSON.stringify({ type: 'hello', v: 2, nodeKey: encodeKey(a.publicKey), discoKey: encodeKey(a.publicKey), clientNonce: 'AAAA', proof: 'AAAA', lastVersion: 0 }));
  assert.equal(c.closed?.code, 4400);
  assert.equal(c.sent.at(-1).code, 'KNIT_ERR_PROTOCOL');
});

test('call-me-maybe: endpoints a peer must never be sent to are dropped from it; the rest is relayed (nothing when nothing is left) and the session stands', async () => {
  for (const [allowLoopbackEndpoints, endpoints, kept] of [
    [false, ['127.0.0.1:41641'], []],
    [true, ['127.0.0.1:41641'], ['127.0.0.1:41641']],
    [true, ['224.0.0.251:5353'], []],
    [true, ['0.0.0.0:41641'], []],
    [true, ['255.255.255.255:41641'], []],
    [false, ['198.18.0.3:41641', '[ff02::1]:41641'], ['198.18.0.3:41641']],
    [false, ['198.18.0.3:41641', '10.0.0.2:41641'], ['198.18.0.3:41641', '10.0.0.2:41641']],
  ] as const) {
    const { hub, join } = await setup({ allowLoopbackEndpoints });
    const a = await join('a');
    const b = await join('b');
    const ca = client(hub);
    ca.hello(a);
    const cb = client(hub);
    cb.hello(b);
    ca.h.receive(JSON.stringify({ type: 'call-me-maybe', to: encodeKey(b.publicKey), endpoints }));
    const relayed = cb.sent.filter((m) => m.type === 'call-me-maybe');
    assert.deepEqual(relayed.map((m) => m.endpoints), kept.length > 0 ? [kept] : [], JSON.stringify(endpoints));
    assert.equal(ca.closed, undefined, JSON.stringify(endpoints));
  }
});

test('call-me-maybe is rate-limited per session: a burst of 20, then 10 per second', async () => {
  const { hub, join, tick } = await setup();
  const a = await join('a');
  const b = await join('b');
  const ca = client(hub);
  ca.hello(a);
  const cb = client(hub);
  cb.hello(b);
  const send = (n: number) => {
    for (let i = 0; i < n; i++) ca.h.receive(JSON.stringify({ type: 'call-me-maybe', to: encodeKey(b.publicKey), endpoints: ['198.18.0.1:1'] }));
  };
  const relayed = () => cb.sent.filter((m) => m.type === 'call-me-maybe').length;
  const steps: { at: number; send: number; relayedTotal: number }[] = [
    { at: 0, send: 30, relayedTotal: 20 },
    { at: 500, send: 10, relayedTotal: 25 },
    { at: 10_000, send: 30, relayedTotal: 45 },
  ];
  let now = 0;
  for (const s of steps) {
    await tick(s.at - now);
    now = s.at;
    send(s.send);
    assert.equal(relayed(), s.relayedTotal, `at ${s.at} ms`);
  }
  assert.equal(ca.closed, undefined, 'over the rate is dropped, not a protocol error');
});

test('online nodes get their last-seen written about once a minute, and peers get no delta for it', async () => {
  const { hub, join, tick, reg } = await setup();
  const a = await join('a');
  const c = client(hub);
  c.hello(a);
  await tick(50);
  const id = c.sent.find((m) => m.type === 'welcome').node.id;
  const lastSeen = async () => (await reg.store.nodes()).find((n) => n.id === id)!.lastSeen;
  const connectedAt = await lastSeen();
  const framesBefore = c.sent.length;
  await tick(60_000);
  assert.equal(await lastSeen(), connectedAt + 60_000);
  await tick(30_000);
  assert.equal(await lastSeen(), connectedAt + 60_000, 'not on every housekeeping tick');
  await tick(30_000);
  assert.equal(await lastSeen(), connectedAt + 120_000);
  assert.equal(c.sent.length, framesBefore);
});

test('a store failure while committing a window is logged, not fatal: the change waits and goes out once the store is back', async () => {
  const clock = new ManualClock();
  const sqlite = new SqliteStore(':memory:');
  let broken = false;
  // The database goes away under a running coordinator (PostgreSQL restarting, a full disk), then comes back.
  const store = new Proxy(sqlite, {
    get: (t, k) => (k === 'write' && broken ? async () => { throw new Error('connection lost'); } : Reflect.get(t, k, t)),
  });
  const reg = await Registry.open(store, { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const errors: string[] = [];
  const logger = { ...silentLogger, error: (msg: string) => { errors.push(msg); }, child: () => logger };
  const hub = new ControlHub({ registry: reg, clock, logger, metrics: new CoordinatorMetrics(), stunPorts: [] });
  const token = (await reg.createToken({ reusable: true })).token;
  const a = generateKeyPair();
  await reg.join({ token, nodeKey: encodeKey(a.publicKey), hostname: 'a' });
  const c = client(hub);
  c.hello(a);
  await advance(clock, 50);
  const framesBefore = c.sent.length;
  broken = true;
  c.h.receive(JSON.stringify({ type: 'endpoints', endpoints: ['198.18.0.5:41641'], natType: 'none' }));
  await advance(clock, 50);
  assert.equal(c.sent.length, framesBefore, 'nothing is sent that the store did not commit');
  assert.deepEqual(errors, ['could not commit the peer map window']);
  await advance(clock, 500);
  assert.equal(errors.length, 1, 'retried a second later, not every window');
  broken = false;
  await advance(clock, 1000);
  const last = c.sent.at(-1);
  assert.equal(last.type, 'delta');
  assert.deepEqual(last.changes, [{ op: 'endpoints', id: last.changes[0].id, endpoints: ['198.18.0.5:41641'], natType: 'none' }]);
  assert.equal(last.version, hub.log.version);
  await hub.stop();
});

test('every ready session receives the same encoded delta; a stopped hub closes sessions with 1001', async () => {
  const { hub, join, tick } = await setup();
  const raw: string[][] = [[], []];
  const keys = [await join('a'), await join('b')];
  const closes: number[] = [];
  for (const [i, kp] of keys.entries()) {
    const h = hub.connect({ send: (t) => raw[i]!.push(t), close: (code) => closes.push(code), remoteAddress: '127.0.0.1' });
    const challenge = JSON.parse(raw[i]![0]!);
    const nodeKey = encodeKey(kp.publicKey);
    const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
    h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey: nodeKey, clientNonce: 'AAAA', proof: helloProof(k, challenge.serverNonce, 'AAAA', nodeKey, nodeKey), lastVersion: 0 }));
  }
  await tick(50);
  await join('c');
  await tick(50);
  assert.equal(raw[0]!.at(-1), raw[1]!.at(-1));
  assert.equal(JSON.parse(raw[0]!.at(-1)!).changes[0].peer.name, 'c');
  await hub.stop();
  assert.deepEqual(closes, [1001, 1001]);
});

test('after stop, a late connection is closed at once and leaves no timer behind', async () => {
  const { hub, clock } = await setup();
  await hub.stop();
  const pendingBefore = clock.pending;
  const c = client(hub);
  assert.equal(c.closed?.code, 1001);
  assert.equal(c.sent.length, 0);
  assert.equal(clock.pending, pendingBefore);
});

test('a snapshot is encoded once per version and shared; later clients get it plus the short tail of deltas since', async () => {
  const { hub, join, tick, metrics } = await setup();
  const [a, b, c, d] = [await join('a'), await join('b'), await join('c'), await join('d')];
  for (let i = 0; i < 20; i++) await join(`idle${i}`); // a map big enough that a two-node delta is a short tail (< 1/8 of it)
  await tick(50);
  const raw = (kp: KeyPair) => {
    const frames: (string | Buffer)[] = [];
    const h = hub.connect({ send: (f) => frames.push(f), sendEncoded: (b) => frames.push(b), close: () => {}, remoteAddress: '127.0.0.1' });
    const challenge = JSON.parse(String(frames[0]));
    const nodeKey = encodeKey(kp.publicKey);
    const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
    h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey: nodeKey, clientNonce: 'AAAA', proof: helloProof(k, challenge.serverNonce, 'AAAA', nodeKey, nodeKey), lastVersion: 0 }));
    return { h, frames, map: () => frames.slice(2).map((f) => JSON.parse(String(f))) }; // after challenge and welcome
  };
  const ca = raw(a);
  const cb = raw(b);
  assert.equal(metrics.snapshotsEncoded, 1, 'two clients at one version: one encoding');
  assert.ok(Buffer.isBuffer(ca.frames[2]) && ca.frames[2] === cb.frames[2], 'the very same bytes go to both');

  await tick(50); // a and b online: a new version
  const cc = raw(c);
  assert.equal(metrics.snapshotsEncoded, 1, 'one version later the cached snapshot is still good');
  assert.equal(cc.frames[2], ca.frames[2]);
  const [snap, ...tail] = cc.map();
  assert.equal(snap.type, 'snapshot');
  assert.deepEqual(tail.map((m) => [m.type, m.from]), [['delta', snap.version]], 'then the delta since, in order');
  assert.deepEqual(tail[0].changes.filter((x: any) => x.op === 'online').map((x: any) => x.online), [true, true], 'a and b came online');

  // A long tail (more than 64 versions behind) is worth a fresh snapshot.
  for (let i = 0; i < 70; i++) {
    ca.h.receive(JSON.stringify({ type: 'endpoints', endpoints: [`198.18.0.5:${1000 + i}`], natType: 'none' }));
    await tick(50);
  }
  const cd = raw(d);
  assert.equal(metrics.snapshotsEncoded, 2);
  assert.deepEqual(cd.map().map((m) => m.type), ['snapshot']);
  assert.deepEqual(cd.map()[0].peers.find((p: any) => p.name === 'a').endpoints, ['198.18.0.5:1069']);
});

test('an endpoint change costs one small delta, encoded once, whatever the mesh size', async () => {
  const { hub, join, tick, metrics } = await setup();
  const keys: KeyPair[] = [];
  for (let i = 0; i < 50; i++) keys.push(await join(`n${i}`));
  await tick(50);
  const frames: (string | Buffer)[][] = keys.map(() => []);
  const handles = keys.map((kp, i) => {
    const h = hub.connect({ send: (f) => frames[i]!.push(f), sendEncoded: (b) => frames[i]!.push(b), close: () => {}, remoteAddress: '127.0.0.1' });
    const challenge = JSON.parse(String(frames[i]![0]));
    const nodeKey = encodeKey(kp.publicKey);
    const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
    h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey: nodeKey, clientNonce: 'AAAA', proof: helloProof(k, challenge.serverNonce, 'AAAA', nodeKey, nodeKey), lastVersion: 0 }));
    return h;
  });
  await tick(50);
  const sentBefore = metrics.deltasSent;
  handles[7]!.receive(JSON.stringify({ type: 'endpoints', endpoints: ['192.168.1.10:41641', '198.18.0.7:41641'], natType: 'endpoint-independent' }));
  await tick(50);
  assert.equal(metrics.deltasSent - sentBefore, 50, 'one frame per connected peer');
  const last = frames.map((f) => f.at(-1)!);
  assert.ok(last.every((f) => f === last[0]), 'every peer gets the same Buffer');
  assert.ok(last[0]!.length <= 200, `an endpoint change is small (${last[0]!.length} bytes)`);
});

test('path reports: stored by node id, strangers and self skipped, one per second, gone with the node', async () => {
  const { hub, join, reg, tick } = await setup();
  const a = await join('a');
  const b = await join('b');
  const ca = client(hub);
  ca.hello(a);
  const idOf = (kp: KeyPair) => reg.peerByKey(encodeKey(kp.publicKey))!.id;
  const seen: number[] = [];
  hub.onPathReport((from) => seen.push(from));
  ca.h.receive(JSON.stringify({ type: 'paths', paths: [
    { peer: encodeKey(b.publicKey), kind: 'direct', rttMs: 12.34, lastHandshake: 1700000000000 },
    { peer: encodeKey(a.publicKey), kind: 'lan', lastHandshake: 0 }, // itself
    { peer: encodeKey(generateKeyPair().publicKey), kind: 'lan', lastHandshake: 0 }, // a stranger
  ] }));
  assert.deepEqual(hub.pathEdges().map(({ reportedAt: _, ...e }) => e), [{ from: idOf(a), to: idOf(b), kind: 'direct', rttMs: 12.3, lastHandshake: 1700000000000 }]);
  assert.deepEqual(seen, [idOf(a)]);
  ca.h.receive(JSON.stringify({ type: 'paths', paths: [{ peer: encodeKey(b.publicKey), kind: 'none', lastHandshake: 0 }] }));
  assert.equal(hub.pathEdges()[0]!.kind, 'direct', 'a second report within a second is dropped');
  await tick(1000);
  ca.h.receive(JSON.stringify({ type: 'paths', paths: [{ peer: encodeKey(b.publicKey), kind: 'relay', lastHandshake: 0 }] }));
  assert.equal(hub.pathEdges()[0]!.kind, 'relay');
  await hub.removeNode(idOf(a));
  assert.deepEqual(hub.pathEdges(), []);
});

test('a malformed path report closes the session with 4400 and stores nothing', async () => {
  const { hub, join } = await setup();
  const a = await join('a');
  const c = client(hub);
  c.hello(a);
  c.h.receive(JSON.stringify({ type: 'paths', paths: [{ peer: 'nope', kind: 'warp', lastHandshake: -1 }] }));
  assert.equal(c.closed?.code, 4400);
  assert.deepEqual(hub.pathEdges(), []);
});

test('a node reconnecting reuses its proven auth key, and a wrong proof is still refused', async () => {
  const { hub, join } = await setup();
  const a = await join('a');
  const first = client(hub);
  first.hello(a);
  assert.equal(first.sent.at(-1).type, 'snapshot');
  const forged = client(hub);
  forged.hello(a, { proofKey: generateKeyPair().privateKey }); // someone with a's public key only
  assert.equal(forged.closed?.code, 4403);
  const again = client(hub);
  const { k, clientNonce, challenge } = again.hello(a);
  assert.equal(again.sent.find((m) => m.type === 'welcome').serverProof, welcomeProof(k, clientNonce, challenge.serverNonce));
  assert.equal(first.closed?.code, 4409, 'the newer session replaced the first');
});

test('under load a window lasts as long as the last flush took, so fan-out leaves the event loop to handshakes', async () => {
  const manual = new ManualClock();
  let spent = 0; // time the sends "take", seen by the hub through now()
  const clock = { ...manual, now: () => manual.now() + spent, wallNow: () => manual.wallNow(), setTimeout: manual.setTimeout.bind(manual), clearTimeout: manual.clearTimeout.bind(manual) };
  const reg = await Registry.open(new SqliteStore(':memory:'), { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const hub = new ControlHub({ registry: reg, clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: [], coalesceMs: 50 });
  const token = (await reg.createToken({ reusable: true })).token;
  const deltas: number[] = [];
  const keys = [generateKeyPair(), generateKeyPair()];
  for (const [i, kp] of keys.entries()) await reg.join({ token, nodeKey: encodeKey(kp.publicKey), hostname: `n${i}` });
  await settle();
  const handles = keys.map((kp, i) => {
    const frames: string[] = [];
    const h = hub.connect({
      send: (t) => frames.push(t),
      sendEncoded: (b) => { spent += 100; if (i === 0 && JSON.parse(b.toString()).type === 'delta') deltas.push(manual.now()); },
      close: () => {}, remoteAddress: '127.0.0.1',
    });
    const challenge = JSON.parse(frames[0]!);
    const nodeKey = encodeKey(kp.publicKey);
    const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
    h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey: nodeKey, clientNonce: 'AAAA', proof: helloProof(k, challenge.serverNonce, 'AAAA', nodeKey, nodeKey), lastVersion: 0 }));
    return h;
  });
  await advance(manual, 1000); // connect windows done; each flush to two sessions "took" 200 ms
  deltas.length = 0;
  const start = manual.now();
  handles[0]!.receive(JSON.stringify({ type: 'endpoints', endpoints: ['198.18.0.5:1'], natType: 'none' }));
  await advance(manual, 0);
  assert.deepEqual(deltas.map((t) => t - start), [0], 'after a quiet spell: at once');
  handles[1]!.receive(JSON.stringify({ type: 'endpoints', endpoints: ['198.18.0.6:1'], natType: 'none' }));
  await advance(manual, 150);
  assert.equal(deltas.length, 1, 'not while the window stretched to the 200 ms the last flush took is open');
  await advance(manual, 60);
  assert.equal(deltas.length, 2);
});

test('a replica that fell behind the feed further than the store keeps it reloads the map from the rows', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-hub-'));
  try {
    const clock = new ManualClock();
    const path = join(dir, 'knit.db');
    const a = await Registry.open(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1', replica: 'a' });
    const b = await Registry.open(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1', replica: 'b' });
    const logger = { ...silentLogger, warn: (msg: string) => { warnings.push(msg); }, child: () => logger };
    const warnings: string[] = [];
    const hubB = new ControlHub({ registry: b, clock, logger, metrics: new CoordinatorMetrics(), stunPorts: [] });
    const token = (await a.createToken({ reusable: true })).token;
    const joined: number[] = [];
    for (const name of ['x', 'y', 'z']) joined.push((await a.join({ token, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: name })).response.node.id);
    assert.ok(await a.remove(joined[0]!));
    await a.store.pruneChanges(1); // b was away while the store dropped all but the newest version
    await hubB.follow(); // SQLite tells only its own process: b finds out by following
    assert.deepEqual(warnings, ['fell behind the change feed; reloading the peer map']);
    assert.deepEqual([...b.peers()].map((p) => p.name).sort(), ['y', 'z']);
    assert.equal(hubB.log.version, await a.store.latestVersion());
    await hubB.stop();
    await Promise.all([a.store.close(), b.store.close()]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
