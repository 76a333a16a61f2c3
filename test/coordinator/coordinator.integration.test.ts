/**
 * The coordinator over real sockets on loopback: HTTP join, the control
 * WebSocket spoken by a minimal client written from the protocol (and once by
 * the agent's own client, for interoperability), both STUN ports, liveness,
 * admin removal, the token race, and kill -9 of a real coordinator process
 * during a join burst.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test } from 'node:test';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger } from '../../shared/log.js';
import { MAX_FRAME_BYTES, type DeltaMsg, type ServerMessage, type SnapshotMsg, type WelcomeMsg } from '../../shared/wire/control.js';
import { encodeBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN } from '../../shared/wire/stun.js';
import { createCoordinator, type Coordinator, type CoordinatorOptions } from '../../coordinator/index.js';
import { ControlClient } from '../../agent/control/client.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { until } from '../helpers/until.js';
import { connectMiniAgent, type MiniAgent } from './fixtures/mini-agent.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-int-'));
  dirs.push(d);
  return d;
}

const started: Coordinator[] = [];
after(() => Promise.all(started.map((c) => c.stop())));

async function startCoordinator(options: Partial<CoordinatorOptions> = {}, clock = systemClock as ManualClock | typeof systemClock) {
  const c = await createCoordinator({ dataDir: tmp(), listen: { host: '127.0.0.1', port: 0 }, stun: [{ host: '127.0.0.1', port: 0 }], ...options }, { logger: silentLogger, clock });
  started.push(c); // stopped after the file even when a test fails half-way (an open socket would keep it alive)
  const ports = await c.start();
  const admin = (await c.ensureAdmin())!;
  const base = `http://127.0.0.1:${ports.httpPort}`;
  const auth = { authorization: `Bearer ${admin}` };
  const newToken = async (body: object = {}) => {
    const r = await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return ((await r.json()) as { token: string }).token;
  };
  return { c, base, ports, admin, auth, newToken };
}

async function joinNode(base: string, token: string, name: string, kp: KeyPair = generateKeyPair()) {
  const r = await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey: encodeKey(kp.publicKey), hostname: name }) });
  return { kp, status: r.status, body: (await r.json()) as { node: { id: number; name: string }; error?: { code: string } } };
}

const isType = <T extends ServerMessage['type']>(type: T) => (m: ServerMessage): m is Extract<ServerMessage, { type: T }> => m.type === type;

test('join + WS snapshot, then a delta when a second node joins, well within a second', async () => {
  const { c, base, ports, newToken } = await startCoordinator({ stun: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }] });
  const token = await newToken({ reusable: true });
  const a = await joinNode(base, token, 'alpha');
  assert.equal(a.status, 200);
  const ma = connectMiniAgent(base, a.kp);
  const welcome = await ma.next(isType('welcome'), 'welcome') as WelcomeMsg;
  assert.ok(ma.welcomeVerified, 'the welcome proves the coordinator key');
  assert.deepEqual(welcome.stun, ports.stunPorts, 'both STUN ports are offered');
  assert.equal(ports.stunPorts.length, 2);
  const snap = await ma.next(isType('snapshot'), 'snapshot') as SnapshotMsg;
  assert.deepEqual(snap.peers.map((p) => p.name), ['alpha'], 'the map includes the receiving node itself');

  const t0 = performance.now();
  const b = await joinNode(base, token, 'beta');
  await ma.next((m) => m.type === 'delta' && (m as DeltaMsg).changes.some((x) => x.op === 'upsert' && x.peer.name === 'beta'), 'beta in a delta', 1000);
  const elapsedMs = performance.now() - t0;
  assert.ok(elapsedMs < 1000, `took ${elapsedMs} ms`);

  const mb = connectMiniAgent(base, b.kp);
  await mb.next(isType('snapshot'), 'beta snapshot');
  assert.deepEqual([...mb.peers.values()].map((p) => p.name).sort(), ['alpha', 'beta']);
  await until('alpha sees beta online', () => ma.peers.get(b.body.node.id)?.online, { timeoutMs: 2000 });
  await ma.close();
  await mb.close();
  await until('alpha offline once its socket closed', () => c.registry.peer(a.body.node.id)?.online === false, { timeoutMs: 2000 });
  await c.stop();
});

test('the agent\'s own control client interoperates: two nodes see each other; a wrong pinned key is refused', async () => {
  const { c, base, newToken } = await startCoordinator();
  const token = await newToken({ reusable: true });
  const [a, b] = [await joinNode(base, token, 'alpha'), await joinNode(base, token, 'beta')];
  const statuses: string[] = [];
  const client = (kp: KeyPair, coordinatorKey: string) => new ControlClient(
    { url: base, coordinatorKey, nodePrivateKey: kp.privateKey, nodeKey: encodeKey(kp.publicKey), discoKey: encodeKey(generateKeyPair().publicKey) },
    { transport: wsTransport, clock: systemClock, random: defaultRandomBytes, logger: silentLogger, events: { onNetmap() {}, onCallMeMaybe() {}, onWelcome() {}, onStatus: (s, d) => statuses.push(`${s}:${d ?? ''}`) } },
  );
  const ca = client(a.kp, c.registry.coordinatorKey);
  const cb = client(b.kp, c.registry.coordinatorKey);
  ca.start();
  cb.start();
  await until('alpha sees beta', () => ca.netmap.peers.get(b.body.node.id)?.online, { timeoutMs: 3000 });
  await until('beta sees alpha', () => cb.netmap.peers.get(a.body.node.id)?.online, { timeoutMs: 3000 });
  ca.stop();
  cb.stop();
  const impostor = client(a.kp, encodeKey(generateKeyPair().publicKey));
  impostor.start();
  await until('refusal of an unpinned coordinator', () => statuses.find((s) => s.includes('pinned')), { timeoutMs: 3000 });
  impostor.stop();
  await c.stop();
});

test('bad input on the control socket: an error frame with a stable code, then the close code', async () => {
  const { c, base, newToken } = await startCoordinator();
  const token = await newToken({ reusable: true });
  const a = await joinNode(base, token, 'alpha');
  const stranger = generateKeyPair();
  const cases: { name: string; agent: () => MiniAgent; act?: (m: MiniAgent) => void; close: number; code?: string }[] = [
    { name: 'not JSON', agent: () => connectMiniAgent(base, a.kp, { manual: true }), act: (m) => m.send('{"type":'), close: 4400, code: 'KNIT_ERR_PROTOCOL' },
    { name: 'binary frame', agent: () => connectMiniAgent(base, a.kp, { manual: true }), act: (m) => m.ws.send(Buffer.from([1, 2, 3])), close: 4400, code: 'KNIT_ERR_PROTOCOL' },
    { name: 'endpoints before hello', agent: () => connectMiniAgent(base, a.kp, { manual: true }), act: (m) => m.send({ type: 'endpoints', endpoints: [] }), close: 4400, code: 'KNIT_ERR_PROTOCOL' },
    { name: 'frame over 64 KiB', agent: () => connectMiniAgent(base, a.kp, { manual: true }), act: (m) => m.send('x'.repeat(MAX_FRAME_BYTES + 1)), close: 1009 },
    { name: 'proof with the wrong key', agent: () => connectMiniAgent(base, a.kp, { proofKey: generateKeyPair().privateKey }), close: 4403, code: 'KNIT_ERR_AUTH_FAILED' },
    { name: 'a key that never joined', agent: () => connectMiniAgent(base, stranger), close: 4404, code: 'KNIT_ERR_NODE_UNKNOWN' },
    // A malformed endpoint makes the whole frame malformed (unlike a well-formed one the coordinator won't pass on: next test).
    { name: 'malformed endpoint in a report', agent: () => connectMiniAgent(base, a.kp), act: (m) => void m.next(isType('snapshot'), 'snapshot').then(() => m.send({ type: 'endpoints', endpoints: ['198.18.0.1:41641', 'not-an-endpoint'] })), close: 4400, code: 'KNIT_ERR_PROTOCOL' },
    { name: 'duplicate endpoints in a call-me-maybe', agent: () => connectMiniAgent(base, a.kp), act: (m) => void m.next(isType('snapshot'), 'snapshot').then(() => m.send({ type: 'call-me-maybe', to: encodeKey(stranger.publicKey), endpoints: ['198.18.0.1:1', '198.18.0.1:1'] })), close: 4400, code: 'KNIT_ERR_PROTOCOL' },
  ];
  for (const k of cases) {
    const m = k.agent();
    await m.next(isType('challenge'), `challenge (${k.name})`);
    k.act?.(m);
    const closed = await m.closed;
    assert.equal(closed.code, k.close, k.name);
    if (k.code) assert.equal(m.frames.filter(isType('error')).at(-1)?.code, k.code, k.name);
  }
  assert.deepEqual(c.registry.peer(a.body.node.id)!.endpoints, [], 'nothing was applied');
  // Upgrades anywhere but /v1/control are refused.
  const wrongPath = connectMiniAgent(`${base}/elsewhere`, a.kp);
  await wrongPath.closed;
  assert.equal(wrongPath.frames[0]?.type === 'error' && wrongPath.frames[0].code, 'HTTP_404');
  await c.stop();
});

test('an endpoint the coordinator won\'t pass on costs that endpoint, never the session', async () => {
  const { c, base, newToken } = await startCoordinator();
  const token = await newToken({ reusable: true });
  const [a, b] = [await joinNode(base, token, 'alpha'), await joinNode(base, token, 'beta')];
  const ma = connectMiniAgent(base, a.kp);
  const mb = connectMiniAgent(base, b.kp);
  const welcome = await ma.next(isType('welcome'), 'welcome') as WelcomeMsg;
  assert.equal(welcome.loopbackEndpoints, undefined, 'the welcome says loopback endpoints are not accepted (by saying nothing)');
  await ma.next(isType('snapshot'), 'alpha snapshot');
  await mb.next(isType('snapshot'), 'beta snapshot');
  const cases: { sent: string[]; kept: string[] }[] = [
    { sent: ['198.18.0.1:41641', '127.0.0.1:41641'], kept: ['198.18.0.1:41641'] },
    { sent: ['[::1]:41641', '224.0.0.251:5353', '0.0.0.0:1', '198.18.0.2:41641'], kept: ['198.18.0.2:41641'] },
    { sent: ['127.0.0.1:41641'], kept: [] },
  ];
  for (const k of cases) {
    ma.send({ type: 'endpoints', endpoints: k.sent });
    await until(`beta sees ${k.kept.join(',') || 'no endpoint'}`, () => JSON.stringify(mb.peers.get(a.body.node.id)?.endpoints) === JSON.stringify(k.kept), { timeoutMs: 3000 });
  }
  ma.send({ type: 'call-me-maybe', to: encodeKey(b.kp.publicKey), endpoints: ['127.0.0.1:41641', '198.18.0.1:41641'] });
  const cmm = await mb.next(isType('call-me-maybe'), 'call-me-maybe');
  assert.deepEqual(cmm.endpoints, ['198.18.0.1:41641'], 'the call-me-maybe arrives without the loopback endpoint');
  assert.equal(ma.ws.readyState, ma.ws.OPEN, 'the session stands');
  assert.equal(ma.frames.filter(isType('error')).length, 0);
  assert.equal(c.metrics.endpointsRefused, 6, "1 + 3 + 1 from the reports, 1 from the call-me-maybe");
  assert.match(c.metrics.render({ nodes: 2, online: 2 }), /^knit_endpoints_refused_total 6$/m);
  await ma.close();
  await mb.close();
  await c.stop();
});

test('liveness: a peer that stops answering pings is cut off and marked offline; a live one stays', async () => {
  const clock = new ManualClock(Date.now());
  const { c, base, newToken } = await startCoordinator({ stun: [], joinRatePerMin: 1000 }, clock);
  const token = await newToken({ reusable: true });
  const dead = await joinNode(base, token, 'dead');
  const live = await joinNode(base, token, 'live');
  const md = connectMiniAgent(base, dead.kp, { autoPong: false });
  const ml = connectMiniAgent(base, live.kp);
  await md.next(isType('snapshot'), 'snapshot');
  await ml.next(isType('snapshot'), 'snapshot');
  for (let round = 1; round <= 2; round++) {
    const pinged = new Promise((r) => ml.ws.once('ping', r));
    clock.advance(15_000);
    await pinged;
    // The live agent's pong precedes this report on the same socket: once the report is
    // applied, the coordinator has seen the pong too.
    const ep = `198.18.0.${round}:41641`;
    ml.send({ type: 'endpoints', endpoints: [ep] });
    await until('report applied', () => c.registry.peer(live.body.node.id)!.endpoints[0] === ep, { timeoutMs: 2000 });
  }
  const closed = await md.closed;
  assert.equal(closed.code, 1006, 'terminated, not closed politely');
  await until('dead marked offline', () => c.registry.peer(dead.body.node.id)!.online === false, { timeoutMs: 2000 });
  clock.advance(50);
  await ml.next((m) => m.type === 'delta' && (m as DeltaMsg).changes.some((x) => x.op === 'online' && x.id === dead.body.node.id && !x.online), 'offline delta');
  assert.equal(ml.ws.readyState, ml.ws.OPEN);
  assert.equal(c.registry.peer(live.body.node.id)!.online, true);
  await ml.close();
  await c.stop();
});

test('removing a node over the admin API closes its session for good (4404) and tells everyone', async () => {
  const { c, base, auth, newToken } = await startCoordinator();
  const token = await newToken({ reusable: true });
  const a = await joinNode(base, token, 'alpha');
  const b = await joinNode(base, token, 'beta');
  const ma = connectMiniAgent(base, a.kp);
  const mb = connectMiniAgent(base, b.kp);
  await ma.next(isType('snapshot'), 'snapshot');
  await mb.next(isType('snapshot'), 'snapshot');
  const r = await fetch(`${base}/v1/admin/nodes/${b.body.node.id}`, { method: 'DELETE', headers: auth });
  assert.equal(r.status, 200);
  assert.equal((await mb.closed).code, 4404);
  assert.equal(mb.frames.filter(isType('error')).at(-1)?.code, 'KNIT_ERR_NODE_UNKNOWN', 'told why before the close');
  await ma.next((m) => m.type === 'delta' && (m as DeltaMsg).changes.some((x) => x.op === 'remove' && x.id === b.body.node.id), 'remove delta');
  assert.equal(ma.peers.has(b.body.node.id), false);
  // It can't come back with its old key.
  const again = connectMiniAgent(base, b.kp);
  assert.equal((await again.closed).code, 4404);
  await ma.close();
  await c.stop();
});

test('100 concurrent joins racing one single-use token yield exactly one node; the rest are told why', async () => {
  const { c, base, newToken } = await startCoordinator({ joinRatePerMin: 10_000 });
  const token = await newToken();
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => joinNode(base, token, `racer-${i}`)));
  assert.equal(results.filter((r) => r.status === 200).length, 1);
  assert.equal(c.registry.nodeCount, 1);
  const refused = results.filter((r) => r.status !== 200);
  assert.ok(refused.every((r) => r.status === 401 && r.body.error?.code === 'KNIT_ERR_TOKEN_USED'), JSON.stringify(refused.map((r) => r.status)));
  await c.stop();
});

test('STUN on the real UDP port answers with the source address and counts into /metrics', async () => {
  const { c, ports, base } = await startCoordinator();
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  try {
    const req = encodeBindingRequest(defaultRandomBytes(12), { padTo: STUN_KNIT_REQUEST_LEN });
    const reply = new Promise<Buffer>((r) => sock.once('message', (m) => r(m)));
    sock.send(req, ports.stunPorts[0]!, '127.0.0.1');
    const res = await reply;
    assert.deepEqual(parseBindingResponse(new Uint8Array(res))?.mapped, { address: '127.0.0.1', port: sock.address().port });
    assert.ok(res.length <= req.length, 'never larger than a Knit request');
    await until('counted', async () => /^knit_stun_requests_total 1$/m.test(await (await fetch(`${base}/metrics`)).text()), { timeoutMs: 2000 });
  } finally {
    sock.close();
  }
  await c.stop();
});

test('kill -9 during a join burst loses no acknowledged join; the coordinator restarts cleanly', async () => {
  const dataDir = tmp();
  const fixture = join(process.cwd(), 'dist', 'test', 'coordinator', 'fixtures', 'run-coordinator.js');
  const start = async () => {
    const child = spawn(process.execPath, [fixture, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const line = await Promise.race([
      new Promise<string>((r) => createInterface({ input: child.stdout! }).once('line', r)),
      exited.then((code) => { throw new Error(`coordinator exited (${code}) before it was ready: ${err}`); }),
    ]);
    return { child, exited, ready: JSON.parse(line) as { httpPort: number; admin: string | null } };
  };
  const first = await start();
  const admin = first.ready.admin!;
  assert.match(admin, /^knit_/);
  let base = `http://127.0.0.1:${first.ready.httpPort}`;
  const token = ((await (await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ reusable: true }) })).json()) as { token: string }).token;

  const acked: string[] = [];
  let stop = false;
  const worker = async (w: number) => {
    for (let i = 0; !stop && i < 500; i++) {
      const nodeKey = encodeKey(generateKeyPair().publicKey);
      try {
        const r = await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey, hostname: `burst-${w}-${i}` }) });
        if (r.status === 200) acked.push(nodeKey);
        else throw new Error(`join refused: ${r.status}`);
      } catch {
        return; // the connection died with the process
      }
    }
  };
  const workers = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
  await until('some joins acknowledged', () => acked.length >= 30, { timeoutMs: 10_000 });
  first.child.kill('SIGKILL'); // mid-burst: joins are in flight on eight connections
  await first.exited;
  stop = true;
  await workers;
  assert.ok(acked.length >= 30);

  const second = await start();
  assert.equal(second.ready.admin, null, 'the admin token is not made or printed again');
  base = `http://127.0.0.1:${second.ready.httpPort}`;
  const nodes = (await (await fetch(`${base}/v1/admin/nodes`, { headers: { authorization: `Bearer ${admin}` } })).json()) as { nodes: { nodeKey: string }[] };
  const present = new Set(nodes.nodes.map((n) => n.nodeKey));
  const lost = acked.filter((k) => !present.has(k));
  assert.deepEqual(lost, [], `${lost.length} of ${acked.length} acknowledged joins lost`);
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0, 'SIGTERM is a clean stop');
});
