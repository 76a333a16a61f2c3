/**
 * The coordinator's store on PostgreSQL (node-postgres): any number of
 * coordinator replicas share one database.
 *
 * - Writes: each `write()` borrows a pooled connection, BEGINs, and takes one
 *   transaction-scoped advisory lock (WRITE_LOCK_KEY) before running its
 *   function, so writes from every replica run one at a time and each sees all
 *   that committed before it. Within a process writes also queue, so waiting
 *   writers never hold more than one pooled connection (a write that reads
 *   through the pool could otherwise starve behind its own waiters).
 * - The change feed: `appendChange` bumps meta 'version', inserts the row and
 *   `pg_notify`s the version, delivered to every listener at commit.
 * - Commit hints: one dedicated connection LISTENs; when it drops it comes back
 *   with back-off and then wakes the listeners once (commits may have been
 *   missed while it was away).
 * - Reads run on the pool without the lock, each one statement, so each sees
 *   one committed state.
 *
 * Every failure from PostgreSQL becomes a KnitError (KNIT_ERR_STORE, or
 * KNIT_ERR_STORE_LOCKED when the write lock stays taken past LOCK_TIMEOUT_MS),
 * and no message ever holds the URL's password: `where` shows it as `***`.
 */
import pg from 'pg';
import type { ClientConfig, PoolClient, PoolConfig } from 'pg';
import { KnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { NatType, PeerChange } from '../../shared/wire/control.js';
import { migrate } from './postgres-schema.js';
import { MAX_BROADCAST_BYTES, type ChangeRow, type NewNode, type NewToken, type NodeRow, type SessionState, type Store, type StoreTx, type TokenRow } from './store.js';

/** The advisory lock every Knit write takes: "Knit" in ASCII, then 1. */
export const WRITE_LOCK_KEY = 0x4b6e6974_00000001n;
/** The NOTIFY channel carrying each committed version number. */
export const CHANGES_CHANNEL = 'knit_changes';
/** Where replicas pass messages that aren't stored (Store.broadcast). */
export const SIGNALS_CHANNEL = 'knit_signals';

/** Connections in the pool by default: one writer plus readers for the hub's catch-ups. */
const DEFAULT_POOL_SIZE = 10;
/** A database that doesn't answer within this is reported unreachable, not waited on forever. */
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * How long a write waits for the write lock before failing KNIT_ERR_STORE_LOCKED. Writes
 * hold it for milliseconds; a wait this long means a replica hangs in a transaction.
 */
const LOCK_TIMEOUT_MS = 15_000;
/** The LISTEN connection's reconnect back-off: from 0.5 s, doubling, to 10 s. */
const LISTEN_RETRY_FIRST_MS = 500;
const LISTEN_RETRY_MAX_MS = 10_000;

export interface PostgresStoreOptions {
  /** Pooled connections (default 10); the LISTEN connection comes on top. */
  poolSize?: number;
  /** Shown in pg_stat_activity (default "knit-coordinator"). */
  applicationName?: string;
  /** Where the LISTEN connection's losses and idle connections' errors are reported. */
  log?: Logger;
}

/** The URL with any password shown as `***`: what messages may say about the store. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return url.replace(/(\/\/[^/@:]*:)[^@/]*@/, '$1***@').replace(/(password=)[^&\s]*/gi, '$1***');
  }
}

/** The password forms a URL carries (as written and decoded), to scrub from any text. */
function passwordsIn(url: string): string[] {
  const out = new Set<string>();
  try {
    const u = new URL(url);
    for (const p of [u.password, u.searchParams.get('password') ?? '']) {
      if (!p) continue;
      out.add(p);
      try { out.add(decodeURIComponent(p)); } catch { /* not percent-encoded */ }
    }
  } catch {
    const m = /\/\/[^/@:]*:([^@/]*)@/.exec(url);
    if (m?.[1]) out.add(m[1]);
    for (const q of url.matchAll(/password=([^&\s]*)/gi)) if (q[1]) out.add(q[1]);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

/** What went wrong, in a few words: socket errors by code and address, PostgreSQL's own message otherwise. */
function reasonOf(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: unknown[] } | undefined;
  if (e && !e.message && Array.isArray(e.errors) && e.errors.length > 0) return e.errors.map(reasonOf).join('; ');
  return e?.message || e?.code || String(err);
}

type Raw = Record<string, unknown>;

const TOKEN_COLUMNS = 'id, secret_hash, reusable, uses_left, ephemeral, expires, tags, created, revoked, joins';
const NODE_COLUMNS = 'id, node_key, disco_key, name, ip_index, ipv4, ipv6, tags, ephemeral, created, last_seen, endpoints, nat_type, token_id, online_replica';

/** BIGINT arrives as a string (node-postgres won't guess at precision); ours are ms and ids, far below 2^53. */
const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toToken(r: Raw): TokenRow {
  return {
    id: r.id as string, secretHash: r.secret_hash as string, reusable: r.reusable as boolean,
    usesLeft: numOrNull(r.uses_left), ephemeral: r.ephemeral as boolean, expires: numOrNull(r.expires),
    tags: r.tags as string[], created: num(r.created), revoked: r.revoked as boolean, joins: num(r.joins),
  };
}

function toNode(r: Raw): NodeRow {
  return {
    id: num(r.id), nodeKey: r.node_key as string, discoKey: r.disco_key as string, name: r.name as string,
    ipIndex: num(r.ip_index), ipv4: r.ipv4 as string, ipv6: r.ipv6 as string, tags: r.tags as string[],
    ephemeral: r.ephemeral as boolean, created: num(r.created), lastSeen: num(r.last_seen),
    endpoints: r.endpoints as string[], natType: r.nat_type as NatType, tokenId: r.token_id as string | null,
    onlineReplica: r.online_replica as string | null,
  };
}

export class PostgresStore implements Store {
  readonly engine = 'postgres' as const;
  private readonly listeners = new Set<() => void>();
  private readonly broadcastListeners = new Set<(message: string) => void>();
  /** The in-process write queue's tail. */
  private writes: Promise<unknown> = Promise.resolve();
  private listener: pg.Client | undefined;
  private listenRetryMs = LISTEN_RETRY_FIRST_MS;
  private listenTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly where: string,
    private readonly pool: pg.Pool,
    private readonly clientConfig: ClientConfig,
    private readonly passwords: string[],
    private readonly log: Logger | undefined,
  ) {}

  /**
   * Connects, brings the schema up to date and starts listening for commits. Throws
   * KNIT_ERR_STORE when the database can't be reached or used, or was written by a newer Knit.
   */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const clientConfig: ClientConfig = {
      connectionString: url,
      application_name: options.applicationName ?? 'knit-coordinator',
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
    };
    const poolConfig: PoolConfig = { ...clientConfig, max: options.poolSize ?? DEFAULT_POOL_SIZE };
    const pool = new pg.Pool(poolConfig);
    const store = new PostgresStore(redactUrl(url), pool, clientConfig, passwordsIn(url), options.log);
    // An idle connection that dies (server restart, network) is dropped and replaced by the
    // pool; without this listener its 'error' would be an uncaught exception.
    pool.on('error', (err) => store.log?.warn('an idle PostgreSQL connection failed', { store: store.where, reason: store.scrub(reasonOf(err)) }));
    try {
      let client: PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw store.failure(err, 'open');
      }
      try {
        await migrate(client, store.where);
      } catch (err) {
        throw store.failure(err, 'open');
      } finally {
        client.release();
      }
      try {
        store.listener = await store.connectListener();
      } catch (err) {
        throw store.failure(err, 'open');
      }
      return store;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Takes any password the URL held out of a text. */
  private scrub(text: string): string {
    for (const p of this.passwords) text = text.split(p).join('***');
    return text;
  }

  /** A failure from PostgreSQL or the network as the store's KnitError; KnitErrors pass through. */
  private failure(err: unknown, when: 'open' | 'use' = 'use'): KnitError {
    if (err instanceof KnitError) return err;
    const code = (err as { code?: string }).code;
    if (code === '55P03') {
      return new KnitError('KNIT_ERR_STORE_LOCKED', `the PostgreSQL store ${this.where} is locked: a write waited ${LOCK_TIMEOUT_MS / 1000} s for the write lock`, { cause: err });
    }
    const reason = this.scrub(reasonOf(err));
    const message = when === 'open' ? `cannot use the PostgreSQL store ${this.where}: ${reason}` : `the PostgreSQL store ${this.where} failed: ${reason}`;
    return new KnitError('KNIT_ERR_STORE', message, { cause: err });
  }

  /** One statement on the pool (no lock): a reader. */
  private async query(sql: string, params?: unknown[]): Promise<Raw[]> {
    try {
      return (await this.pool.query<Raw>(sql, params)).rows;
    } catch (err) {
      throw this.failure(err);
    }
  }

  async getMeta(key: string): Promise<string | undefined> {
    return (await this.query('SELECT value FROM meta WHERE key = $1', [key]))[0]?.value as string | undefined;
  }
  async adminHash(id: string): Promise<string | undefined> {
    return (await this.query('SELECT secret_hash FROM admin_credentials WHERE id = $1', [id]))[0]?.secret_hash as string | undefined;
  }
  async tokens(): Promise<TokenRow[]> {
    return (await this.query(`SELECT ${TOKEN_COLUMNS} FROM join_tokens ORDER BY created, id`)).map(toToken);
  }
  async nodes(): Promise<NodeRow[]> {
    return (await this.query(`SELECT ${NODE_COLUMNS} FROM nodes ORDER BY id`)).map(toNode);
  }
  async latestVersion(): Promise<number> {
    const v = (await this.query("SELECT value FROM meta WHERE key = 'version'"))[0]?.value;
    return v === undefined ? 0 : Number(v);
  }
  async changesSince(version: number, limit: number): Promise<ChangeRow[]> {
    const rows = await this.query('SELECT version, changes, origin FROM peer_changes WHERE version > $1 ORDER BY version LIMIT $2', [version, limit]);
    return rows.map((r) => ({ version: num(r.version), changes: JSON.parse(r.changes as string) as PeerChange[], origin: r.origin as string }));
  }

  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    const run = this.writes.then(() => this.runWrite(fn));
    this.writes = run.catch(() => { /* the caller gets this write's error; the queue goes on */ });
    return run;
  }

  private async runWrite<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.failure(err);
    }
    // A checked-out client that loses its connection between statements emits 'error'; the
    // next statement fails with it anyway, so here it must only not be uncaught.
    let lost: Error | undefined;
    const onError = (err: Error) => { lost = err; };
    client.on('error', onError);
    const tx = new PgTx(client, (err) => this.failure(err));
    try {
      try {
        await client.query(`BEGIN; SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}; SELECT pg_advisory_xact_lock(${WRITE_LOCK_KEY})`);
      } catch (err) {
        throw this.failure(err);
      }
      const result = await fn(tx);
      tx.end();
      try {
        await client.query('COMMIT');
      } catch (err) {
        throw this.failure(err);
      }
      return result;
    } catch (err) {
      tx.end();
      try {
        await client.query('ROLLBACK');
      } catch (rollbackErr) {
        lost ??= rollbackErr as Error;
      }
      throw err;
    } finally {
      client.removeListener('error', onError);
      // A connection that failed is closed rather than handed to the next borrower.
      client.release(lost);
    }
  }

  onCommit(fn: () => void): () => void {
    const entry = () => fn();
    this.listeners.add(entry);
    return () => { this.listeners.delete(entry); };
  }

  async broadcast(message: string): Promise<void> {
    if (Buffer.byteLength(message) > MAX_BROADCAST_BYTES) throw new KnitError('KNIT_ERR_INTERNAL', 'broadcast message too long');
    await this.query(`SELECT pg_notify('${SIGNALS_CHANNEL}', $1)`, [message]);
  }

  onBroadcast(fn: (message: string) => void): () => void {
    const entry = (m: string) => fn(m);
    this.broadcastListeners.add(entry);
    return () => { this.broadcastListeners.delete(entry); };
  }

  private wake(): void {
    for (const fn of [...this.listeners]) {
      try {
        fn();
      } catch (err) {
        // A listener's bug is the listener's, not the LISTEN connection's: surface it as uncaught.
        queueMicrotask(() => { throw err; });
      }
    }
  }

  private async connectListener(): Promise<pg.Client> {
    const client = new pg.Client(this.clientConfig);
    client.on('error', (err) => this.listenerLost(client, err));
    client.on('end', () => this.listenerLost(client, new Error('the connection ended')));
    client.on('notification', (msg) => {
      if (msg.channel === CHANGES_CHANNEL) this.wake();
      else if (msg.channel === SIGNALS_CHANNEL && msg.payload !== undefined) for (const fn of [...this.broadcastListeners]) fn(msg.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGES_CHANNEL}; LISTEN ${SIGNALS_CHANNEL}`);
    } catch (err) {
      client.end().catch(() => { /* already broken */ });
      throw err;
    }
    return client;
  }

  private listenerLost(client: pg.Client, err: Error): void {
    if (client !== this.listener || this.closing) return;
    this.listener = undefined;
    client.end().catch(() => { /* already broken */ });
    this.log?.warn('lost the PostgreSQL LISTEN connection; reconnecting', { store: this.where, reason: this.scrub(reasonOf(err)) });
    this.scheduleListen();
  }

  private scheduleListen(): void {
    const delay = this.listenRetryMs;
    this.listenRetryMs = Math.min(this.listenRetryMs * 2, LISTEN_RETRY_MAX_MS);
    this.listenTimer = setTimeout(() => {
      this.listenTimer = undefined;
      this.connectListener().then((client) => {
        if (this.closing) {
          client.end().catch(() => { /* closing anyway */ });
          return;
        }
        this.listener = client;
        this.listenRetryMs = LISTEN_RETRY_FIRST_MS;
        this.log?.info('the PostgreSQL LISTEN connection is back', { store: this.where });
        // Commits made while we were away sent notifications nobody heard.
        this.wake();
      }, (e: unknown) => {
        if (this.closing) return;
        this.log?.warn('cannot reconnect the PostgreSQL LISTEN connection', { store: this.where, reason: this.scrub(reasonOf(e)), retryInMs: this.listenRetryMs });
        this.scheduleListen();
      });
    }, delay);
    // The coordinator's server keeps the process alive; a retry alone must not.
    this.listenTimer.unref();
  }

  async pruneChanges(keep: number): Promise<void> {
    await this.query(
      "DELETE FROM peer_changes WHERE version <= (SELECT value::bigint FROM meta WHERE key = 'version') - $1",
      [Math.max(0, Math.floor(keep))],
    );
  }

  /** Stops listening and closes every connection; later calls wait for the same close. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.listenTimer) clearTimeout(this.listenTimer);
      const listener = this.listener;
      this.listener = undefined;
      this.listeners.clear();
      await Promise.allSettled([listener?.end(), this.pool.end()]);
    })();
    return this.closing;
  }
}

/** One write transaction's view of the store: every statement on the write's connection. */
class PgTx implements StoreTx {
  private ended = false;
  private savepoints = 0;

  constructor(private readonly client: PoolClient, private readonly failure: (err: unknown) => KnitError) {}

  end(): void {
    this.ended = true;
  }

  private async q(sql: string, params?: unknown[]): Promise<pg.QueryResult<Raw>> {
    // The connection goes back to the pool when the write ends; a late statement would run
    // inside someone else's transaction.
    if (this.ended) throw new Error('a StoreTx was used after its write() ended');
    try {
      return await this.client.query<Raw>(sql, params);
    } catch (err) {
      throw this.failure(err);
    }
  }

  async getMeta(key: string): Promise<string | undefined> {
    return (await this.q('SELECT value FROM meta WHERE key = $1', [key])).rows[0]?.value as string | undefined;
  }
  async setMeta(key: string, value: string): Promise<void> {
    await this.q('INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }
  async bumpMeta(key: string): Promise<number> {
    const r = await this.q(
      "INSERT INTO meta(key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text RETURNING value",
      [key],
    );
    return Number(r.rows[0]!.value) - 1;
  }

  async insertAdmin(id: string, secretHash: string, now: number): Promise<void> {
    await this.q('INSERT INTO admin_credentials(id, secret_hash, created) VALUES ($1, $2, $3)', [id, secretHash, now]);
  }
  async adminCount(): Promise<number> {
    return (await this.q('SELECT count(*)::int AS n FROM admin_credentials')).rows[0]!.n as number;
  }

  async insertToken(t: NewToken): Promise<void> {
    await this.q(
      `INSERT INTO join_tokens(id, secret_hash, reusable, uses_left, ephemeral, expires, tags, created)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [t.id, t.secretHash, t.reusable, t.usesLeft, t.ephemeral, t.expires, t.tags, t.created],
    );
  }
  async token(id: string): Promise<TokenRow | undefined> {
    const r = (await this.q(`SELECT ${TOKEN_COLUMNS} FROM join_tokens WHERE id = $1`, [id])).rows[0];
    return r && toToken(r);
  }
  async revokeToken(id: string): Promise<boolean> {
    return (await this.q('UPDATE join_tokens SET revoked = true WHERE id = $1', [id])).rowCount === 1;
  }
  async useToken(id: string): Promise<boolean> {
    const r = await this.q(
      `UPDATE join_tokens SET joins = joins + 1, uses_left = uses_left - 1
       WHERE id = $1 AND NOT revoked AND (uses_left IS NULL OR uses_left > 0)`,
      [id],
    );
    return r.rowCount === 1;
  }

  async insertNode(n: NewNode): Promise<number> {
    const r = await this.q(
      `INSERT INTO nodes(node_key, disco_key, name, ip_index, ipv4, ipv6, tags, ephemeral, created, last_seen, endpoints, nat_type, token_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '{}', 'unknown', $11) RETURNING id`,
      [n.nodeKey, n.discoKey, n.name, n.ipIndex, n.ipv4, n.ipv6, n.tags, n.ephemeral, n.created, n.lastSeen, n.tokenId],
    );
    return num(r.rows[0]!.id);
  }
  async nodeByKey(nodeKey: string): Promise<NodeRow | undefined> {
    const r = (await this.q(`SELECT ${NODE_COLUMNS} FROM nodes WHERE node_key = $1`, [nodeKey])).rows[0];
    return r && toNode(r);
  }
  async nodeById(id: number): Promise<NodeRow | undefined> {
    const r = (await this.q(`SELECT ${NODE_COLUMNS} FROM nodes WHERE id = $1`, [id])).rows[0];
    return r && toNode(r);
  }
  async nameTaken(name: string): Promise<boolean> {
    return (await this.q('SELECT 1 FROM nodes WHERE name = $1', [name])).rows.length > 0;
  }
  async deleteNode(id: number): Promise<boolean> {
    return (await this.q('DELETE FROM nodes WHERE id = $1', [id])).rowCount === 1;
  }
  async saveSessionState(rows: SessionState[]): Promise<number[]> {
    if (rows.length === 0) return [];
    // One statement for the whole window: a reconnect storm is thousands of nodes, and every
    // round trip is spent holding the write lock every replica waits for.
    const r = await this.q(
      `UPDATE nodes AS n SET endpoints = ARRAY(SELECT jsonb_array_elements_text(v.endpoints)),
         nat_type = v.nat_type, disco_key = v.disco_key, last_seen = v.last_seen
       FROM jsonb_to_recordset($1::jsonb) AS v(id BIGINT, endpoints JSONB, nat_type TEXT, disco_key TEXT, last_seen BIGINT)
       WHERE n.id = v.id RETURNING n.id`,
      [JSON.stringify(rows.map((x) => ({ id: x.id, endpoints: x.endpoints, nat_type: x.natType, disco_key: x.discoKey, last_seen: x.lastSeen })))],
    );
    return r.rows.map((x) => num(x.id));
  }
  async recordSessions(replica: string, held: number[], released: number[]): Promise<number[]> {
    if (held.length > 0) await this.q('UPDATE nodes SET online_replica = $1 WHERE id = ANY($2::bigint[])', [replica, held]);
    if (released.length === 0) return [];
    // The outer SELECT sees the rows as they were before the UPDATE in its WITH: those the
    // update let go are excluded by id, and any other holder left is another replica.
    const r = await this.q(
      `WITH let_go AS (UPDATE nodes SET online_replica = NULL WHERE id = ANY($2::bigint[]) AND online_replica = $1 RETURNING id)
       SELECT id FROM nodes WHERE id = ANY($2::bigint[]) AND online_replica IS NOT NULL AND id NOT IN (SELECT id FROM let_go)`,
      [replica, released],
    );
    return r.rows.map((x) => num(x.id));
  }
  async setLastSeen(ids: number[], when: number): Promise<void> {
    if (ids.length > 0) await this.q('UPDATE nodes SET last_seen = $2 WHERE id = ANY($1::bigint[])', [ids, when]);
  }
  async releaseReplicas(replicas: string[]): Promise<number[]> {
    if (replicas.length === 0) return [];
    const r = await this.q('UPDATE nodes SET online_replica = NULL WHERE online_replica = ANY($1::text[]) RETURNING id', [replicas]);
    return r.rows.map((row) => num(row.id)).sort((a, b) => a - b);
  }

  async takeFreeIpIndex(): Promise<number | undefined> {
    const r = await this.q('DELETE FROM free_ip_indexes WHERE ip_index = (SELECT min(ip_index) FROM free_ip_indexes) RETURNING ip_index');
    const row = r.rows[0];
    return row ? num(row.ip_index) : undefined;
  }
  async freeIpIndex(index: number): Promise<void> {
    await this.q('INSERT INTO free_ip_indexes(ip_index) VALUES ($1) ON CONFLICT DO NOTHING', [index]);
  }

  async appendChange(changes: PeerChange[], origin = ''): Promise<number> {
    // One round trip: bump the counter, store the version, and queue its NOTIFY (sent at commit).
    const r = await this.q(
      `WITH v AS (
         INSERT INTO meta(key, value) VALUES ('version', '1')
         ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text
         RETURNING value::bigint AS version
       ), c AS (
         INSERT INTO peer_changes(version, changes, origin) SELECT version, $1, $2 FROM v RETURNING version
       )
       SELECT version, pg_notify('${CHANGES_CHANNEL}', version::text) FROM c`,
      [JSON.stringify(changes), origin],
    );
    return num(r.rows[0]!.version);
  }

  async heartbeat(replica: string): Promise<void> {
    await this.q('INSERT INTO replicas(id, beat) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET beat = replicas.beat + 1', [replica]);
  }
  async replicaBeats(): Promise<{ id: string; beat: number }[]> {
    return (await this.q('SELECT id, beat FROM replicas ORDER BY id')).rows.map((r) => ({ id: r.id as string, beat: num(r.beat) }));
  }
  async dropReplica(replica: string): Promise<void> {
    await this.q('DELETE FROM replicas WHERE id = $1', [replica]);
  }

  async savepoint<T>(fn: () => Promise<T>): Promise<T> {
    const name = `knit_sp_${++this.savepoints}`;
    await this.q(`SAVEPOINT ${name}`);
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      await this.q(`ROLLBACK TO SAVEPOINT ${name}`);
      await this.q(`RELEASE SAVEPOINT ${name}`);
      throw err;
    }
    await this.q(`RELEASE SAVEPOINT ${name}`);
    return result;
  }
}
