/**
 * The coordinator's store on SQLite (better-sqlite3): WAL journal and
 * synchronous=FULL, so a write that returned is on disk and survives kill -9.
 * better-sqlite3 is synchronous; every multi-row change runs in one
 * `BEGIN IMMEDIATE` transaction (`immediate()`), which also serialises
 * writers across processes (the admin CLI opens the same file).
 *
 * This module knows rows, not rules: token checks and address allocation
 * live in registry/.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { KnitError } from '../../shared/errors.js';
import type { NatType } from '../../shared/wire/control.js';
import { MIGRATIONS } from './schema.js';

export interface TokenRow {
  id: string;
  secretHash: string;
  reusable: boolean;
  usesLeft: number | null;
  ephemeral: boolean;
  expires: number | null;
  tags: string[];
  created: number;
  revoked: boolean;
  joins: number;
}

export interface NodeRow {
  id: number;
  nodeKey: string;
  discoKey: string;
  name: string;
  ipIndex: number;
  ipv4: string;
  ipv6: string;
  tags: string[];
  ephemeral: boolean;
  created: number;
  lastSeen: number;
  endpoints: string[];
  natType: NatType;
  tokenId: string | null;
}

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

export class SqliteStore {
  private readonly db: Database.Database;
  private readonly stmts;

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
      insertAdmin: db.prepare('INSERT INTO admin_credentials(id, secret_hash, created) VALUES (?, ?, ?)'),
      getAdmin: db.prepare('SELECT secret_hash FROM admin_credentials WHERE id = ?'),
      countAdmins: db.prepare('SELECT COUNT(*) AS n FROM admin_credentials'),
      insertToken: db.prepare(`INSERT INTO join_tokens(id, secret_hash, reusable, uses_left, ephemeral, expires, tags, created)
        VALUES (@id, @secretHash, @reusable, @usesLeft, @ephemeral, @expires, @tags, @created)`),
      getToken: db.prepare('SELECT * FROM join_tokens WHERE id = ?'),
      listTokens: db.prepare('SELECT * FROM join_tokens ORDER BY created'),
      revokeToken: db.prepare('UPDATE join_tokens SET revoked = 1 WHERE id = ?'),
      useToken: db.prepare('UPDATE join_tokens SET joins = joins + 1, uses_left = CASE WHEN uses_left IS NULL THEN NULL ELSE uses_left - 1 END WHERE id = ?'),
      insertNode: db.prepare(`INSERT INTO nodes(node_key, disco_key, name, ip_index, ipv4, ipv6, tags, ephemeral, created, last_seen, endpoints, nat_type, token_id)
        VALUES (@nodeKey, @discoKey, @name, @ipIndex, @ipv4, @ipv6, @tags, @ephemeral, @created, @lastSeen, '[]', 'unknown', @tokenId)`),
      nodeByKey: db.prepare('SELECT * FROM nodes WHERE node_key = ?'),
      nodeById: db.prepare('SELECT * FROM nodes WHERE id = ?'),
      nameTaken: db.prepare('SELECT 1 FROM nodes WHERE name = ?'),
      allNodes: db.prepare('SELECT * FROM nodes ORDER BY id'),
      deleteNode: db.prepare('DELETE FROM nodes WHERE id = ?'),
      setEndpoints: db.prepare('UPDATE nodes SET endpoints = ?, nat_type = ? WHERE id = ?'),
      setDisco: db.prepare('UPDATE nodes SET disco_key = ? WHERE id = ?'),
      setLastSeen: db.prepare('UPDATE nodes SET last_seen = ? WHERE id = ?'),
      takeFreeIp: db.prepare('SELECT ip_index FROM free_ip_indexes ORDER BY ip_index LIMIT 1'),
      dropFreeIp: db.prepare('DELETE FROM free_ip_indexes WHERE ip_index = ?'),
      addFreeIp: db.prepare('INSERT OR IGNORE INTO free_ip_indexes(ip_index) VALUES (?)'),
    };
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

  /** Runs `fn` in one BEGIN IMMEDIATE transaction; SQLite errors become KnitErrors. */
  immediate<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      if (err instanceof KnitError) throw err;
      throw storeError(err, this.path);
    }
  }

  private run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw storeError(err, this.path);
    }
  }

  getMeta(key: string): string | undefined {
    return this.run(() => (this.stmts.getMeta.get(key) as { value: string } | undefined)?.value);
  }
  setMeta(key: string, value: string): void {
    this.run(() => this.stmts.setMeta.run(key, value));
  }

  insertAdmin(id: string, secretHash: string, now: number): void {
    this.run(() => this.stmts.insertAdmin.run(id, secretHash, now));
  }
  adminHash(id: string): string | undefined {
    return this.run(() => (this.stmts.getAdmin.get(id) as { secret_hash: string } | undefined)?.secret_hash);
  }
  adminCount(): number {
    return this.run(() => (this.stmts.countAdmins.get() as { n: number }).n);
  }

  insertToken(t: Omit<TokenRow, 'revoked' | 'joins'>): void {
    this.run(() => this.stmts.insertToken.run({
      ...t, reusable: t.reusable ? 1 : 0, ephemeral: t.ephemeral ? 1 : 0, tags: JSON.stringify(t.tags),
    }));
  }
  token(id: string): TokenRow | undefined {
    return this.run(() => { const r = this.stmts.getToken.get(id) as Raw | undefined; return r && toToken(r); });
  }
  tokens(): TokenRow[] {
    return this.run(() => (this.stmts.listTokens.all() as Raw[]).map(toToken));
  }
  revokeToken(id: string): boolean {
    return this.run(() => this.stmts.revokeToken.run(id).changes === 1);
  }
  useToken(id: string): void {
    this.run(() => this.stmts.useToken.run(id));
  }

  insertNode(n: Omit<NodeRow, 'id' | 'endpoints' | 'natType'>): number {
    return this.run(() => Number(this.stmts.insertNode.run({
      ...n, tags: JSON.stringify(n.tags), ephemeral: n.ephemeral ? 1 : 0,
    }).lastInsertRowid));
  }
  nodeByKey(nodeKey: string): NodeRow | undefined {
    return this.run(() => { const r = this.stmts.nodeByKey.get(nodeKey) as Raw | undefined; return r && toNode(r); });
  }
  nodeById(id: number): NodeRow | undefined {
    return this.run(() => { const r = this.stmts.nodeById.get(id) as Raw | undefined; return r && toNode(r); });
  }
  nameTaken(name: string): boolean {
    return this.run(() => this.stmts.nameTaken.get(name) !== undefined);
  }
  nodes(): NodeRow[] {
    return this.run(() => (this.stmts.allNodes.all() as Raw[]).map(toNode));
  }
  deleteNode(id: number): void {
    this.run(() => this.stmts.deleteNode.run(id));
  }
  setEndpoints(id: number, endpoints: string[], natType: NatType): void {
    this.run(() => this.stmts.setEndpoints.run(JSON.stringify(endpoints), natType, id));
  }
  setDiscoKey(id: number, discoKey: string): void {
    this.run(() => this.stmts.setDisco.run(discoKey, id));
  }
  setLastSeen(id: number, when: number): void {
    this.run(() => this.stmts.setLastSeen.run(when, id));
  }

  /** A freed address index to reuse, or undefined (then the caller takes the next fresh one). */
  takeFreeIpIndex(): number | undefined {
    const r = this.stmts.takeFreeIp.get() as { ip_index: number } | undefined;
    if (r) this.stmts.dropFreeIp.run(r.ip_index);
    return r?.ip_index;
  }
  freeIpIndex(index: number): void {
    this.stmts.addFreeIp.run(index);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
