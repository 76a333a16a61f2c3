/**
 * The registry: the mesh's nodes, join tokens, admin credentials and address
 * pool, on top of the store (SQLite or PostgreSQL, store/store.ts). It keeps
 * every node's public record in memory (a 10,000-node map is a few MB) so
 * that control sessions never touch the database on the read path.
 *
 * Every accepted mutation becomes a PeerChange committed to the store's
 * change feed under a version the store assigns, and the hub fans out what
 * the feed says — the same versions on every replica sharing the store:
 * - joins and removals commit their change in their own transaction
 *   (acknowledged means on disk, and in the feed);
 * - soft state from control sessions (online, endpoints, disco keys) is
 *   queued and committed once per window by the hub (`commitWindow`);
 * - changes committed by other replicas arrive through `applyChange`.
 *
 * Rules that matter for security live here: tokens are compared in constant
 * time on their hash; token consumption and address allocation happen in one
 * write transaction under the store-wide write lock, so a single-use token
 * yields exactly one node however many joins race for it, on however many
 * replicas.
 */
import { decodeKey, encodeKey, generateKeyPair, publicKeyOf } from '../../shared/crypto/keys.js';
import { defaultRandomBytes, equalBytes, sha256Hex } from '../../shared/crypto/seal.js';
import type { Clock, RandomBytes } from '../../shared/clock.js';
import { KnitError } from '../../shared/errors.js';
import { parseIpv4Prefix, type Ipv4Prefix } from '../../shared/net/cidr.js';
import { encodeToken, parseToken, TOKEN_ID_LEN, TOKEN_SECRET_LEN, type ParsedToken } from '../../shared/token.js';
import { joinProof, type JoinRequest, type JoinResponse, type NatType, type PeerChange, type PeerInfo } from '../../shared/wire/control.js';
import type { ChangeRow, NodeRow, Store, TokenRow } from '../store/store.js';
import { changeNodeId } from './changes.js';
import { canonicalIpv4Prefix, DEFAULT_IPV4_PREFIX, joinRow, type JoinMesh } from './join-rows.js';
import { releaseReplicas, ReplicaLiveness } from './liveness.js';

export interface RegistryOptions {
  clock: Clock; // now() stamps changes for fan-out latency; wallNow() stamps what people read (expiry, last seen)
  url: string; // the coordinator's public URL, written into tokens
  ipv4Prefix?: string; // fixed when the store is new; afterwards it must match (or be left out)
  random?: RandomBytes;
  /** This process's replica id (default: random). Online nodes are recorded as held by it. */
  replica?: string;
  /**
   * Whether this process is the store's only user (SQLite behind the data-dir lock): then
   * every session recorded by an earlier run is gone, and its nodes start offline at once.
   */
  exclusive?: boolean;
  /** False for a local admin command: it serves no sessions, so it neither stamps itself alive nor releases others. */
  serves?: boolean;
}

/** How many committed versions a new registry loads for resuming agents (the hub's change log). */
export const HISTORY_VERSIONS = 4096;

export interface TokenOptions {
  reusable?: boolean;
  uses?: number; // for reusable tokens; undefined = unlimited
  ephemeral?: boolean;
  expiresInMs?: number;
  tags?: string[];
}

export type TokenSummary = Omit<TokenRow, 'secretHash'>;

/** One join's outcome in a group commit: the answer, or the error that refused it (nothing changed for it). */
export type JoinResult = { ok: true; response: JoinResponse; created: boolean } | { ok: false; error: unknown };

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

export class Registry {
  readonly coordinatorPrivate: Uint8Array;
  readonly coordinatorKey: string;
  readonly ipv4Prefix: Ipv4Prefix;
  readonly ipv4PrefixText: string;
  readonly ulaPrefix: string;
  /** This process's id among the replicas sharing the store. */
  readonly replica: string;
  /** The peer-map version the memory reflects at load, and the versions before it (newest last) for resumes. */
  readonly startVersion: number;
  readonly history: ChangeRow[];
  private readonly byId = new Map<number, PeerInfo>();
  private readonly byKey = new Map<string, number>();
  private readonly ephemeral = new Set<number>();
  private readonly random: RandomBytes;
  private pending: PeerChange[] = [];
  /** Nodes whose endpoints / disco key / last-seen changed in memory but not yet on disk. */
  private readonly dirty = new Set<number>();
  private pendingSince = 0;
  /** Prefixes and name hints for joins (a thousand "ci" nodes don't probe 1,000 names each). */
  private readonly joinMesh: JoinMesh;
  /**
   * Since when (monotonic ms) each offline ephemeral node has been offline, counted from
   * this registry's load at the earliest: time the coordinator was down doesn't count, and
   * a step of the wall clock (NTP, a resumed VM) neither expires every node nor none.
   */
  private readonly offlineSince = new Map<number, number>();

  /** Nodes whose control session this replica holds (recorded as theirs in the store at the next window). */
  private readonly held = new Set<number>();
  private readonly liveness: ReplicaLiveness;
  /** Nodes registered by another replica whose ephemeral flag this one hasn't read yet. */
  private readonly unlearned = new Set<number>();

  /** The public URL written into new tokens (settable: with port 0 it is known only after listen). */
  publicUrl: string;

  private constructor(readonly store: Store, private readonly options: RegistryOptions, init: {
    priv: Uint8Array; prefix: string; ula: string; replica: string; version: number; history: ChangeRow[];
  }) {
    this.publicUrl = options.url;
    this.random = options.random ?? defaultRandomBytes;
    this.coordinatorPrivate = init.priv;
    this.coordinatorKey = encodeKey(publicKeyOf(init.priv));
    this.ipv4PrefixText = init.prefix;
    this.ipv4Prefix = parseIpv4Prefix(init.prefix)!;
    this.ulaPrefix = init.ula;
    this.joinMesh = { ipv4Prefix: this.ipv4Prefix, ulaPrefix: init.ula, nameHints: new Map() };
    this.replica = init.replica;
    this.liveness = new ReplicaLiveness(init.replica);
    this.startVersion = init.version;
    this.history = init.history;
  }

  /**
   * Opens the mesh in `store`: creates the coordinator key and prefixes on first use,
   * registers this replica, and loads every node plus the recent change history.
   */
  static async open(store: Store, options: RegistryOptions): Promise<Registry> {
    const random = options.random ?? defaultRandomBytes;
    const replica = options.replica ?? hex(random(8));
    const wanted = options.ipv4Prefix === undefined ? undefined : canonicalIpv4Prefix(options.ipv4Prefix);
    if (options.ipv4Prefix !== undefined && !wanted) throw new KnitError('KNIT_ERR_USAGE', `${options.ipv4Prefix} is not an IPv4 prefix between /8 and /30`);
    const init = await store.write(async (tx) => {
      let priv = decodeKey(await tx.getMeta('coordinator_private_key'));
      if (!priv) {
        priv = generateKeyPair().privateKey;
        await tx.setMeta('coordinator_private_key', encodeKey(priv));
      }
      let prefix = await tx.getMeta('ipv4_prefix');
      if (!prefix) {
        prefix = wanted ?? DEFAULT_IPV4_PREFIX;
        await tx.setMeta('ipv4_prefix', prefix);
      } else if (wanted && wanted !== canonicalIpv4Prefix(prefix)) {
        // Renumbering a live mesh would break every tunnel; say so instead of ignoring the flag.
        throw new KnitError('KNIT_ERR_USAGE', `this mesh already uses ${prefix}; the IPv4 prefix is fixed when the data dir is created`);
      }
      let ula = await tx.getMeta('ula_prefix');
      if (!ula) {
        // RFC 4193: fd00::/8 + 40 random bits = a /48 unique to this mesh.
        const r = random(5);
        ula = `fd${hex(r.subarray(0, 1))}:${hex(r.subarray(1, 3))}:${hex(r.subarray(3, 5))}::/48`;
        await tx.setMeta('ula_prefix', ula);
      }
      if (options.serves !== false) {
        // Alone on the store, every session an earlier run recorded is gone: say so in the feed.
        // (With other replicas, the dead are told from the living by heartbeats, later.)
        if (options.exclusive) {
          const gone = (await tx.replicaBeats()).map((r) => r.id).filter((r) => r !== replica);
          await releaseReplicas(tx, gone, Math.floor(options.clock.wallNow()), replica);
        }
        await tx.heartbeat(replica);
      }
      return { priv, prefix, ula };
    });
    // Memory is loaded outside the lock: the version first, then the rows (at least that new),
    // then every change since the version replayed on top — each change is a "set", so
    // replaying one the rows already show converges to the newest state.
    const version = await store.latestVersion();
    const rows = await store.nodes();
    // One read for both the history resumes need and what was committed after `version`.
    const history = await store.changesSince(Math.max(0, version - HISTORY_VERSIONS), 2 * HISTORY_VERSIONS);
    const registry = new Registry(store, options, { ...init, replica, version: history.at(-1)?.version ?? version, history });
    for (const row of rows) registry.remember(row);
    for (const r of history) if (r.version > version) r.changes.forEach((c) => registry.applyChange(c));
    return registry;
  }

  // ---- reads (memory only) ---------------------------------------------------

  peers(): IterableIterator<PeerInfo> {
    return this.byId.values();
  }
  get nodeCount(): number {
    return this.byId.size;
  }
  peer(id: number): PeerInfo | undefined {
    return this.byId.get(id);
  }
  peerByKey(nodeKey: string): PeerInfo | undefined {
    const id = this.byKey.get(nodeKey);
    return id === undefined ? undefined : this.byId.get(id);
  }
  /** Whether other replicas may write the store: then a node unknown here may have joined through one of them. */
  get shared(): boolean {
    return this.options.exclusive !== true;
  }
  isEphemeral(id: number): boolean {
    return this.ephemeral.has(id);
  }

  /** Takes the changes accepted since the last call, and when the oldest of them was accepted. */
  takePending(): { changes: PeerChange[]; since: number } {
    const out = { changes: this.pending, since: this.pendingSince };
    this.pending = [];
    return out;
  }

  /**
   * Whether a window has anything to commit: changes for the feed, or rows alone. A session
   * that moved here from another replica changes no peer's map (the node was online already),
   * but the store must record this replica as its holder: else, once the other replica is
   * taken for dead, its release marks offline a node this one serves.
   */
  get hasPending(): boolean {
    return this.pending.length > 0 || this.dirty.size > 0;
  }

  /** Puts back a window that could not be committed, ahead of anything queued since. */
  requeue(changes: PeerChange[], since: number): void {
    this.pendingSince = this.pending.length === 0 ? since : Math.min(since, this.pendingSince);
    this.pending = [...changes, ...this.pending];
  }

  private push(c: PeerChange): void {
    if (this.pending.length === 0) this.pendingSince = this.options.clock.now();
    this.pending.push(c);
  }

  private remember(row: NodeRow): PeerInfo {
    const peer = toPeer(row);
    this.put(peer, row.ephemeral);
    return peer;
  }

  private put(peer: PeerInfo, ephemeral: boolean): void {
    const old = this.byId.get(peer.id);
    if (old && old.nodeKey !== peer.nodeKey) this.byKey.delete(old.nodeKey);
    this.byId.set(peer.id, peer);
    this.byKey.set(peer.nodeKey, peer.id);
    if (ephemeral) this.ephemeral.add(peer.id);
    this.trackOffline(peer);
  }

  /** Ephemeral expiry counts from when this registry saw the node go (or found it) offline. */
  private trackOffline(peer: PeerInfo): void {
    if (!this.ephemeral.has(peer.id)) return;
    if (peer.online) this.offlineSince.delete(peer.id);
    else if (!this.offlineSince.has(peer.id)) this.offlineSince.set(peer.id, this.options.clock.now());
  }

  private forget(id: number): void {
    const p = this.byId.get(id);
    if (!p) return;
    this.byId.delete(id);
    this.byKey.delete(p.nodeKey);
    this.dirty.delete(id);
    this.held.delete(id);
    this.unlearned.delete(id);
    this.ephemeral.delete(id);
    this.offlineSince.delete(id);
  }

  /**
   * Applies a change another replica committed to memory. Never this replica's own: memory
   * showed those before they were committed, and may since hold newer state that isn't
   * committed yet (a session that closed while its window was being written), which
   * replaying the older change would undo.
   */
  applyChange(c: PeerChange): void {
    if (c.op === 'remove') return this.forget(c.id);
    if (c.op === 'upsert') {
      // "Ephemeral" comes from the join token and doesn't travel in PeerInfo: a node another
      // replica registered is looked up in the store at the next housekeeping (learnEphemeral).
      if (!this.byId.has(c.peer.id)) this.unlearned.add(c.peer.id);
      return this.put(c.peer, this.ephemeral.has(c.peer.id));
    }
    const p = this.byId.get(c.id);
    if (!p) return;
    if (c.op === 'online' && !c.online && this.held.has(c.id)) {
      // The replica this node's session left let go of it after the session came here, but
      // before this replica recorded itself as the holder: the node is online, here. Say so.
      const lastSeen = Math.floor(this.options.clock.wallNow());
      this.byId.set(c.id, { ...p, online: true, lastSeen });
      this.dirty.add(c.id);
      this.push({ op: 'online', id: c.id, online: true, lastSeen });
      return;
    }
    let next: PeerInfo;
    if (c.op === 'endpoints') next = { ...p, endpoints: c.endpoints, natType: c.natType };
    else if (c.op === 'online') next = { ...p, online: c.online, lastSeen: c.lastSeen };
    else next = { ...p, discoKey: c.discoKey };
    this.byId.set(c.id, next);
    this.trackOffline(next);
  }

  // ---- admin credential and tokens ---------------------------------------------

  private mint(kind: 'join' | 'admin'): { id: string; secretHash: string; text: string } {
    const id = this.random(TOKEN_ID_LEN);
    const secret = this.random(TOKEN_SECRET_LEN);
    const text = encodeToken({ kind, id, secret, coordinatorKey: decodeKey(this.coordinatorKey)!, url: this.publicUrl });
    return { id: hex(id), secretHash: sha256Hex(secret), text };
  }

  /** Creates the admin credential on first start; returns the token text exactly once, else undefined. */
  ensureAdmin(): Promise<string | undefined> {
    const now = this.options.clock.wallNow();
    return this.store.write(async (tx) => {
      if (await tx.adminCount() > 0) return undefined;
      const t = this.mint('admin');
      await tx.insertAdmin(t.id, t.secretHash, now);
      return t.text;
    });
  }

  async verifyAdmin(tokenText: string | undefined): Promise<boolean> {
    const t = parseToken(tokenText);
    if (!t || t.kind !== 'admin') return false;
    const hash = await this.store.adminHash(t.id);
    return hash !== undefined && equalBytes(Buffer.from(hash, 'hex'), Buffer.from(sha256Hex(t.secret), 'hex'));
  }

  async createToken(opts: TokenOptions): Promise<{ token: string; summary: TokenSummary }> {
    const now = this.options.clock.wallNow();
    const tags = opts.tags ?? [];
    const t = this.mint('join');
    const row = {
      id: t.id, secretHash: t.secretHash, reusable: opts.reusable === true,
      usesLeft: opts.reusable ? (opts.uses ?? null) : 1, ephemeral: opts.ephemeral === true,
      expires: opts.expiresInMs === undefined ? null : now + opts.expiresInMs, tags, created: now,
    };
    await this.store.write((tx) => tx.insertToken(row));
    const { secretHash: _omit, ...summary } = { ...row, revoked: false, joins: 0 };
    return { token: t.text, summary };
  }

  async listTokens(): Promise<TokenSummary[]> {
    return (await this.store.tokens()).map(({ secretHash: _omit, ...rest }) => rest);
  }

  async revokeToken(id: string): Promise<boolean> {
    return /^[0-9a-f]{16}$/.test(id) && this.store.write((tx) => tx.revokeToken(id));
  }

  // ---- join -------------------------------------------------------------------

  /**
   * Checks and consumes the token and registers the node, atomically. Joining
   * again with a node key the mesh already knows returns that node unchanged
   * and consumes no use (an agent re-running `up` must not burn tokens), but
   * the token must still be valid: a revoked or expired token proves nothing.
   */
  async join(req: JoinRequest): Promise<{ response: JoinResponse; created: boolean }> {
    const [r] = await this.joinMany([req]);
    if (!r!.ok) throw r!.error;
    return r!;
  }

  /**
   * Group commit: several joins in ONE write transaction, so a join storm costs one
   * fsync per batch instead of one per node (on a disk where a commit takes
   * ~3 ms that is the difference between ~250 and ~1,000 joins a second).
   * Each join runs in its own savepoint: a refused one (token used, expired …)
   * changes nothing and doesn't disturb the others. The new nodes go into the
   * change feed in the same transaction, as one version. Nothing is answered,
   * and nothing enters the in-memory map, before the batch is committed.
   */
  async joinMany(reqs: JoinRequest[]): Promise<JoinResult[]> {
    const now = this.options.clock.wallNow();
    type Row = { ok: true; row: NodeRow; created: boolean; req: JoinRequest };
    // A token that doesn't parse, or names another coordinator, is refused before any transaction.
    const results: (JoinResult | Row | { ok: true; token: ParsedToken; req: JoinRequest })[] = reqs.map((req) => {
      const token = parseToken(req.token);
      if (!token || token.kind !== 'join') return { ok: false, error: new KnitError('KNIT_ERR_TOKEN_INVALID') };
      if (token.coordinatorKey !== this.coordinatorKey) return { ok: false, error: new KnitError('KNIT_ERR_TOKEN_WRONG_COORDINATOR') };
      return { ok: true, token, req };
    });
    if (results.some((r) => 'token' in r)) {
      const hints = new Map(this.joinMesh.nameHints);
      try {
        await this.store.write(async (tx) => {
          const upserts: PeerChange[] = [];
          for (const [i, r] of results.entries()) {
            if (!('token' in r)) continue;
            try {
              const joined = await tx.savepoint(() => joinRow(tx, this.joinMesh, r.req, r.token, now));
              results[i] = { ok: true, ...joined, req: r.req };
              if (joined.created) upserts.push({ op: 'upsert', peer: toPeer(joined.row) });
            } catch (error) {
              if (!(error instanceof KnitError)) throw error; // the store failed: the whole batch fails
              results[i] = { ok: false, error };
            }
          }
          if (upserts.length > 0) await tx.appendChange(upserts, this.replica);
        });
      } catch (error) {
        this.joinMesh.nameHints = hints; // the names hinted at were never committed
        return reqs.map(() => ({ ok: false, error })); // the commit failed: none of them joined
      }
    }
    return results.map((r) => {
      if (!r.ok || !('row' in r)) return r as JoinResult;
      let peer = this.byId.get(r.row.id);
      if (r.created || !peer) peer = this.remember(r.row);
      const proof = joinProof(this.coordinatorPrivate, r.req.nodeKey, r.req.nodeKey, peer.id, peer.addresses);
      if (!proof) return { ok: false, error: new KnitError('KNIT_ERR_BAD_REQUEST', 'nodeKey is not a usable X25519 public key') };
      return {
        ok: true, created: r.created,
        response: {
          node: { id: peer.id, name: peer.name, addresses: peer.addresses, tags: peer.tags, ephemeral: this.ephemeral.has(peer.id) },
          mesh: { ipv4Prefix: this.ipv4PrefixText, ipv6Prefix: this.ulaPrefix },
          coordinatorKey: this.coordinatorKey,
          coordinatorProof: proof,
        },
      };
    });
  }

  // ---- mutations from control sessions and admins ------------------------------------

  setOnline(id: number, online: boolean): void {
    const p = this.byId.get(id);
    if (!p) return;
    // Recorded even when memory already says so: the node may have moved here from another replica.
    if (online) this.held.add(id);
    else this.held.delete(id);
    if (p.online === online) {
      this.dirty.add(id);
      return;
    }
    const lastSeen = Math.floor(this.options.clock.wallNow());
    const next = { ...p, online, lastSeen };
    this.byId.set(id, next);
    this.trackOffline(next);
    this.dirty.add(id);
    this.push({ op: 'online', id, online, lastSeen });
  }

  setEndpoints(id: number, endpoints: string[], natType: NatType): void {
    const p = this.byId.get(id);
    if (!p) return;
    if (p.natType === natType && p.endpoints.length === endpoints.length && p.endpoints.every((e, i) => e === endpoints[i])) return;
    this.byId.set(id, { ...p, endpoints, natType });
    this.dirty.add(id);
    this.push({ op: 'endpoints', id, endpoints, natType });
  }

  setDiscoKey(id: number, discoKey: string): void {
    const p = this.byId.get(id);
    if (!p || p.discoKey === discoKey) return;
    this.byId.set(id, { ...p, discoKey });
    this.dirty.add(id);
    this.push({ op: 'disco', id, discoKey });
  }

  /** Removes a node; its address goes back to the pool. Returns false if there was no such node. */
  async remove(id: number): Promise<boolean> {
    const removed = await this.store.write(async (tx) => {
      const row = await tx.nodeById(id);
      if (!row || !await tx.deleteNode(id)) return false;
      await tx.freeIpIndex(row.ipIndex);
      await tx.appendChange([{ op: 'remove', id }], this.replica);
      return true;
    });
    if (removed) this.forget(id);
    return removed;
  }

  /**
   * Rebuilds memory from the store's rows, for a replica that fell behind the feed further
   * than the store keeps it. Nodes with session changes not committed yet keep them.
   */
  async resync(): Promise<void> {
    const rows = await this.store.nodes();
    const present = new Set(rows.map((r) => r.id));
    for (const id of [...this.byId.keys()]) if (!present.has(id)) this.forget(id);
    for (const row of rows) if (!this.dirty.has(row.id)) this.remember(row);
  }

  /** Reads the ephemeral flag of nodes other replicas registered (one store read, only when there are any). */
  async learnEphemeral(): Promise<void> {
    if (this.unlearned.size === 0) return;
    const ids = new Set(this.unlearned);
    this.unlearned.clear();
    for (const row of await this.store.nodes()) {
      const p = ids.has(row.id) && row.ephemeral ? this.byId.get(row.id) : undefined;
      if (!p) continue;
      this.ephemeral.add(row.id);
      this.trackOffline(p);
    }
  }

  /**
   * Ephemeral nodes offline for longer than `timeoutMs`, for the sweeper, measured
   * on the monotonic clock (a wall-clock step must not expire everything or
   * nothing). Time before this registry loaded doesn't count: after a
   * coordinator outage its nodes get the whole timeout to reconnect.
   */
  expiredEphemeral(timeoutMs: number): number[] {
    const now = this.options.clock.now();
    const out: number[] = [];
    for (const id of this.ephemeral) {
      const p = this.byId.get(id);
      const since = this.offlineSince.get(id);
      if (p && !p.online && since !== undefined && now - since >= timeoutMs) out.push(id);
    }
    return out;
  }

  /**
   * Stamps "seen now" on nodes that hold a live session and writes it in one
   * transaction, without a delta (peers learn nothing from it). Called about
   * once a minute, so last-seen on disk is at most that stale after a crash.
   */
  async refreshLastSeen(ids: Iterable<number>): Promise<void> {
    const lastSeen = Math.floor(this.options.clock.wallNow());
    const touched: number[] = [];
    for (const id of ids) {
      const p = this.byId.get(id);
      if (!p || !p.online) continue;
      // Replaced, not mutated: queued upserts and the cached snapshot may hold the old object.
      this.byId.set(id, { ...p, lastSeen });
      touched.push(id);
    }
    if (touched.length === 0) return;
    await this.store.write(async (tx) => {
      await tx.setLastSeen(touched, lastSeen);
    });
  }

  /**
   * Commits one window of soft state (coalesced changes from control sessions) as the
   * next version, with the nodes' endpoints, disco keys, last seen and session holder, in
   * one transaction. Batched because a reconnect storm would otherwise cost one fsync per
   * node; none of this is acknowledged to anyone, and agents report it again on reconnect.
   *
   * A node whose session ended here but that another replica now serves keeps its
   * "online": that change is dropped (and memory put back) rather than committed.
   * Returns the version, or undefined when nothing was left to commit.
   */
  async commitWindow(changes: PeerChange[]): Promise<number | undefined> {
    const ids = [...this.dirty];
    this.dirty.clear();
    try {
      const { version, movedAway } = await this.store.write(async (tx) => {
        const known = ids.filter((id) => this.byId.has(id));
        const movedAway = new Set(await tx.recordSessions(this.replica, known.filter((id) => this.held.has(id)), known.filter((id) => !this.held.has(id))));
        const existing = new Set(await tx.saveSessionState(known.map((id) => {
          const p = this.byId.get(id)!;
          return { id, endpoints: p.endpoints, natType: p.natType, discoKey: p.discoKey, lastSeen: p.lastSeen };
        })));
        // A node removed since its changes were queued (here, or by another replica whose
        // removal this one hasn't followed yet) gets none: after its "remove", peers know it no more.
        const kept = changes.filter((c) => existing.has(changeNodeId(c)) && !(c.op === 'online' && !c.online && movedAway.has(c.id)));
        return { version: kept.length > 0 ? await tx.appendChange(kept, this.replica) : undefined, movedAway };
      });
      for (const id of movedAway) {
        const p = this.byId.get(id);
        if (p && !p.online) this.byId.set(id, { ...p, online: true });
      }
      return version;
    } catch (err) {
      for (const id of ids) this.dirty.add(id);
      throw err;
    }
  }

  /**
   * Replica liveness, from the hub's housekeeping: stamps this replica alive and marks
   * offline, in the feed, the nodes of replicas that stopped stamping (killed, or cut
   * off from the store) — their agents have reconnected elsewhere or are gone too.
   */
  async heartbeat(): Promise<void> {
    const released = await this.store.write(async (tx) => {
      await tx.heartbeat(this.replica);
      const dead = this.liveness.observe(await tx.replicaBeats(), this.options.clock.now());
      return releaseReplicas(tx, dead, Math.floor(this.options.clock.wallNow()), this.replica);
    });
    for (const c of released) this.applyChange(c);
  }

  /** Graceful stop: this replica leaves the store's list (its sessions were closed and committed first). */
  async leave(): Promise<void> {
    await this.store.write((tx) => tx.dropReplica(this.replica));
  }
}

function toPeer(row: NodeRow): PeerInfo {
  return {
    id: row.id, name: row.name, nodeKey: row.nodeKey, discoKey: row.discoKey,
    addresses: [`${row.ipv4}/32`, `${row.ipv6}/128`], endpoints: row.endpoints, natType: row.natType,
    online: row.onlineReplica !== null, lastSeen: row.lastSeen, tags: row.tags,
  };
}
