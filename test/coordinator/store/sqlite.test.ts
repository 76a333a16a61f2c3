import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { KnitError } from '../../../shared/errors.js';
import { MIGRATIONS } from '../../../coordinator/store/schema.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function dbPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-store-'));
  dirs.push(d);
  return join(d, 'knit.db');
}

async function codeOf(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof KnitError) return e.code;
    throw e;
  }
  return undefined;
}

test('a new store is migrated to the latest schema, in WAL mode with synchronous=FULL; reopening changes nothing', async () => {
  const path = dbPath();
  const s = new SqliteStore(path);
  await s.write((tx) => tx.setMeta('k', 'v'));
  await s.close();
  const raw = new Database(path, { readonly: true });
  assert.equal(raw.pragma('user_version', { simple: true }), MIGRATIONS.length);
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  raw.close();
  const again = new SqliteStore(path);
  assert.equal(await again.getMeta('k'), 'v');
  // synchronous is per connection: check the store's own.
  assert.equal((again as unknown as { db: Database.Database }).db.pragma('synchronous', { simple: true }), 2, 'FULL');
  await again.close();
});

test('a database from a newer Knit is refused with KNIT_ERR_STORE, untouched', async () => {
  const path = dbPath();
  const raw = new Database(path);
  raw.pragma(`user_version = ${MIGRATIONS.length + 1}`);
  raw.close();
  assert.equal(await codeOf(() => new SqliteStore(path)), 'KNIT_ERR_STORE');
  const check = new Database(path, { readonly: true });
  assert.equal(check.pragma('user_version', { simple: true }), MIGRATIONS.length + 1);
  check.close();
});

test('a file that is not a database is KNIT_ERR_STORE, with a message that says what to do', () => {
  const path = dbPath();
  writeFileSync(path, Buffer.alloc(8192, 0x5a));
  try {
    new SqliteStore(path);
    assert.fail('opened a corrupt file');
  } catch (e) {
    assert.ok(e instanceof KnitError);
    assert.equal(e.code, 'KNIT_ERR_STORE');
    assert.match(e.message, /knit\.db/);
  }
});

test('a write lock held by another connection past the busy timeout is KNIT_ERR_STORE_LOCKED', async () => {
  const path = dbPath();
  const store = new SqliteStore(path, { busyTimeoutMs: 50 });
  const other = new Database(path);
  other.exec('BEGIN IMMEDIATE');
  try {
    assert.equal(await codeOf(() => store.write((tx) => tx.setMeta('x', '1'))), 'KNIT_ERR_STORE_LOCKED');
  } finally {
    other.exec('ROLLBACK');
    other.close();
  }
  await store.write((tx) => tx.setMeta('x', '2')); // and it recovers once the lock is gone
  assert.equal(await store.getMeta('x'), '2');
  await store.close();
});

test('a database from before the change feed is migrated: the version moves on, so every agent resuming from it gets a snapshot', async () => {
  const path = dbPath();
  const raw = new Database(path);
  raw.exec(MIGRATIONS[0]!);
  raw.pragma('user_version = 1');
  raw.prepare("INSERT INTO meta(key, value) VALUES ('version', '41')").run();
  raw.close();
  const store = new SqliteStore(path);
  assert.equal(await store.latestVersion(), 42);
  assert.deepEqual(await store.changesSince(0, 10), [], 'no history: older versions are beyond the log');
  await store.close();
});
