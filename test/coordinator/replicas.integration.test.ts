/**
 * Coordinator replicas sharing one PostgreSQL database (a throwaway server,
 * test/support/postgres.ts, one fresh database per test), over real sockets
 * on loopback:
 * - a change accepted by one replica reaches an agent on another under the
 *   same version, as the same bytes;
 * - three replicas with joins and reports spread over them end with the same
 *   versions, the same deltas and the same peer map;
 * - a node that joined through one replica may connect to another at once;
 * - a single-use token raced across replicas yields one node, and a join
 *   burst across replicas yields unique names and addresses;
 * - an agent resumes on another replica with deltas only;
 * - kill -9 of the replica that real agents (memory engine, loopback UDP)
 *   are connected to, behind a TCP "load balancer": they reconnect to the
 *   survivor and resume while their tunnels stay up, and the store records
 *   the survivor as their sessions' holder.
 *
 * Without PostgreSQL (apt-get install postgresql) every test says it is skipped.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test, type TestContext } from 'node:test';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger, type Logger } from '../../shared/log.js';
import type { CallMeMaybeIn, DeltaMsg, PeerInfo, ServerMessage } from '../../shared/wire/control.js';
import { createCoordinator, type Coordinator } from '../../coordinator/index.js';
import { PostgresStore } from '../../coordinator/store/postgres.js';
import { Agent } from '../../agent/agent.js';
import { joinMesh, parseJoinToken } from '../../agent/control/join.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import { createMemoryEngine, memoryHandshakes, type MemoryEngine } from '../../agent/engine/memory.js';
import { openUdpSocket } from '../../agent/net/udp-socket.js';
import { until } from '../helpers/until.js';
import { registerSecret, saveTestLog } from '../security/log-secrets.js';
import { startPostgres, type PostgresServer } from '../support/postgres.js';
import { connectMiniAgent, type MiniAgent } from './fixtures/mini-agent.js';

/** One set for every memory engine here, so both sides of a path see its handshake (agent/engine/memory.ts). */
const MEMORY_HANDSHAKES = memoryHandshakes(Date.now);

const server = await startPostgres();
const skip = 'skip' in server ? `skipped: ${server.skip}` : undefined;
if (!('skip' in server)) after(() => server.stop());

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

let databases = 0;
function newDatabase(): Promise<string> {
  return (server as PostgresServer).createDatabase(`replicas_${++databases}`);
}

const isType = <T extends ServerMessage['type']>(type: T) => (m: ServerMessage): m is Extract<ServerMessage, { type: T }> => m.type === type;

/** A peer as every replica must agree on it: everything but last-seen (refreshed locally, without a delta). */
const comparable = (peers: Iterable<PeerInfo>) => [...peers].map(({ lastSeen: _, ...p }) => p).sort((x, y) => x.id - y.id);

interface Replica { c: Coordinator; base: string }

/** A fresh database and `n` in-process replicas on it; the admin token comes from the first start. */
async function mesh(t: TestContext, n: number) {
  const url = await newDatabase();
  const replicas: Replica[] = [];
  let admin: string | undefined;
  for (let i = 0; i < n; i++) {
    const c = await createCoordinator(
      { store: url, dataDir: '', listen: { host: '127.0.0.1', port: 0 }, stun: [], allowLoopbackEndpoints: true, joinRatePerMin: 1_000_000 },
      { logger: silentLogger },
    );
    t.after(() => c.stop());
    const { httpPort } = await c.start();
    const minted = await c.ensureAdmin();
    if (i === 0) admin = minted;
    else assert.equal(minted, undefined, 'only the first start of the database makes an admin token');
    replicas.push({ c, base: `http://127.0.0.1:${httpPort}` });
  }
  assert.ok(admin);
  registerSecret(admin);
  const newToken = async (body: object = {}, via = replicas[0]!) => {
    const r = await fetch(`${via.base}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200);
    const token = ((await r.json()) as { token: string }).token;
    registerSecret(token);
    return token;
  };
  return { replicas, store: replicas[0]!.c.store, newToken };
}

interface Joined { kp: KeyPair; status: number; body: { node: { id: number; name: string; addresses: string[] }; error?: { code: string } } }

async function joinNode(base: string, token: string, hostname: string, kp: KeyPair = generateKeyPair()): Promise<Joined> {
  const r = await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey: encodeKey(kp.publicKey), hostname }) });
  return { kp, status: r.status, body: (await r.json()) as Joined['body'] };
}

/**
 * Waits until every replica has sent the store's newest version and has nothing left to
 * commit, three polls in a row (a window may be on its way between two polls).
 */
async function settle(replicas: Replica[], store: Coordinator['store']): Promise<number> {
  let streak = 0;
  let last = -1;
  const { version } = await until('every replica at the store\'s newest version', async () => {
    const v = await store.latestVersion();
    const ok = replicas.every((r) => r.c.hub.log.version === v && !r.c.registry.hasPending);
    streak = ok && v === last ? streak + 1 : ok ? 1 : 0;
    last = v;
    return streak >= 3 && { version: v };
  }, {
    timeoutMs: 10_000,
    explain: async () => `store ${await store.latestVersion()}, replicas ${replicas.map((r) => r.c.hub.log.version).join(', ')}`,
  });
  return version;
}

function mini(t: TestContext, base: string, kp: KeyPair, options?: Parameters<typeof connectMiniAgent>[2]): MiniAgent {
  const m = connectMiniAgent(base, kp, options);
  t.after(() => m.close());
  return m;
}

test('two replicas: an endpoint change on A reaches an agent on B under the version A logged, as the same bytes', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas: [a, b], store, newToken } = await mesh(t, 2);
  const token = await newToken({ reusable: true });
  const x = await joinNode(a!.base, token, 'x');
  const y = await joinNode(b!.base, token, 'y');
  assert.equal(x.status, 200);
  assert.equal(y.status, 200);
  const xId = x.body.node.id;
  const yId = y.body.node.id;
  await until('each replica knows the node joined on the other', () => a!.c.registry.peer(yId) && b!.c.registry.peer(xId), { timeoutMs: 5000 });

  const mx = mini(t, a!.base, x.kp);
  const my = mini(t, b!.base, y.kp);
  const rawOnB: string[] = [];
  my.ws.on('message', (d) => rawOnB.push(d.toString()));
  await mx.next(isType('snapshot'), 'X snapshot from A');
  await my.next(isType('snapshot'), 'Y snapshot from B');

  // Online state crosses replicas: A holds X's session, B holds Y's; each shows both online.
  await until('B shows X online', () => b!.c.registry.peer(xId)?.online, { timeoutMs: 5000 });
  await until('A shows Y online', () => a!.c.registry.peer(yId)?.online, { timeoutMs: 5000 });
  await until('Y (on B) sees X online', () => my.peers.get(xId)?.online, { timeoutMs: 5000 });
  const rows = new Map((await store.nodes()).map((r) => [r.id, r]));
  assert.equal(rows.get(xId)?.onlineReplica, a!.c.registry.replica, 'the store says A serves X');
  assert.equal(rows.get(yId)?.onlineReplica, b!.c.registry.replica, 'the store says B serves Y');

  const loggedOnA: DeltaMsg[] = [];
  t.after(a!.c.hub.onChanges((d) => loggedOnA.push(d)));
  const endpoints = ['127.0.0.1:41641', '198.51.100.7:41641'];
  mx.send({ type: 'endpoints', endpoints, natType: 'endpoint-independent' });
  const isXEndpoints = (m: ServerMessage): m is DeltaMsg => m.type === 'delta' && m.changes.some((c) => c.op === 'endpoints' && c.id === xId);
  const onB = await my.next(isXEndpoints, 'X\'s endpoints in a delta on B');
  assert.deepEqual(onB.changes.find((c) => c.op === 'endpoints' && c.id === xId), { op: 'endpoints', id: xId, endpoints, natType: 'endpoint-independent' });
  assert.equal(onB.from, onB.version - 1);
  // B may hear of the commit (NOTIFY) and send it before A's own follow has read it back.
  const onA = await until('A logged the delta it committed', () => loggedOnA.find(isXEndpoints), { timeoutMs: 5000 });
  assert.equal(onB.version, onA.version, 'B sent it under the version A committed');
  await mx.next((m) => isXEndpoints(m) && m.version === onA.version, 'the same delta back on X (A)');

  // Byte for byte: the frame on B's wire, B's log entry and A's log entry for that version.
  const wire = rawOnB.find((s) => (JSON.parse(s) as ServerMessage).type === 'delta' && (JSON.parse(s) as DeltaMsg).version === onB.version);
  assert.ok(wire);
  assert.equal(a!.c.hub.log.since(onA.version - 1)?.[0]?.toString(), wire, 'A\'s log has the bytes B sent');
  assert.equal(b!.c.hub.log.since(onB.version - 1)?.[0]?.toString(), wire, 'B\'s log has the bytes it sent');

  const version = await settle([a!, b!], store);
  assert.equal(a!.c.hub.log.version, b!.c.hub.log.version);
  await until('both clients at the settled version', () => mx.version === version && my.version === version, { timeoutMs: 5000 });
  assert.deepEqual(b!.c.registry.peer(xId)?.endpoints, endpoints);
  assert.equal(b!.c.registry.peer(xId)?.online, true, 'B\'s registry shows X online');
  assert.deepEqual(comparable(a!.c.registry.peers()), comparable(b!.c.registry.peers()));
});

test('three replicas: joins and reports spread over all three end in the same versions, deltas and peer map', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas, store, newToken } = await mesh(t, 3);
  const start = replicas.map((r) => r.c.hub.log.version);
  assert.ok(start.every((v) => v === start[0]), `every replica starts at the same version: ${start}`);
  const token = await newToken({ reusable: true });
  const n = 6;
  // Node i joins through replica i mod 3 and is served by the next one.
  const nodes = await Promise.all(Array.from({ length: n }, (_, i) => joinNode(replicas[i % 3]!.base, token, `node${i}`)));
  assert.deepEqual(nodes.map((j) => j.status), nodes.map(() => 200));
  await until('every replica knows every node', () => replicas.every((r) => r.c.registry.nodeCount === n), { timeoutMs: 5000 });
  const clients = nodes.map((j, i) => mini(t, replicas[(i + 1) % 3]!.base, j.kp));
  await Promise.all(clients.map((m, i) => m.next(isType('snapshot'), `snapshot for node${i}`)));
  clients.forEach((m, i) => m.send({ type: 'endpoints', endpoints: [`127.0.0.1:${41000 + i}`], natType: 'none' }));
  // A second round on some: node0 moves, node1 goes away.
  await until('node0\'s first report everywhere', () => replicas.every((r) => r.c.registry.peer(nodes[0]!.body.node.id)?.endpoints[0] === '127.0.0.1:41000'), { timeoutMs: 5000 });
  clients[0]!.send({ type: 'endpoints', endpoints: ['198.51.100.1:41000', '127.0.0.1:41000'], natType: 'endpoint-independent' });
  await clients[1]!.close();

  const ids = nodes.map((j) => j.body.node.id);
  const want = (p: PeerInfo | undefined, i: number) => p !== undefined &&
    p.online === (i !== 1) &&
    p.endpoints.join() === (i === 0 ? '198.51.100.1:41000,127.0.0.1:41000' : `127.0.0.1:${41000 + i}`);
  await until('every replica shows every change', () => replicas.every((r) => ids.every((id, i) => want(r.c.registry.peer(id), i))), { timeoutMs: 10_000 });
  const version = await settle(replicas, store);
  const live = clients.filter((_, i) => i !== 1);
  await until('every client at the settled version', () => live.every((m) => m.version === version), { timeoutMs: 5000 });

  assert.deepEqual(replicas.map((r) => r.c.hub.log.version), [version, version, version]);
  const maps = replicas.map((r) => comparable(r.c.registry.peers()));
  assert.deepEqual(maps[1], maps[0], 'replica 2 holds replica 1\'s map');
  assert.deepEqual(maps[2], maps[0], 'replica 3 holds replica 1\'s map');
  for (const [i, m] of live.entries()) assert.deepEqual(comparable(m.peers.values()), maps[0], `client ${i} holds the same map`);
  // Every version's delta, as bytes, is the same on every replica.
  const logs = replicas.map((r) => r.c.hub.log.since(start[0]!)?.map((b) => b.toString()));
  assert.equal(logs[0]?.length, version - start[0]!);
  assert.deepEqual(logs[1], logs[0]);
  assert.deepEqual(logs[2], logs[0]);
  t.diagnostic(`${version - start[0]!} versions, identical on 3 replicas`);
});

test('call-me-maybe crosses replicas: X on A asks for Y on B, and only Y gets it, from X\'s proven key', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas: [a, b], newToken } = await mesh(t, 2);
  const token = await newToken({ reusable: true });
  const [x, y, z] = [await joinNode(a!.base, token, 'x'), await joinNode(b!.base, token, 'y'), await joinNode(b!.base, token, 'z')];
  const mx = mini(t, a!.base, x.kp);
  const my = mini(t, b!.base, y.kp);
  const mz = mini(t, b!.base, z.kp);
  for (const m of [mx, my, mz]) await m.next(isType('snapshot'), 'snapshot');
  await until('A shows Y online', () => a!.c.registry.peer(y.body.node.id)?.online, { timeoutMs: 5000 });
  const endpoints = ['198.51.100.7:41641'];
  mx.send({ type: 'call-me-maybe', to: encodeKey(y.kp.publicKey), endpoints });
  const got = await my.next((m): m is CallMeMaybeIn => m.type === 'call-me-maybe', 'call-me-maybe on B');
  assert.deepEqual(got, { type: 'call-me-maybe', from: encodeKey(x.kp.publicKey), endpoints });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(mz.frames.filter((m) => m.type === 'call-me-maybe').length, 0, 'nobody else on B gets it');
  assert.equal(my.frames.filter((m) => m.type === 'call-me-maybe').length, 1, 'once');
});

test('a node that joined through one replica and connects to the other at once is served; only a stranger hears 4404', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas: [a, b], newToken } = await mesh(t, 2);
  const token = await newToken({ reusable: true });
  // Behind a load balancer the join and the control connection often land on different
  // replicas, the second before it has followed the join's version. 4404 would make the
  // agent give up for good; the replica catches up with the feed before it says that.
  const refused: string[] = [];
  for (let i = 0; i < 40; i++) {
    const [via, to] = i % 2 === 0 ? [a!, b!] : [b!, a!];
    const j = await joinNode(via.base, token, `hasty-${i}`);
    assert.equal(j.status, 200);
    const m = connectMiniAgent(to.base, j.kp);
    try {
      await m.next(isType('snapshot'), `snapshot for hasty-${i}`);
      assert.ok(m.peers.has(j.body.node.id), 'its own entry is in the map');
    } catch {
      refused.push(`hasty-${i}: ${JSON.stringify(m.frames.filter(isType('error')))}`);
    } finally {
      await m.close();
    }
  }
  assert.deepEqual(refused, []);
  const stranger = connectMiniAgent(b!.base, generateKeyPair());
  assert.equal((await stranger.closed).code, 4404);
  assert.equal(stranger.frames.filter(isType('error')).at(-1)?.code, 'KNIT_ERR_NODE_UNKNOWN');
});

test('a single-use token raced across three replicas yields one node; a reusable one, unique names and addresses', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas, store, newToken } = await mesh(t, 3);
  const single = await newToken();
  const raced = await Promise.all(Array.from({ length: 30 }, (_, i) => joinNode(replicas[i % 3]!.base, single, `racer-${i}`)));
  assert.equal(raced.filter((r) => r.status === 200).length, 1, `statuses: ${raced.map((r) => r.status)}`);
  const refused = raced.filter((r) => r.status !== 200);
  assert.ok(refused.every((r) => r.status === 401 && r.body.error?.code === 'KNIT_ERR_TOKEN_USED'), JSON.stringify(refused.map((r) => [r.status, r.body.error?.code])));
  assert.equal((await store.nodes()).length, 1, 'one node in the database');

  const reusable = await newToken({ reusable: true });
  const burst = await Promise.all(Array.from({ length: 60 }, (_, i) => joinNode(replicas[i % 3]!.base, reusable, 'ci')));
  assert.deepEqual(burst.map((r) => r.status), burst.map(() => 200));
  const names = burst.map((r) => r.body.node.name);
  const unique = <T>(xs: T[]) => new Set(xs).size === xs.length;
  assert.ok(unique(names), `duplicate names: ${names.sort()}`);
  assert.ok(names.every((name) => /^ci(-[0-9]+)?$/.test(name)), `names: ${names}`);
  assert.ok(names.includes('ci'));
  assert.ok(unique(burst.map((r) => r.body.node.id)), 'unique ids');
  assert.ok(unique(burst.map((r) => r.body.node.addresses[0])), 'unique IPv4 addresses');
  assert.ok(unique(burst.map((r) => r.body.node.addresses[1])), 'unique IPv6 addresses');
  const rows = await store.nodes();
  assert.equal(rows.length, 61);
  assert.ok(unique(rows.map((r) => r.name)) && unique(rows.map((r) => r.ipv4)) && unique(rows.map((r) => r.ipIndex)));
  await until('every replica holds all 61 nodes', () => replicas.every((r) => r.c.registry.nodeCount === 61), { timeoutMs: 10_000 });
  await settle(replicas, store);
  for (const r of replicas) assert.deepEqual(comparable(r.c.registry.peers()), comparable(replicas[0]!.c.registry.peers()));
  const dense = names.length === 60 && new Set(names).size === 60 && Array.from({ length: 59 }, (_, i) => `ci-${i + 2}`).every((x) => names.includes(x));
  t.diagnostic(`60 joins over 3 replicas named ${dense ? 'ci, ci-2 … ci-60 exactly' : `with gaps: ${names.sort().join(' ')}`}`);
});

test('resume on another replica: a client that left A at version V gets only the deltas since V from B', { timeout: 60_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const { replicas: [a, b], store, newToken } = await mesh(t, 2);
  const token = await newToken({ reusable: true });
  const x = await joinNode(a!.base, token, 'x');
  const y = await joinNode(b!.base, token, 'y');
  const z = await joinNode(a!.base, token, 'z');
  const my = mini(t, a!.base, y.kp);
  const mz = mini(t, b!.base, z.kp);
  const mx = mini(t, a!.base, x.kp);
  await Promise.all([mx, my, mz].map((m) => m.next(isType('snapshot'), 'snapshot')));
  const before = await settle([a!, b!], store);
  await until('X holds the settled version', () => mx.version === before, { timeoutMs: 5000 });
  const held = { version: mx.version, peers: [...mx.peers.values()] };
  await mx.close();

  // Meanwhile: X goes offline (A), Y reports on A, Z on B, and W joins through B.
  my.send({ type: 'endpoints', endpoints: ['127.0.0.1:42001'], natType: 'none' });
  mz.send({ type: 'endpoints', endpoints: ['127.0.0.1:42002'], natType: 'none' });
  const w = await joinNode(b!.base, token, 'w');
  assert.equal(w.status, 200);
  await until('both replicas show all of it', () => [a!, b!].every((r) => r.c.registry.peer(x.body.node.id)?.online === false &&
    r.c.registry.peer(y.body.node.id)?.endpoints[0] === '127.0.0.1:42001' && r.c.registry.peer(z.body.node.id)?.endpoints[0] === '127.0.0.1:42002' &&
    r.c.registry.peer(w.body.node.id) !== undefined), { timeoutMs: 10_000 });
  const missedUpTo = await settle([a!, b!], store);
  assert.ok(missedUpTo > held.version, 'versions were committed while X was away');

  const snapshotsBefore = b!.c.metrics.snapshotsSent;
  const back = mini(t, b!.base, x.kp, { resume: held });
  await back.next(isType('welcome'), 'welcome from B');
  await back.next(isType('delta'), 'the first delta');
  await until('X back online everywhere', () => a!.c.registry.peer(x.body.node.id)?.online && b!.c.registry.peer(x.body.node.id)?.online, { timeoutMs: 5000 });
  const after = await settle([a!, b!], store);
  await until('X at the replicas\' version', () => back.version === after, { timeoutMs: 5000 });

  assert.equal(back.frames.filter(isType('snapshot')).length, 0, 'no snapshot');
  assert.equal(b!.c.metrics.snapshotsSent, snapshotsBefore);
  const deltas = back.frames.filter(isType('delta'));
  assert.equal(deltas[0]!.from, held.version, 'the first delta starts where X left');
  assert.equal(deltas.at(-1)!.version, after);
  assert.equal(a!.c.hub.log.version, after);
  assert.equal(b!.c.hub.log.version, after);
  assert.deepEqual(comparable(back.peers.values()), comparable(b!.c.registry.peers()), 'deltas alone rebuilt the whole map');
  t.diagnostic(`resumed at ${held.version}, ${deltas.length} deltas to ${after}`);
});

// ---- failover with real agents and real replica processes ----------------------

/**
 * The "load balancer": a TCP forwarder that sends each new connection to the first
 * replica not marked dead, and closes the client's side when the replica's side closes
 * (as a replica killed outright does).
 */
async function startForwarder() {
  const backends: { port: number; dead: boolean; connections: number }[] = [];
  const sockets = new Set<Socket>();
  const srv = createServer((client) => {
    sockets.add(client);
    const target = backends.find((b) => !b.dead);
    if (!target) {
      client.destroy();
      return;
    }
    target.connections++;
    const upstream = connect(target.port, '127.0.0.1');
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', () => {
        sockets.delete(s);
        end();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    backends,
    add(port: number) { backends.push({ port, dead: false, connections: 0 }); },
    markDead(port: number) { for (const b of backends) if (b.port === port) b.dead = true; },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      srv.close(() => resolve());
    }),
  };
}

interface ReplicaProcess { child: ChildProcess; exited: Promise<unknown>; port: number; replica: string; admin: string | null; stderr: () => string }

async function spawnReplica(storeUrl: string, publicUrl: string): Promise<ReplicaProcess> {
  const fixture = join(process.cwd(), 'dist', 'test', 'coordinator', 'fixtures', 'run-replica.js');
  // The store URL (with its password) travels in the environment, not argv: `ps` shows argv.
  const child = spawn(process.execPath, [fixture], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KNIT_STORE: storeUrl, KNIT_PUBLIC_URL: publicUrl } });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise((r) => child.once('exit', r));
  const line = await Promise.race([
    new Promise<string>((r) => createInterface({ input: child.stdout! }).once('line', r)),
    exited.then(() => { throw new Error(`replica exited before it was ready: ${err}`); }),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`replica not ready in 15 s: ${err}`)), 15_000).unref()),
  ]);
  const ready = JSON.parse(line) as { httpPort: number; replica: string; admin: string | null };
  registerSecret(ready.admin);
  return { child, exited, port: ready.httpPort, replica: ready.replica, admin: ready.admin, stderr: () => err };
}

/** A logger that keeps only the agent's control status changes, with when they happened. */
function statusRecorder(events: { at: number; status: string }[]): Logger {
  const l: Logger = {
    debug() {}, warn() {}, error() {},
    info(msg, fields) { if (msg === 'coordinator connection') events.push({ at: performance.now(), status: String(fields?.status) }); },
    child: () => l,
  };
  return l;
}

interface RealAgent { agent: Agent; engine: MemoryEngine; nodeKey: string; name: string; id: number; events: { at: number; status: string }[] }

/** Joins through the load balancer (the URL in the token) and starts a real agent: memory engine, loopback UDP, no LAN discovery. */
async function startAgent(t: TestContext, token: string, name: string): Promise<RealAgent> {
  const kp = generateKeyPair();
  const nodeKey = encodeKey(kp.publicKey);
  const parsed = parseJoinToken(token);
  const res = await joinMesh(parsed, token, { privateKey: kp.privateKey, publicKey: nodeKey, discoKey: encodeKey(generateKeyPair().publicKey), hostname: name });
  const udp = await openUdpSocket({ port: 0, host: '127.0.0.1' });
  const engine = createMemoryEngine({ handshakes: MEMORY_HANDSHAKES });
  const events: RealAgent['events'] = [];
  const agent = new Agent(
    {
      identity: { privateKey: kp.privateKey, publicKey: nodeKey },
      node: { coordinatorUrl: parsed.url, coordinatorKey: res.coordinatorKey, id: res.node.id, name: res.node.name, addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix },
      stunHost: '127.0.0.1', iface: name, keepaliveS: 25, portMode: 'memory',
    },
    { clock: systemClock, random: defaultRandomBytes, logger: statusRecorder(events), udp, transport: wsTransport, engine, localAddresses: () => ['127.0.0.1'] },
  );
  t.after(() => agent.stop());
  await agent.start();
  return { agent, engine, nodeKey, name: res.node.name, id: res.node.id, events };
}

async function getJson<T>(url: string, admin?: string): Promise<T> {
  const r = await fetch(url, { headers: admin ? { authorization: `Bearer ${admin}` } : {}, signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200, `${url}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

test('kill -9 of the replica real agents use: they resume on the other one within seconds, tunnels up throughout', { timeout: 120_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const url = await newDatabase();
  const lb = await startForwarder();
  t.after(() => lb.close());
  const replicaA = await spawnReplica(url, lb.url);
  const replicaB = await spawnReplica(url, lb.url);
  t.after(() => {
    for (const r of [replicaA, replicaB]) {
      if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
      if (r.stderr()) saveTestLog(`replica-${r.replica}`, r.stderr());
    }
  });
  lb.add(replicaA.port);
  lb.add(replicaB.port);
  const admin = replicaA.admin;
  assert.ok(admin, 'the first replica made the admin token');
  assert.equal(replicaB.admin, null, 'the second one did not');
  const baseA = `http://127.0.0.1:${replicaA.port}`;
  const baseB = `http://127.0.0.1:${replicaB.port}`;
  const r = await fetch(`${lb.url}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ reusable: true }) });
  assert.equal(r.status, 200);
  const token = ((await r.json()) as { token: string }).token;
  registerSecret(token);
  assert.equal(parseJoinToken(token).url, lb.url, 'tokens carry the load balancer\'s URL');

  // Three agents that must come through, and a fourth that goes down with replica A.
  const agents: RealAgent[] = [];
  for (let i = 0; i < 4; i++) agents.push(await startAgent(t, token, `agent${i}`));
  const survivors = agents.slice(0, 3);
  const victim = agents[3]!;
  const explain = () => JSON.stringify(agents.map((a) => ({ name: a.name, ...a.agent.status().coordinator, peers: a.agent.status().peers.map((p) => `${p.name}:${p.path}:${p.online}`) })));
  await until('every agent has a direct path to every other', () => agents.every((a) => {
    const s = a.agent.status();
    return s.coordinator.status === 'connected' && s.peers.length === agents.length - 1 && s.peers.every((p) => p.path !== 'none' && p.online);
  }), { timeoutMs: 30_000, explain });
  const healthA = await getJson<{ online: number; version: number }>(`${baseA}/healthz`);
  assert.equal(healthA.online, 4, 'every agent is on A (the first live replica)');
  await until('B follows A', async () => (await getJson<{ version: number }>(`${baseB}/healthz`)).version === (await getJson<{ version: number }>(`${baseA}/healthz`)).version, { timeoutMs: 5000 });
  const snapshotsOnB = await metric(baseB, 'knit_snapshots_sent_total');

  // Watch every survivor's paths to the other survivors, and its engine's peers, every 100 ms.
  const lost: string[] = [];
  let polls = 0;
  const watch = setInterval(() => {
    polls++;
    for (const a of survivors) {
      const s = a.agent.status();
      for (const b of survivors) {
        if (b === a) continue;
        const p = s.peers.find((x) => x.nodeKey === b.nodeKey);
        if (!p || p.path === 'none') lost.push(`${a.name}→${b.name}: path ${p?.path ?? 'gone from the map'}`);
      }
      const configured = new Set(a.engine.applied()?.peers.map((p) => p.publicKey));
      for (const b of agents) if (b !== a && !configured.has(b.nodeKey)) lost.push(`${a.name}: engine lost ${b.name}`);
    }
  }, 100);
  t.after(() => clearInterval(watch));

  lb.markDead(replicaA.port); // health check failed: new connections go to B
  const killedAt = performance.now();
  replicaA.child.kill('SIGKILL');
  await victim.agent.stop(); // its host went down with the replica: it never reconnects
  await replicaA.exited;

  const reconnectedAt = (a: RealAgent) => a.events.find((e) => e.at > killedAt && e.status === 'connected')?.at;
  await until('every survivor reconnected', () => survivors.every((a) => reconnectedAt(a) !== undefined && a.agent.status().coordinator.status === 'connected'), { timeoutMs: 15_000, explain });
  const reconnectMs = survivors.map((a) => Math.round(reconnectedAt(a)! - killedAt));
  const healthB = await getJson<{ online: number }>(`${baseB}/healthz`);
  assert.equal(healthB.online, 3, 'the survivors are on B');
  await until('every survivor holds B\'s version', async () => {
    const v = (await getJson<{ version: number }>(`${baseB}/healthz`)).version;
    return survivors.every((a) => a.agent.mapInfo.version === v);
  }, { timeoutMs: 10_000, explain });
  const resumedAt = performance.now();
  assert.equal(await metric(baseB, 'knit_snapshots_sent_total'), snapshotsOnB, 'they resumed from their versions: B sent no snapshot');
  // A little longer under watch: whatever follows a reconnect (reports, deltas) mustn't disturb the tunnels.
  await new Promise((r) => setTimeout(r, 1000));
  clearInterval(watch);
  assert.deepEqual(lost, [], `the tunnels dropped during failover (${polls} polls)`);
  t.diagnostic(`reconnected to B after ${reconnectMs.join(', ')} ms (kill -9 → control status connected); map at B's version ${Math.round(resumedAt - killedAt)} ms after the kill; ${polls} polls of paths and engine, no loss`);
  assert.ok(Math.max(...reconnectMs) < 15_000);

  // The store must say who serves each session now: B. A replica that takes a node's session
  // over records that in the store even though no peer's map changes (the node was online
  // already), or the release of the dead replica — once the survivor has seen its heartbeat
  // stand still for REPLICA_TIMEOUT_MS, too long to wait for here — would mark offline every
  // node that came over to B along with the ones that went down with A.
  const store = await PostgresStore.open(url, { poolSize: 1 });
  try {
    const holders = async () => new Map((await store.nodes()).map((n) => [n.id, n.onlineReplica]));
    await until('the store records B as the survivors\' replica', async () => {
      const h = await holders();
      return survivors.every((a) => h.get(a.id) === replicaB.replica);
    }, { timeoutMs: 5000, explain: async () => JSON.stringify({ A: replicaA.replica, B: replicaB.replica, holders: [...await holders()] }) });
    assert.equal((await holders()).get(victim.id), replicaA.replica, 'the victim is still on the dead replica\'s books until it is released');
  } finally {
    await store.close();
  }
});
