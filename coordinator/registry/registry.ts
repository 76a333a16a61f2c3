/**
 * The registry: the mesh's nodes, join tokens, admin credentials and address
 * pool, on top of the store. It keeps every node's public record in memory
 * (a 10,000-node map is a few MB) so that control sessions never touch SQLite
 * on the read path, and it turns each accepted mutation into a PeerChange for
 * the hub to fan out.
 *
 * Rules that matter for security live here: tokens are compared in constant
 * time on their hash; token consumption and address allocation happen in the
 * same BEGIN IMMEDIATE transaction, so a single-use token yields exactly one
 * node however many joins race for it.
 */
import { decodeKey, encodeKey, generateKeyPair, publicKeyOf } from '../../shared/crypto/keys.js';
import { defaultRandomBytes, equalBytes, sha256Hex } from '../../shared/crypto/seal.js';
import type { Clock, RandomBytes } from '../../shared/clock.js';
import { KnitError } from '../../shared/errors.js';
import { intToIpv4, parseIpv4Prefix, prefixHost, prefixHostCount, ulaHost, type Ipv4Prefix } from '../../shared/net/cidr.js';
import { encodeToken, parseToken, TOKEN_ID_LEN, TOKEN_SECRET_LEN, type ParsedToken } from '../../shared/token.js';
import { joinProof, MAX_HOSTNAME_LEN, type JoinRequest, type JoinResponse, type NatType, type PeerChange, type PeerInfo } from '../../shared/wire/control.js';
import type { NodeRow, SqliteStore, TokenRow } from '../store/sqlite.js';

/**
 * The default mesh prefix: a /16 in the middle of RFC 6598 shared space (as
 * Tailscale uses 100.64.0.0/10). 65,534 nodes is far beyond the meshes Knit
 * aims at, and staying away from the bottom of 100.64.0.0/10 — where carriers
 * number their CGNAT gateways and customers — keeps a peer's /32 route from
 * shadowing an address the host needs on its own uplink.
 */
export const DEFAULT_IPV4_PREFIX = '100.96.0.0/16';

/** The canonical text of a prefix given on the command line ("10.1.2.3/16" → "10.1.0.0/16"), or undefined. */
export function canonicalIpv4Prefix(text: string): string | undefined {
  const p = parseIpv4Prefix(text);
  return p && `${intToIpv4(p.base)}/${p.bits}`;
}

export interface RegistryOptions {
  clock: Clock; // now() stamps changes for fan-out latency; wallNow() stamps what people read (expiry, last seen)
  url: string; // the coordinator's public URL, written into tokens
  ipv4Prefix?: string; // fixed when the store is new; afterwards it must match (or be left out)
  random?: RandomBytes;
}

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
  /** The version the peer map starts at this run (one past the last run's, so every resume gets a snapshot). */
  readonly startVersion: number;
  private readonly byId = new Map<number, PeerInfo>();
  private readonly byKey = new Map<string, number>();
  private readonly ephemeral = new Set<number>();
  private readonly random: RandomBytes;
  private pending: PeerChange[] = [];
  /** Nodes whose endpoints / disco key / last-seen changed in memory but not yet on disk. */
  private readonly dirty = new Set<number>();
  private pendingSince = 0;
  /** Per hostname, the next -N suffix worth trying, so a thousand "ci" nodes don't probe 1,000 names each. */
  private readonly nameHints = new Map<string, number>();
  /**
   * Since when (monotonic ms) each offline ephemeral node has been offline, counted from
   * this registry's load at the earliest: time the coordinator was down doesn't count, and
   * a step of the wall clock (NTP, a resumed VM) neither expires every node nor none.
   */
  private readonly offlineSince = new Map<number, number>();

  /** The public URL written into new tokens (settable: with port 0 it is known only after listen). */
  publicUrl: string;

  constructor(readonly store: SqliteStore, private readonly options: RegistryOptions) {
    this.publicUrl = options.url;
    this.random = options.random ?? defaultRandomBytes;
    const init = store.immediate(() => {
      let priv = decodeKey(store.getMeta('coordinator_private_key'));
      if (!priv) {
        priv = generateKeyPair().privateKey;
        store.setMeta('coordinator_private_key', encodeKey(priv));
      }
      const wanted = options.ipv4Prefix === undefined ? undefined : canonicalIpv4Prefix(options.ipv4Prefix);
      if (options.ipv4Prefix !== undefined && !wanted) throw new KnitError('KNIT_ERR_USAGE', `${options.ipv4Prefix} is not an IPv4 prefix between /8 and /30`);
      let prefix = store.getMeta('ipv4_prefix');
      if (!prefix) {
        prefix = wanted ?? DEFAULT_IPV4_PREFIX;
        store.setMeta('ipv4_prefix', prefix);
      } else if (wanted && wanted !== canonicalIpv4Prefix(prefix)) {
        // Renumbering a live mesh would break every tunnel; say so instead of ignoring the flag.
        throw new KnitError('KNIT_ERR_USAGE', `this mesh already uses ${prefix}; the IPv4 prefix is fixed when the data dir is created`);
      }
      let ula = store.getMeta('ula_prefix');
      if (!ula) {
        // RFC 4193: fd00::/8 + 40 random bits = a /48 unique to this mesh.
        const r = this.random(5);
        ula = `fd${hex(r.subarray(0, 1))}:${hex(r.subarray(1, 3))}:${hex(r.subarray(3, 5))}::/48`;
        store.setMeta('ula_prefix', ula);
      }
      const version = Number(store.getMeta('version') ?? '0') + 1;
      store.setMeta('version', String(version));
      return { priv, prefix, ula, version };
    });
    this.coordinatorPrivate = init.priv;
    this.coordinatorKey = encodeKey(publicKeyOf(init.priv));
    this.ipv4PrefixText = init.prefix;
    this.ipv4Prefix = parseIpv4Prefix(init.prefix)!;
    this.ulaPrefix = init.ula;
    this.startVersion = init.version;
    for (const row of store.nodes()) this.remember(row, false);
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
  isEphemeral(id: number): boolean {
    return this.ephemeral.has(id);
  }

  /** Takes the changes accepted since the last call, and when the oldest of them was accepted. */
  takePending(): { changes: PeerChange[]; since: number } {
    const out = { changes: this.pending, since: this.pendingSince };
    this.pending = [];
    return out;
  }
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  private push(c: PeerChange): void {
    if (this.pending.length === 0) this.pendingSince = this.options.clock.now();
    this.pending.push(c);
  }

  private remember(row: NodeRow, online: boolean): PeerInfo {
    const peer: PeerInfo = {
      id: row.id, name: row.name, nodeKey: row.nodeKey, discoKey: row.discoKey,
      addresses: [`${row.ipv4}/32`, `${row.ipv6}/128`], endpoints: row.endpoints, natType: row.natType,
      online, lastSeen: row.lastSeen, tags: row.tags,
    };
    this.byId.set(row.id, peer);
    this.byKey.set(row.nodeKey, row.id);
    if (row.ephemeral) {
      this.ephemeral.add(row.id);
      if (!online) this.offlineSince.set(row.id, this.options.clock.now());
    }
    return peer;
  }

  // ---- admin credential and tokens ---------------------------------------------

  private mint(kind: 'join' | 'admin'): { id: string; secretHash: string; text: string } {
    const id = this.random(TOKEN_ID_LEN);
    const secret = this.random(TOKEN_SECRET_LEN);
    const text = encodeToken({ kind, id, secret, coordinatorKey: decodeKey(this.coordinatorKey)!, url: this.publicUrl });
    return { id: hex(id), secretHash: sha256Hex(secret), text };
  }

  /** Creates the admin credential on first start; returns the token text exactly once, else undefined. */
  ensureAdmin(): string | undefined {
    const now = this.options.clock.wallNow();
    return this.store.immediate(() => {
      if (this.store.adminCount() > 0) return undefined;
      const t = this.mint('admin');
      this.store.insertAdmin(t.id, t.secretHash, now);
      return t.text;
    });
  }

  verifyAdmin(tokenText: string | undefined): boolean {
    const t = parseToken(tokenText);
    if (!t || t.kind !== 'admin') return false;
    const hash = this.store.adminHash(t.id);
    return hash !== undefined && equalBytes(Buffer.from(hash, 'hex'), Buffer.from(sha256Hex(t.secret), 'hex'));
  }

  createToken(opts: TokenOptions): { token: string; summary: TokenSummary } {
    const now = this.options.clock.wallNow();
    const tags = opts.tags ?? [];
    const t = this.mint('join');
    const row = {
      id: t.id, secretHash: t.secretHash, reusable: opts.reusable === true,
      usesLeft: opts.reusable ? (opts.uses ?? null) : 1, ephemeral: opts.ephemeral === true,
      expires: opts.expiresInMs === undefined ? null : now + opts.expiresInMs, tags, created: now,
    };
    this.store.insertToken(row);
    const { secretHash: _omit, ...summary } = { ...row, revoked: false, joins: 0 };
    return { token: t.text, summary };
  }

  listTokens(): TokenSummary[] {
    return this.store.tokens().map(({ secretHash: _omit, ...rest }) => rest);
  }

  revokeToken(id: string): boolean {
    return /^[0-9a-f]{16}$/.test(id) && this.store.revokeToken(id);
  }

  // ---- join -------------------------------------------------------------------

  /** The hostname, or hostname-2, -3, … when taken; names stay valid hostnames (≤ 63 characters). */
  private uniqueName(hostname: string): string {
    const base = hostname.toLowerCase();
    if (!this.store.nameTaken(base)) return base;
    for (let i = this.nameHints.get(base) ?? 2; ; i++) {
      const suffix = `-${i}`;
      const name = base.slice(0, MAX_HOSTNAME_LEN - suffix.length) + suffix;
      if (!this.store.nameTaken(name)) {
        this.nameHints.set(base, i + 1);
        return name;
      }
    }
  }

  private allocateIpIndex(): number {
    const reused = this.store.takeFreeIpIndex();
    if (reused !== undefined) return reused;
    const next = Number(this.store.getMeta('next_ip_index') ?? '0');
    if (next >= prefixHostCount(this.ipv4Prefix)) throw new KnitError('KNIT_ERR_ADDRESS_EXHAUSTED');
    this.store.setMeta('next_ip_index', String(next + 1));
    return next;
  }

  /**
   * Checks and consumes the token and registers the node, atomically. Joining
   * again with a node key the mesh already knows returns that node unchanged
   * and consumes no use (an agent re-running `up` must not burn tokens), but
   * the token must still be valid: a revoked or expired token proves nothing.
   */
  join(req: JoinRequest): { response: JoinResponse; created: boolean } {
    const [r] = this.joinMany([req]);
    if (!r!.ok) throw r!.error;
    return r!;
  }

  /**
   * Group commit: several joins in ONE transaction, so a join storm costs one
   * fsync per batch instead of one per node (on a disk where a commit takes
   * ~3 ms that is the difference between ~250 and ~1,000 joins a second).
   * Each join runs in its own savepoint: a refused one (token used, expired …)
   * changes nothing and doesn't disturb the others. Nothing is answered, and
   * nothing enters the in-memory map, before the batch is committed.
   */
  joinMany(reqs: JoinRequest[]): JoinResult[] {
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
      try {
        this.store.immediate(() => {
          for (const [i, r] of results.entries()) {
            if (!('token' in r)) continue;
            try {
              results[i] = { ok: true, ...this.store.immediate(() => this.joinRow(r.req, r.token, now)), req: r.req };
            } catch (error) {
              results[i] = { ok: false, error };
            }
          }
        });
      } catch (error) {
        return reqs.map(() => ({ ok: false, error })); // the commit failed: none of them joined
      }
    }
    return results.map((r) => {
      if (!r.ok || !('row' in r)) return r as JoinResult;
      let peer = this.byId.get(r.row.id);
      if (r.created || !peer) {
        peer = this.remember(r.row, false);
        this.push({ op: 'upsert', peer });
      }
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

  /** One join's rows (inside the caller's transaction): the token checked and used, the node inserted or found. */
  private joinRow(req: JoinRequest, t: ParsedToken, now: number): { row: NodeRow; created: boolean } {
    const tok = this.store.token(t.id);
    if (!tok || tok.revoked || !equalBytes(Buffer.from(tok.secretHash, 'hex'), Buffer.from(sha256Hex(t.secret), 'hex'))) {
      throw new KnitError('KNIT_ERR_TOKEN_INVALID');
    }
    if (tok.expires !== null && now >= tok.expires) throw new KnitError('KNIT_ERR_TOKEN_EXPIRED');
    const existing = this.store.nodeByKey(req.nodeKey);
    if (existing) return { row: existing, created: false };
    if (tok.usesLeft !== null && tok.usesLeft <= 0) throw new KnitError('KNIT_ERR_TOKEN_USED');
    const ipIndex = this.allocateIpIndex();
    const fields = {
      nodeKey: req.nodeKey, discoKey: req.discoKey ?? '', name: this.uniqueName(req.hostname), ipIndex,
      ipv4: prefixHost(this.ipv4Prefix, ipIndex), ipv6: ulaHost(this.ulaPrefix, ipIndex + 1), tags: tok.tags,
      ephemeral: tok.ephemeral, created: now, lastSeen: Math.floor(now), tokenId: tok.id,
    };
    const id = this.store.insertNode(fields);
    this.store.useToken(tok.id);
    return { row: { ...fields, id, endpoints: [], natType: 'unknown' as NatType }, created: true };
  }

  // ---- mutations from control sessions and admins ------------------------------------

  setOnline(id: number, online: boolean): void {
    const p = this.byId.get(id);
    if (!p || p.online === online) return;
    const lastSeen = Math.floor(this.options.clock.wallNow());
    this.byId.set(id, { ...p, online, lastSeen });
    if (online) this.offlineSince.delete(id);
    else if (this.ephemeral.has(id)) this.offlineSince.set(id, this.options.clock.now());
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
  remove(id: number): boolean {
    const p = this.byId.get(id);
    if (!p) return false;
    const row = this.store.nodeById(id);
    this.store.immediate(() => {
      this.store.deleteNode(id);
      if (row) this.store.freeIpIndex(row.ipIndex);
    });
    this.byId.delete(id);
    this.dirty.delete(id);
    this.byKey.delete(p.nodeKey);
    this.ephemeral.delete(id);
    this.offlineSince.delete(id);
    this.push({ op: 'remove', id });
    return true;
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
  refreshLastSeen(ids: Iterable<number>): void {
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
    this.store.immediate(() => {
      for (const id of touched) this.store.setLastSeen(id, lastSeen);
    });
  }

  /**
   * Writes the window's soft state (endpoints, disco keys, last seen) and the
   * new peer-map version in one transaction. Batched because a reconnect
   * storm would otherwise cost one fsync per node; none of this state is
   * acknowledged to anyone, and agents report it again on reconnect.
   */
  persistWindow(version: number): void {
    const ids = [...this.dirty];
    this.dirty.clear();
    this.store.immediate(() => {
      for (const id of ids) {
        const p = this.byId.get(id);
        if (!p) continue;
        this.store.setEndpoints(id, p.endpoints, p.natType);
        this.store.setDiscoKey(id, p.discoKey);
        this.store.setLastSeen(id, p.lastSeen);
      }
      this.store.setMeta('version', String(version));
    });
  }
}
