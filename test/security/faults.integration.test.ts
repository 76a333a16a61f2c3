/**
 * Faults, with the real `knit coordinator` process (bin/knit.js) on 127.0.0.1,
 * a random port and a temporary data dir:
 *   - kill -9 in the middle of a join storm loses no acknowledged join, and the
 *     coordinator restarts cleanly (stale pid file taken over, no second admin
 *     token, SIGTERM exits 0); a 100-way race on a single-use token afterwards
 *     still makes exactly one node;
 *   - a corrupt database and one locked by another process are one clear line
 *     on stderr and exit 1, the same every time (no crash loop, nothing
 *     changed), and the coordinator starts once the cause is gone.
 * The storm comes from many loopback source addresses (127.0.0.x: one host
 * can use them all), so the per-source join limit shapes it as it would a real
 * fleet. Every loop is bounded in count and time; traffic stays on loopback.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { until } from '../helpers/until.js';
import { coordinatorTestFlags, registerSecret, saveTestLog } from './log-secrets.js';

const BIN = join(process.cwd(), 'bin', 'knit.js');
const FLAGS = coordinatorTestFlags(BIN);
const dirs: string[] = [];
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-faults-'));
  dirs.push(d);
  return d;
}

interface Proc { child: ChildProcess; stdout: () => string; stderr: () => string; exited: Promise<number | null> }

function launch(args: string[], name: string): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KNIT_LOG_LEVEL: 'debug' } });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => {
    children.delete(child);
    saveTestLog(`faults-${name}`, `--- stdout (may hold the admin token once, by design; not scanned)\n${out.replace(/knit_\S+/g, '[admin token]')}\n--- stderr\n${err}`);
    r(code);
  }));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function startCoordinator(dataDir: string, name: string) {
  const p = launch(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', ...FLAGS, '--data', dataDir], name);
  const ready = await Promise.race([
    until('coordinator ready', () => p.stderr().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.msg === 'coordinator ready'), { timeoutMs: 20_000 }),
    p.exited.then((code) => { throw new Error(`coordinator exited (${code}): ${p.stderr()}`); }),
  ]);
  const admin = /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(p.stdout())?.[1];
  registerSecret(admin);
  return { ...p, port: Number(String(ready.http).split(':').pop()), admin };
}

/** An HTTP request from a chosen loopback source address (so each "machine" has its own). */
function http(port: number, method: string, path: string, body: unknown, opts: { from?: string; admin?: string } = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({
      host: '127.0.0.1', port, method, path, localAddress: opts.from, agent: false, timeout: 20_000,
      headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...(opts.admin ? { authorization: `Bearer ${opts.admin}` } : {}) },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => { try { resolve({ status: res.statusCode!, body: JSON.parse(text) }); } catch (e) { reject(e); } });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.end(data);
  });
}

test('kill -9 of `knit coordinator` during a join storm loses no acknowledged join; it restarts cleanly; a 100-way race still makes one node', async () => {
  const dataDir = tmp();
  const first = await startCoordinator(dataDir, 'storm-1');
  assert.match(first.admin ?? '', /^knit_/, 'the first start prints the admin token');
  const { body: created } = await http(first.port, 'POST', '/v1/admin/tokens', { reusable: true }, { admin: first.admin });
  registerSecret(created.token);

  const acked: string[] = [];
  let refused = 0;
  let stop = false;
  // 16 "machines", each within its burst of 60 joins: at most 16 × 50 = 800 joins, and the kill ends it sooner.
  const worker = async (w: number) => {
    for (let i = 0; !stop && i < 50; i++) {
      const nodeKey = encodeKey(generateKeyPair().publicKey);
      try {
        const r = await http(first.port, 'POST', '/v1/join', { token: created.token, nodeKey, hostname: `storm-${w}-${i}` }, { from: `127.0.0.${10 + w}` });
        if (r.status === 200) acked.push(nodeKey);
        else refused++;
      } catch {
        return; // the connection died with the process
      }
    }
  };
  const storm = Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
  await until('a hundred joins acknowledged', () => acked.length >= 100, { timeoutMs: 30_000 });
  first.child.kill('SIGKILL'); // mid-storm: joins are in flight from sixteen sources
  assert.equal(await first.exited, null, 'killed, not exited');
  stop = true;
  await storm;
  assert.equal(refused, 0, 'no join was refused before the kill');

  const second = await startCoordinator(dataDir, 'storm-2');
  assert.equal(second.admin, undefined, 'the admin token is never printed again');
  const nodes = await http(second.port, 'GET', '/v1/admin/nodes', undefined, { admin: first.admin });
  assert.equal(nodes.status, 200, 'the first admin token still works after the crash');
  const present = new Set((nodes.body.nodes as { nodeKey: string }[]).map((n) => n.nodeKey));
  const lost = acked.filter((k) => !present.has(k));
  assert.deepEqual(lost, [], `${lost.length} of ${acked.length} acknowledged joins lost`);
  const ips = (nodes.body.nodes as { addresses: string[] }[]).map((n) => n.addresses[0]);
  assert.equal(new Set(ips).size, ips.length, 'no address handed out twice across the crash');

  // A single-use token raced by 100 machines at once: one node, 99 "used".
  const { body: single } = await http(second.port, 'POST', '/v1/admin/tokens', {}, { admin: first.admin });
  registerSecret(single.token);
  const race = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    http(second.port, 'POST', '/v1/join', { token: single.token, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: `race-${i}` }, { from: `127.0.1.${i + 1}` })));
  assert.equal(race.filter((r) => r.status === 200).length, 1);
  assert.ok(race.filter((r) => r.status !== 200).every((r) => r.status === 401 && r.body.error.code === 'KNIT_ERR_TOKEN_USED'), JSON.stringify(race.map((r) => r.status)));
  const after = await http(second.port, 'GET', '/v1/admin/nodes', undefined, { admin: first.admin });
  assert.equal(after.body.nodes.length, present.size + 1);

  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0, 'SIGTERM is a clean stop');
  assert.ok(!second.stderr().includes(created.token.slice(5, 40)) && !first.stderr().includes(first.admin!.slice(5, 40)), 'no token in the logs');
});

/** Runs the coordinator expecting it to refuse to start; returns its exit and stderr. */
async function refuses(dataDir: string, name: string): Promise<{ code: number | null; stderr: string }> {
  const p = launch(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', ...FLAGS, '--data', dataDir], name);
  const code = await Promise.race([p.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`still running: ${p.stderr()}`)), 30_000).unref())]);
  return { code, stderr: p.stderr() };
}

test('a corrupt database: one clear line, exit 1, every time, and the file is left as it was', async () => {
  const dataDir = tmp();
  const db = join(dataDir, 'knit.db');
  const garbage = Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(8192, 0xa5)]); // a header, then rubbish
  writeFileSync(db, garbage);
  for (let i = 0; i < 3; i++) { // a supervisor restarting it gets the same clear answer, not a crash loop
    const r = await refuses(dataDir, `corrupt-${i}`);
    assert.equal(r.code, 1);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^knit coordinator: the database .*knit\.db cannot be used .*restore it from a backup or move it away$/);
  }
  assert.deepEqual(readFileSync(db), garbage, 'the corrupt file is untouched');
  // Moved away as told: a fresh start works.
  rmSync(db);
  const c = await startCoordinator(dataDir, 'after-corrupt');
  c.child.kill('SIGTERM');
  assert.equal(await c.exited, 0);
});

test('a database locked by another process: one clear line and exit 1 (after the busy timeout); fine once the lock is gone', async () => {
  const dataDir = tmp();
  const c = await startCoordinator(dataDir, 'before-lock');
  c.child.kill('SIGTERM');
  assert.equal(await c.exited, 0);
  // Another process takes an exclusive lock on the database and holds it.
  const lockerSrc = `
    const Database = require(${JSON.stringify(join(process.cwd(), 'node_modules', 'better-sqlite3'))});
    const db = new Database(process.argv[1]);
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('locked-by', 'test')").run();
    process.stdout.write('locked\\n');
    setInterval(() => {}, 1000);
  `;
  const locker = spawn(process.execPath, ['-e', lockerSrc, join(dataDir, 'knit.db')], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(locker);
  let lockerOut = '';
  locker.stdout!.on('data', (d) => { lockerOut += d; });
  await until('lock held', () => lockerOut.includes('locked'), { timeoutMs: 10_000 });
  for (let i = 0; i < 2; i++) {
    const r = await refuses(dataDir, `locked-${i}`);
    assert.equal(r.code, 1);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^knit coordinator: the database .*knit\.db is locked by another process$/);
  }
  locker.kill('SIGKILL');
  await new Promise((r) => locker.once('exit', r));
  children.delete(locker);
  const again = await startCoordinator(dataDir, 'after-lock');
  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0, 'starts and stops cleanly once the lock is gone');
});
