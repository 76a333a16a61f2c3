/**
 * The console's live feed. The core (AdminFeed) on a manual clock with fake
 * transports: auth refusals and their close codes, the initial state, deltas
 * and path reports as they happen, limits. Then the ws shell on a real
 * coordinator on loopback: a bad token closes 4401, a good one gets the state
 * and a join pushed live, and /v1/control still works beside it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { encodeKey, generateKeyPair, type KeyPair } from '../../../shared/crypto/keys.js';
import { silentLogger } from '../../../shared/log.js';
import { controlAuthKey, helloProof } from '../../../shared/wire/control.js';
import { ADMIN_FEED_AUTH_TIMEOUT_MS, ADMIN_FEED_CLOSE, AdminFeed } from '../../../coordinator/control/admin-feed.js';
import { ControlHub } from '../../../coordinator/control/hub.js';
import { CoordinatorMetrics } from '../../../coordinator/metrics.js';
import { Registry } from '../../../coordinator/registry/registry.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';
import { createCoordinator } from '../../../coordinator/index.js';
import { ManualClock } from '../../helpers/manual-clock.js';
import { until } from '../../helpers/until.js';

/** Lets the store's promise chains (and the hub's follow of the feed) run to the end. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

async function setup(opts: { maxConnections?: number; maxBufferedBytes?: number } = {}) {
  const clock = new ManualClock();
  const reg = await Registry.open(new SqliteStore(':memory:'), { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const admin = (await reg.ensureAdmin())!;
  const hub = new ControlHub({ registry: reg, clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: [], coalesceMs: 50 });
  const feed = new AdminFeed({ registry: reg, hub, clock, logger: silentLogger, ...opts });
  const joinToken = (await reg.createToken({ reusable: true })).token;
  const joinNode = async (name: string) => {
    const kp = generateKeyPair();
    await reg.join({ token: joinToken, nodeKey: encodeKey(kp.publicKey), hostname: name });
    await settle();
    return kp;
  };
  const advance = (ms: number) => clock.advanceAsync(ms, settle);
  return { clock, advance, reg, hub, feed, admin, joinToken, joinNode };
}

/** A console as the feed sees it: what it was sent, how it was closed. */
function consoleOf(feed: AdminFeed, buffered = () => 0) {
  const sent: any[] = [];
  const raw: string[] = [];
  let closed: { code: number; reason: string } | undefined;
  const s = feed.connect({ send: (t) => { raw.push(t); sent.push(JSON.parse(t)); }, close: (code, reason) => { closed = { code, reason }; }, get buffered() { return buffered(); } });
  // The token is checked against the store (asynchronously): auth resolves once the answer is in.
  const auth = async (token: unknown) => { s.receive(JSON.stringify({ type: 'auth', token })); await settle(); };
  return { s, sent, raw, get closed() { return closed; }, auth };
}

/** An agent session on the hub, by hand (as in hub.test.ts), to produce path reports. */
function agentSession(hub: ControlHub, kp: KeyPair) {
  const sent: any[] = [];
  const h = hub.connect({ send: (t) => sent.push(JSON.parse(t)), close: () => {}, remoteAddress: '127.0.0.1' });
  const challenge = sent[0];
  const nodeKey = encodeKey(kp.publicKey);
  const discoKey = encodeKey(generateKeyPair().publicKey);
  const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
  const clientNonce = Buffer.alloc(32, 7).toString('base64');
  h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey, clientNonce, proof: helloProof(k, challenge.serverNonce, clientNonce, nodeKey, discoKey), lastVersion: 0 }));
  return h;
}

test('refusals: each with an error frame and its close code, and no frame or reason carries the token', async () => {
  const { feed, joinToken, admin } = await setup();
  const cases: { frame: string; code: number; err: string }[] = [
    { frame: 'not json', code: ADMIN_FEED_CLOSE.protocol, err: 'KNIT_ERR_PROTOCOL' },
    { frame: JSON.stringify({ type: 'hello', token: admin }), code: ADMIN_FEED_CLOSE.protocol, err: 'KNIT_ERR_PROTOCOL' },
    { frame: JSON.stringify(null), code: ADMIN_FEED_CLOSE.protocol, err: 'KNIT_ERR_PROTOCOL' },
    { frame: JSON.stringify({ type: 'auth' }), code: ADMIN_FEED_CLOSE.badToken, err: 'KNIT_ERR_ADMIN_UNAUTHORIZED' },
    { frame: JSON.stringify({ type: 'auth', token: 42 }), code: ADMIN_FEED_CLOSE.badToken, err: 'KNIT_ERR_ADMIN_UNAUTHORIZED' },
    { frame: JSON.stringify({ type: 'auth', token: 'knit_nope' }), code: ADMIN_FEED_CLOSE.badToken, err: 'KNIT_ERR_ADMIN_UNAUTHORIZED' },
    { frame: JSON.stringify({ type: 'auth', token: joinToken }), code: ADMIN_FEED_CLOSE.badToken, err: 'KNIT_ERR_ADMIN_UNAUTHORIZED' },
    { frame: JSON.stringify({ type: 'auth', token: admin.slice(0, -2) + (admin.endsWith('AA') ? 'BB' : 'AA') }), code: ADMIN_FEED_CLOSE.badToken, err: 'KNIT_ERR_ADMIN_UNAUTHORIZED' },
  ];
  for (const c of cases) {
    const con = consoleOf(feed);
    con.s.receive(c.frame);
    await settle();
    assert.equal(con.closed?.code, c.code, c.frame);
    assert.equal(con.sent.length, 1, c.frame);
    assert.equal(con.sent[0].type, 'error');
    assert.equal(con.sent[0].code, c.err);
    for (const secret of [admin, joinToken, admin.slice(5, 30)]) {
      assert.ok(!con.raw.join('').includes(secret) && !con.closed!.reason.includes(secret), 'no token in what is sent back');
    }
  }
  assert.equal(feed.size, 0, 'refused consoles are forgotten');
});

test('no auth frame within 10 s: closed with 4408', async () => {
  const { feed, advance } = await setup();
  const con = consoleOf(feed);
  await advance(ADMIN_FEED_AUTH_TIMEOUT_MS - 1);
  assert.equal(con.closed?.code, undefined);
  await advance(1);
  assert.equal(con.closed?.code, ADMIN_FEED_CLOSE.authTimeout);
  assert.equal(feed.size, 0);
});

test('a good token gets the state, then every delta and path report as it happens', async () => {
  const { feed, hub, advance, admin, joinNode } = await setup();
  const a = await joinNode('alpha');
  await advance(50);
  const con = consoleOf(feed);
  await con.auth(admin);
  assert.equal(con.closed?.code, undefined);
  const state = con.sent[0];
  assert.equal(state.type, 'state');
  assert.equal(state.version, hub.log.version);
  assert.deepEqual(state.nodes.map((n: any) => n.name), ['alpha']);
  assert.deepEqual(state.paths, []);
  await advance(ADMIN_FEED_AUTH_TIMEOUT_MS * 2);
  assert.equal(con.closed?.code, undefined, 'the auth timer is gone once signed in');

  const b = await joinNode('bravo');
  await advance(50);
  const delta = con.sent.at(-1);
  assert.equal(delta.type, 'delta');
  assert.equal(delta.from, state.version);
  assert.deepEqual(delta.changes.map((c: any) => [c.op, c.peer?.name]), [['upsert', 'bravo']]);

  const ha = agentSession(hub, a);
  await advance(50);
  assert.ok(con.sent.at(-1).changes.some((c: any) => c.op === 'online' && c.online === true), 'alpha online, pushed');
  ha.receive(JSON.stringify({ type: 'paths', paths: [{ peer: encodeKey(b.publicKey), kind: 'lan', rttMs: 0.42, lastHandshake: 0 }] }));
  const paths = con.sent.at(-1);
  assert.equal(paths.type, 'paths');
  assert.equal(paths.node, state.nodes[0].id);
  assert.deepEqual(paths.edges.map((e: any) => [e.kind, e.rttMs]), [['lan', 0.4]]);

  con.s.receive(JSON.stringify({ type: 'auth', token: admin }));
  await settle();
  assert.equal(con.closed?.code, ADMIN_FEED_CLOSE.protocol, 'one auth frame only');
  assert.ok(!con.raw.join('').includes(admin), 'the feed never echoes the admin token');
});

test('hub.onChanges: one call per committed version, nothing for an empty window; the remover works', async () => {
  const { hub, reg, advance, joinNode, joinToken } = await setup();
  const seen: number[] = [];
  const off = hub.onChanges((d) => seen.push(d.version));
  await reg.joinMany(['a', 'b'].map((hostname) => ({ token: joinToken, nodeKey: encodeKey(generateKeyPair().publicKey), hostname })));
  await advance(50);
  assert.deepEqual(seen, [hub.log.version], 'two joins in one batch: one version, one call');
  await hub.flush();
  assert.equal(seen.length, 1, 'nothing pending: no call');
  off();
  await joinNode('c');
  await advance(50);
  assert.equal(seen.length, 1);
});

test('limits: too many consoles get 4429; a console that stops reading is closed with 1013; stop() closes with 1001', async () => {
  const { feed, admin, joinNode, advance } = await setup({ maxConnections: 2, maxBufferedBytes: 1000 });
  let backlog = 0;
  const slow = consoleOf(feed, () => backlog);
  await slow.auth(admin);
  const ok = consoleOf(feed);
  await ok.auth(admin);
  const third = consoleOf(feed);
  assert.equal(third.closed?.code, ADMIN_FEED_CLOSE.tooMany);
  assert.equal(third.sent[0].code, 'KNIT_ERR_RATE_LIMITED');
  backlog = 5000;
  await joinNode('x');
  await advance(50);
  assert.equal(slow.closed?.code, ADMIN_FEED_CLOSE.tooSlow);
  assert.equal(ok.sent.at(-1).type, 'delta', 'the others still get it');
  feed.stop();
  assert.equal(ok.closed?.code, ADMIN_FEED_CLOSE.shutdown);
  assert.equal(consoleOf(feed).closed?.code, ADMIN_FEED_CLOSE.shutdown, 'nothing new after stop');
  await joinNode('y');
  await advance(50); // the hub's listeners are gone: no throw, nothing sent
});

// ---- the ws shell on a real coordinator ---------------------------------------------

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function open(url: string) {
  const ws = new WebSocket(url);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));
  const opened = new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  return { ws, frames, closed, opened };
}

test('over WebSocket: bad token → 4401, good token → state then a join live; /v1/control and unknown paths unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-feed-'));
  dirs.push(dir);
  const c = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [], coalesceMs: 10 }, { logger: silentLogger });
  const { httpPort } = await c.start();
  const admin = (await c.ensureAdmin())!;
  const base = `ws://127.0.0.1:${httpPort}`;
  try {
    const bad = open(`${base}/v1/admin/feed`);
    await bad.opened;
    bad.ws.send(JSON.stringify({ type: 'auth', token: 'knit_wrong' }));
    assert.equal((await bad.closed).code, 4401);
    assert.equal(bad.frames[0]?.code, 'KNIT_ERR_ADMIN_UNAUTHORIZED');

    const good = open(`${base}/v1/admin/feed`);
    await good.opened;
    good.ws.send(JSON.stringify({ type: 'auth', token: admin }));
    await until('the state', () => good.frames.find((f) => f.type === 'state'), { timeoutMs: 5000 });
    const joinToken = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: { authorization: `Bearer ${admin}` }, payload: {} })).json().token;
    const joined = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: joinToken, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: 'live' } });
    assert.equal(joined.statusCode, 200);
    const delta = await until('the join, pushed', () => good.frames.find((f) => f.type === 'delta'), { timeoutMs: 5000 });
    assert.equal(delta.changes[0].peer.name, 'live');

    const control = open(`${base}/v1/control`);
    await control.opened;
    await until('the control challenge', () => control.frames.find((f) => f.type === 'challenge'), { timeoutMs: 5000 });
    control.ws.close();

    const nowhere = new WebSocket(`${base}/v1/admin/nope`);
    const status = await new Promise<number | undefined>((r) => {
      nowhere.once('unexpected-response', (_req, res) => r(res.statusCode));
      nowhere.once('error', () => r(undefined));
    });
    assert.equal(status, 404);

    const stopping = c.stop();
    assert.equal((await good.closed).code, 1001, 'shutdown closes consoles with 1001');
    await stopping;
  } finally {
    await c.stop();
  }
});
