/**
 * The coordinator's store on SQLite (better-sqlite3), the embedded default:
 * WAL journal and synchronous=FULL, so a write that resolved is on disk and
 * survives kill -9. Implements the async Store interface (store.ts) over a
 * synchronous driver: every operation, read or write, runs in turn on one
 * in-process queue, so a reader never sees a write transaction half done
 * (the connection is shared) and `write()` can await between statements.
 * `write()` is one BEGIN IMMEDIATE transaction, which also serialises writers
 * across processes (the admin CLI opens the same file).
 *
 * This module knows rows, not rules: token checks and address allocation
 * live in registry/.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { KnitError } from '../../shared/errors.js';
import type { NatType, PeerChange } from '../../shared/wire/control.js';
import { MIGRATIONS } from './schema.js';
import type { ChangeRow, NewNode, NewToken, NodeRow, Store, StoreTx, TokenRow } from './store.js';

export type { NodeRow, TokenRow } from './store.js';

type Raw = Record<string, unknown>;

function toToken(r: Raw): TokenRow {
  return {
    id: r.id as string, secretHash: r.secret_hash as string, reusable: r.reusable === 1,
    usesLeft: r.uses_left as number | null, ephemeral: r.ephemeral === 1, expires: r.expires as number | null,
    tags: JSON.parse(r.tags as string) as string[], created: r.created as number, revoked: r.revoked === 1, joins: r.joins as number,
  };
}

function toNode(r: Raw): NodeRow {
  return {
    id: r.id as number, nodeKey: r.node_key as string, discoKey: r.disco_key as string, name: r.name as string,
    ipIndex: r.ip_index as number, ipv4: r.ipv4 as string, ipv6: r.ipv6 as string, tags: JSON.parse(r.tags as string) as string[],
    ephemeral: r.ephemeral === 1, created: r.created as number, lastSeen: r.last_seen as number,
    endpoints: JSON.parse(r.endpoints as string) as string[], natType: r.nat_type as NatType, tokenId: r.token_id as string | null,
    onlineReplica: (r.online_replica as string | null) ?? null,
  };
}

/** Maps SQLite failures to the store's two operational errors. */
export function storeError(err: unknown, path: string): KnitError {
  const code = (err as { code?: string }).code ?? '';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new KnitError('KNIT_ERR_STORE_LOCKED', `the database ${path} is locked by another process`, { cause: err });
  }
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_READONLY') {
    return new KnitError('KNIT_ERR_STORE', `the database ${path} cannot be used (${code}); restore it from a backup or move it away`, { cause: err });
  }
  return new KnitError('KNIT_ERR_STORE', `the database ${path} failed: ${(err as Error).message}`, { cause: err });
}

export class SqliteStore implements Store {
  readonly engine = 'sqlite';
  private readonly db: Database.Database;
  private readonly stmts;
  private readonly tx: StoreTx;
  /** The tail of the operation queue: each operation starts when the previous one settled. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly commitListeners = new Set<() => void>();
  private savepoints = 0;

  /**
   * Opens (and migrates) the store; `:memory:` for the simulator and unit tests.
   * `busyTimeoutMs` (default 5 s) rides out an admin command's short write; a
   * lock held longer than that is KNIT_ERR_STORE_LOCKED.
   */
  constructor(readonly path: string, options: { busyTimeoutMs?: number } = {}) {
    let db: Database.Database | undefined;
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      db = this.db = new Database(path, { timeout: options.busyTimeoutMs ?? 5000 });
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      this.migrate();
    } catch (err) {
      try { db?.close(); } catch { /* the error below says what matters */ }
      if (err instanceof KnitError) throw err;
      throw storeError(err, path);
    }
    this.stmts = {
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      bumpMeta: db.prepare(`INSERT INTO meta(key, value) VALUES (?, '1')
        ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) RETURNING value`),
      insertAdmin: db.prepare('INSERT INTO admin_credentials(id, secret_hash, created) VALUES (?, ?, ?)'),
      getAdmin: db.prepare('SELECT secret_hash FROM admin_credentials WHERE id = ?'),
      countAdmins: db.prepare('SELECT COUNT(*) AS n FROM admin_credentials'),
      insertToken: db.prepare(`INSERT INTO join_tokens(id, secret_hash, reusable, uses_left, ephemeral, expires, tags, created)
        VALUES (@id, @secretHash, @reusable, @usesLeft, @ephemeral, @expires, @tags, @created)`),
      getToken: db.prepare('SELECT * FROM join_tokens WHERE id = ?'),
      listTokens: db.prepare('SELECT * FROM join_tokens ORDER BY created'),
      revokeToken: db.prepare('UPDATE join_tokens SET revoked = 1 WHERE id = ?'),
      useToken: db.prepare(`UPDATE join_tokens SET joins = joins + 1, uses_left = CASE WHEN uses_left IS NULL THEN NULL ELSE uses_left - 1 END
        WHERE id = ? AND revoked = 0 AND (uses_left IS NULL OR uses_left > 0)`),
      insertNode: db.prepare(`INSERT INTO nodes(node_key, disco_key, name, ip_index, ipv4, ipv6, tags, ephemeral, created, last_seen, endpoints, nat_type, token_id)
        VALUES (@nodeKey, @discoKey, @name, @ipIndex, @ipv4, @ipv6, @tags, @ephemeral, @created, @lastSeen, '[]', 'unknown', @tokenId)`),
      nodeByKey: db.prepare('SELECT * FROM nodes WHERE node_key = ?'),
      nodeById: db.prepare('SELECT * FROM nodes WHERE id = ?'),
      nameTaken: db.prepare('SELECT 1 FROM nodes WHERE name = ?'),
      allNodes: db.prepare('SELECT * FROM nodes ORDER BY id'),
      deleteNode: db.prepare('DELETE FROM nodes WHERE id = ?'),
      saveSession: db.prepare('UPDATE nodes SET endpoints = @endpoints, nat_type = @natType, disco_key = @discoKey, last_seen = @lastSeen WHERE id = @id'),
      setLastSeen: db.prepare('UPDATE nodes SET last_seen = ? WHERE id = ?'),
      claim: db.prepare('UPDATE nodes SET online_replica = ? WHERE id = ?'),
      letGo: db.prepare('UPDATE nodes SET online_replica = NULL WHERE id = ? AND online_replica = ?'),
      holder: db.prepare('SELECT online_replica FROM nodes WHERE id = ?'),
      release: db.prepare('UPDATE nodes SET online_replica = NULL WHERE online_replica = ? RETURNING id'),
      takeFreeIp: db.prepare('DELETE FROM free_ip_indexes WHERE ip_index = (SELECT MIN(ip_index) FROM free_ip_indexes) RETURNING ip_index'),
      addFreeIp: db.prepare('INSERT OR IGNORE INTO free_ip_indexes(ip_index) VALUES (?)'),
      insertChange: db.prepare('INSERT INTO peer_changes(version, changes, origin) VALUES (?, ?, ?)'),
      changesSince: db.prepare('SELECT version, changes, origin FROM peer_changes WHERE version > ? ORDER BY version LIMIT ?'),
      pruneChanges: db.prepare('DELETE FROM peer_changes WHERE version <= ?'),
      heartbeat: db.prepare('INSERT INTO replicas(id, beat) VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET beat = beat + 1'),
      replicaBeats: db.prepare('SELECT id, beat FROM replicas ORDER BY id'),
      dropReplica: db.prepare('DELETE FROM replicas WHERE id = ?'),
    };
    this.tx = this.makeTx();
  }

  get where(): string {
    return this.path;
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new KnitError('KNIT_ERR_STORE', `the database was written by a newer Knit (schema ${current}); upgrade Knit`);
    }
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      }).immediate();
    }
  }

  /** SQLite's own failures become KnitErrors; anything else (a caller's error inside write) passes through. */
  private driverError(err: unknown): unknown {
    return err instanceof Database.SqliteError ? storeError(err, this.path) : err;
  }

  /** Queues `job` after every operation before it; SQLite errors become KnitErrors. */
  private enqueue<T>(job: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      try {
        return await job();
      } catch (err) {
        throw this.driverError(err);
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.enqueue(async () => {
      const before = this.latestVersionNow();
      this.db.exec('BEGIN IMMEDIATE');
      let result: T;
      try {
        result = await fn(this.tx);
        this.db.exec('COMMIT');
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
      if (this.latestVersionNow() !== before) for (const l of this.commitListeners) l();
      return result;
    });
  }

  private latestVersionNow(): number {
    return Number((this.stmts.getMeta.get('version') as { value: string } | undefined)?.value ?? '0');
  }

  /** The transaction handle; each method turns SQLite's failures (a unique constraint …) into KnitErrors. */
  private makeTx(): StoreTx {
    const tx = this.txMethods();
    for (const [name, fn] of Object.entries(tx) as [keyof StoreTx, (...a: unknown[]) => Promise<unknown>][]) {
      if (name === 'savepoint') continue;
      (tx as unknown as Record<string, unknown>)[name] = async (...args: unknown[]) => {
        try {
          return await fn(...args);
        } catch (err) {
          throw this.driverError(err);
        }
      };
    }
    return tx;
  }

  private txMethods(): StoreTx {
    const s = this.stmts;
    return {
      getMeta: async (key) => (s.getMeta.get(key) as { value: string } | undefined)?.value,
      setMeta: async (key, value) => { s.setMeta.run(key, value); },
      bumpMeta: async (key) => Number((s.bumpMeta.get(key) as { value: string }).value) - 1,
      insertAdmin: async (id, secretHash, now) => { s.insertAdmin.run(id, secretHash, now); },
      adminCount: async () => (s.countAdmins.get() as { n: number }).n,
      insertToken: async (t: NewToken) => {
        s.insertToken.run({ ...t, reusable: t.reusable ? 1 : 0, ephemeral: t.ephemeral ? 1 : 0, tags: JSON.stringify(t.tags) });
      },
      token: async (id) => { const r = s.getToken.get(id) as Raw | undefined; return r && toToken(r); },
      revokeToken: async (id) => s.revokeToken.run(id).changes === 1,
      useToken: async (id) => s.useToken.run(id).changes === 1,
      insertNode: async (n: NewNode) => Number(s.insertNode.run({ ...n, tags: JSON.stringify(n.tags), ephemeral: n.ephemeral ? 1 : 0 }).lastInsertRowid),
      nodeByKey: async (k) => { const r = s.nodeByKey.get(k) as Raw | undefined; return r && toNode(r); },
      nodeById: async (id) => { const r = s.nodeById.get(id) as Raw | undefined; return r && toNode(r); },
      nameTaken: async (name) => s.nameTaken.get(name) !== undefined,
      deleteNode: async (id) => s.deleteNode.run(id).changes === 1,
      saveSessionState: async (rows) =>
        rows.filter((r) => s.saveSession.run({ ...r, endpoints: JSON.stringify(r.endpoints) }).changes === 1).map((r) => r.id),
      recordSessions: async (replica, held, released) => {
        for (const id of held) s.claim.run(replica, id);
        return released.filter((id) => s.letGo.run(id, replica).changes === 0
          && ((s.holder.get(id) as { online_replica: string | null } | undefined)?.online_replica ?? null) !== null);
      },
      setLastSeen: async (ids, when) => {
        for (const id of ids) s.setLastSeen.run(when, id);
      },
      releaseReplicas: async (replicas) => replicas.flatMap((r) => (s.release.all(r) as { id: number }[]).map((x) => x.id)),
      takeFreeIpIndex: async () => (s.takeFreeIp.get() as { ip_index: number } | undefined)?.ip_index,
      freeIpIndex: async (index) => { s.addFreeIp.run(index); },
      appendChange: async (changes: PeerChange[], origin = '') => {
        const version = Number((s.bumpMeta.get('version') as { value: string }).value);
        s.insertChange.run(version, JSON.stringify(changes), origin);
        return version;
      },
      heartbeat: async (replica) => { s.heartbeat.run(replica); },
      replicaBeats: async () => s.replicaBeats.all() as { id: string; beat: number }[],
      dropReplica: async (replica) => { s.dropReplica.run(replica); },
      savepoint: async <T>(fn: () => Promise<T>): Promise<T> => {
        const name = `sp${++this.savepoints}`;
        this.db.exec(`SAVEPOINT ${name}`);
        try {
          const r = await fn();
          this.db.exec(`RELEASE ${name}`);
          return r;
        } catch (err) {
          this.db.exec(`ROLLBACK TO ${name}`);
          this.db.exec(`RELEASE ${name}`);
          throw err;
        }
      },
    };
  }

  getMeta(key: string): Promise<string | undefined> {
    return this.enqueue(() => (this.stmts.getMeta.get(key) as { value: string } | undefined)?.value);
  }
  adminHash(id: string): Promise<string | undefined> {
    return this.enqueue(() => (this.stmts.getAdmin.get(id) as { secret_hash: string } | undefined)?.secret_hash);
  }
  tokens(): Promise<TokenRow[]> {
    return this.enqueue(() => (this.stmts.listTokens.all() as Raw[]).map(toToken));
  }
  nodes(): Promise<NodeRow[]> {
    return this.enqueue(() => (this.stmts.allNodes.all() as Raw[]).map(toNode));
  }
  latestVersion(): Promise<number> {
    return this.enqueue(() => this.latestVersionNow());
  }
  changesSince(version: number, limit: number): Promise<ChangeRow[]> {
    return this.enqueue(() => (this.stmts.changesSince.all(version, limit) as { version: number; changes: string; origin: string }[])
      .map((r) => ({ version: r.version, changes: JSON.parse(r.changes) as PeerChange[], origin: r.origin })));
  }
  pruneChanges(keep: number): Promise<void> {
    return this.enqueue(() => { this.stmts.pruneChanges.run(this.latestVersionNow() - keep); });
  }

  /** One process per SQLite store: nobody else to tell. */
  async broadcast(): Promise<void> {}
  onBroadcast(): () => void {
    return () => {};
  }

  onCommit(fn: () => void): () => void {
    this.commitListeners.add(fn);
    return () => this.commitListeners.delete(fn);
  }

  close(): Promise<void> {
    return this.enqueue(() => { if (this.db.open) this.db.close(); });
  }
}
