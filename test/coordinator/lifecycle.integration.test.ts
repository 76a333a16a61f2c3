/**
 * createCoordinator's lifecycle on real sockets: idempotent start/stop, one
 * coordinator per data dir, and failures (busy ports, a corrupt database)
 * that end as one KnitError with everything released — never a half-started
 * process holding a port or the data dir.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { KnitError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/log.js';
import { createCoordinator, databasePath, type CoordinatorOptions } from '../../coordinator/index.js';
import { SqliteStore } from '../../coordinator/store/sqlite.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { connectMiniAgent } from './fixtures/mini-agent.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-life-'));
  dirs.push(d);
  return d;
}

const loopback = (port = 0) => ({ host: '127.0.0.1', port });
const make = (dataDir: string, o: Partial<CoordinatorOptions> = {}) =>
  createCoordinator({ dataDir, listen: loopback(), stun: [loopback()], ...o }, { logger: silentLogger });

async function rejectsWith(p: Promise<unknown> | (() => unknown), code: string): Promise<KnitError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(e instanceof KnitError, String(e));
    assert.equal(e.code, code);
    return e;
  }
  assert.fail(`expected ${code}`);
}

async function busyTcpPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as { port: number }).port, server };
}

test('start is idempotent (even concurrently), stop is idempotent, and a stopped coordinator stays stopped', async () => {
  const c = await make(tmp());
  const [p1, p2] = await Promise.all([c.start(), c.start()]);
  assert.deepEqual(p1, p2);
  assert.equal(p1.stunPorts.length, 1);
  assert.ok(p1.httpPort > 0);
  await Promise.all([c.stop(), c.stop()]);
  await c.stop();
  await rejectsWith(c.start(), 'KNIT_ERR_INTERNAL');
});

test('one coordinator per data dir; after it stops, the next one has the same identity', async () => {
  const dir = tmp();
  const first = await make(dir);
  await first.start();
  await rejectsWith(() => make(dir), 'KNIT_ERR_STORE_LOCKED');
  const key = first.registry.coordinatorKey;
  await first.stop();
  const second = await make(dir);
  assert.equal(second.registry.coordinatorKey, key);
  await second.stop();
});

test('a busy HTTP port is KNIT_ERR_LISTEN, and the failed start releases its STUN port and the data dir', async () => {
  const dir = tmp();
  const busy = await busyTcpPort();
  const udp = createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  const stunPort = udp.address().port;
  await new Promise<void>((r) => udp.close(() => r())); // free again: the coordinator takes it
  try {
    const c = await make(dir, { listen: loopback(busy.port), stun: [loopback(stunPort)] });
    const e = await rejectsWith(c.start(), 'KNIT_ERR_LISTEN');
    assert.match(e.message, /in use/);
    assert.equal(existsSync(join(dir, 'coordinator.pid')), false, 'the data dir is released');
    const again = createSocket('udp4');
    await new Promise<void>((resolve, reject) => { again.once('error', reject); again.bind(stunPort, '127.0.0.1', () => resolve()); });
    await new Promise<void>((r) => again.close(() => r()));
    await c.stop(); // still fine to call
    const next = await make(dir);
    await next.start();
    await next.stop();
  } finally {
    busy.server.close();
  }
});

test('a busy STUN port is KNIT_ERR_LISTEN too', async () => {
  const udp = createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  try {
    const c = await make(tmp(), { stun: [loopback(udp.address().port)] });
    const e = await rejectsWith(c.start(), 'KNIT_ERR_LISTEN');
    assert.match(e.message, /udp 127\.0\.0\.1:\d+ \(STUN\)/);
  } finally {
    udp.close();
  }
});

test('a corrupt database is KNIT_ERR_STORE at creation, with the data dir released', async () => {
  const dir = tmp();
  writeFileSync(databasePath(dir), Buffer.alloc(4096, 0x42));
  await rejectsWith(() => make(dir), 'KNIT_ERR_STORE');
  assert.equal(existsSync(join(dir, 'coordinator.pid')), false);
});

test('stopping closes sessions and writes them offline with their last-seen', async () => {
  const dir = tmp();
  const clock = new ManualClock(Date.now());
  const c = await createCoordinator({ dataDir: dir, listen: loopback(), stun: [] }, { logger: silentLogger, clock });
  const { httpPort } = await c.start();
  const admin = (await c.ensureAdmin())!;
  const base = `http://127.0.0.1:${httpPort}`;
  const token = ((await (await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: '{}' })).json()) as { token: string }).token;
  const kp = generateKeyPair();
  const joined = (await (await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey: encodeKey(kp.publicKey), hostname: 'n' }) })).json()) as { node: { id: number } };
  const m = connectMiniAgent(base, kp);
  await m.next((f) => f.type === 'snapshot', 'snapshot');
  clock.advance(5_000); // connected for 5 s (the window with its hello is written on the way)
  await c.stop();
  const closed = await m.closed;
  assert.ok([1001, 1006].includes(closed.code), String(closed.code));
  const store = new SqliteStore(databasePath(dir));
  const row = (await store.nodes()).find((n) => n.id === joined.node.id)!;
  assert.equal(row.onlineReplica, null, 'written offline by stop()');
  assert.equal(row.lastSeen, clock.wallNow(), 'last-seen is the moment it went offline, written by stop()');
  assert.ok(row.discoKey.length > 0, 'the disco key from its hello was written');
  await store.close();
});
