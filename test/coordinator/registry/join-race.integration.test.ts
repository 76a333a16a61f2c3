/**
 * Token consumption and address allocation under real concurrency: several
 * threads, each with its own SQLite connection to one database file, released
 * at the same instant and joining with the same token. Inside one process
 * better-sqlite3 serialises everything anyway; separate connections are where
 * BEGIN IMMEDIATE has to earn its keep.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { ManualClock } from '../../helpers/manual-clock.js';
import { Registry, type TokenOptions } from '../../../coordinator/registry/registry.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

type Result = { ok: true; id: number; name: string; ip: string } | { ok: false; code: string };

async function race(tokenOptions: TokenOptions, workers: number, joinsEach: number): Promise<{ results: Result[]; registry: Registry }> {
  const dir = mkdtempSync(join(tmpdir(), 'knit-race-'));
  dirs.push(dir);
  const dbPath = join(dir, 'knit.db');
  const registry = await Registry.open(new SqliteStore(dbPath), { clock: new ManualClock(Date.now()), url: 'http://127.0.0.1:1', serves: false });
  const token = (await registry.createToken(tokenOptions)).token;
  const reopen = () => Registry.open(new SqliteStore(dbPath), { clock: new ManualClock(Date.now()), url: 'http://127.0.0.1:1', serves: false });
  const barrier = new SharedArrayBuffer(4);
  const url = new URL('../fixtures/join-worker.js', import.meta.url);
  const threads = Array.from({ length: workers }, () => new Worker(url, { workerData: { dbPath, token, joins: joinsEach, barrier, name: 'racer' } }));
  try {
    const settle = <T>(pick: (m: Record<string, unknown>) => T | undefined) => Promise.all(threads.map((w) => new Promise<T>((resolve, reject) => {
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`worker exited (${code}) early`)));
      w.on('message', (m: Record<string, unknown>) => { const v = pick(m); if (v !== undefined) resolve(v); });
    })));
    const ready = settle((m) => (m.ready ? true : undefined));
    const done = settle((m) => m.results as Result[] | undefined);
    done.catch(() => {}); // awaited below; a failure before then must not go unhandled
    await ready;
    const flag = new Int32Array(barrier);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    const results = (await done).flat();
    return { results, registry: await reopen() };
  } finally {
    // Whatever happened, no worker is left blocked on the barrier (it would keep the test alive).
    Atomics.store(new Int32Array(barrier), 0, 1);
    Atomics.notify(new Int32Array(barrier), 0);
    await Promise.all(threads.map((w) => w.terminate()));
    await registry.store.close();
  }
}

test('threads racing one single-use token on separate connections: exactly one node', async () => {
  const { results, registry } = await race({}, 8, 3);
  const ok = results.filter((r) => r.ok);
  assert.equal(ok.length, 1);
  assert.deepEqual(new Set(results.filter((r) => !r.ok).map((r) => (r as { code: string }).code)), new Set(['KNIT_ERR_TOKEN_USED']));
  assert.equal(registry.nodeCount, 1);
  await registry.store.close();
});

test('threads racing a 5-use token: exactly five nodes, each with its own address and name', async () => {
  const { results, registry } = await race({ reusable: true, uses: 5 }, 8, 2);
  const ok = results.filter((r): r is Extract<Result, { ok: true }> => r.ok);
  assert.equal(ok.length, 5);
  assert.equal(new Set(ok.map((r) => r.ip)).size, 5, 'no address handed out twice');
  assert.equal(new Set(ok.map((r) => r.name)).size, 5, 'no name handed out twice');
  assert.equal(registry.nodeCount, 5);
  assert.equal((await registry.listTokens())[0]!.usesLeft, 0);
  await registry.store.close();
});
