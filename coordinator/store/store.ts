/**
 * The coordinator's store, as one interface with two engines: SQLite (the
 * embedded default, one coordinator process) and PostgreSQL (any number of
 * coordinator replicas sharing one database). The registry and the hub are
 * written against this interface only; `openStore` picks the engine from
 * `--store`.
 *
 * The store knows rows, not rules: token checks, naming and address
 * allocation live in registry/. What the store guarantees:
 *
 * - **One writer at a time, across every process.** `write()` runs its
 *   function in one transaction that first takes the store's write lock
 *   (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock).
 *   Every read inside it sees everything committed before, so the registry's
 *   read-check-write logic is atomic across replicas without in-process locks;
 *   unique constraints (node key, name, address) are the backstop.
 * - **A totally ordered change feed.** `appendChange` inside a write gives the
 *   window's peer changes the next version number; versions commit in order
 *   (the write lock), so every replica that follows the feed (`changesSince`
 *   after `onCommit`) sees the same deltas under the same numbers.
 * - **Durability.** A write that resolved is on disk (SQLite synchronous=FULL;
 *   PostgreSQL's default synchronous_commit).
 *
 * Errors are KnitErrors: KNIT_ERR_STORE (unusable: corrupt, newer schema,
 * unreachable, a constraint broken) or KNIT_ERR_STORE_LOCKED (the write lock
 * held by someone else past the timeout: SQLite's busy timeout, PostgreSQL's
 * lock_timeout). Messages never contain a password from a store URL.
 */
import type { NatType, PeerChange } from '../../shared/wire/control.js';

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
  /** The replica holding the node's live control session, or null (offline). */
  onlineReplica: string | null;
}

/** The largest broadcast message (PostgreSQL's NOTIFY payload limit is 8000 bytes). */
export const MAX_BROADCAST_BYTES = 4000;

/** What a window writes per node that changed (see StoreTx.saveSessionState). */
export interface SessionState {
  id: number;
  endpoints: string[];
  natType: NatType;
  discoKey: string;
  lastSeen: number;
}

export type NewNode = Omit<NodeRow, 'id' | 'endpoints' | 'natType' | 'onlineReplica'>;
export type NewToken = Omit<TokenRow, 'revoked' | 'joins'>;

/** One committed version of the peer map: the (coalesced) changes that made it, and which replica made them. */
export interface ChangeRow {
  version: number;
  changes: PeerChange[];
  /** The replica that committed it ('' when none said: an admin command). Its own memory already shows it. */
  origin: string;
}

/** What a write transaction may do. Every method runs inside the caller's transaction. */
export interface StoreTx {
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /** Adds 1 to an integer meta value (missing = 0) and returns the value BEFORE the increment. */
  bumpMeta(key: string): Promise<number>;

  insertAdmin(id: string, secretHash: string, now: number): Promise<void>;
  adminCount(): Promise<number>;

  insertToken(t: NewToken): Promise<void>;
  token(id: string): Promise<TokenRow | undefined>;
  revokeToken(id: string): Promise<boolean>;
  /**
   * Uses one join of a token, atomically: only if it is not revoked and has a use left
   * (uses_left NULL = unlimited). Returns false, changing nothing, otherwise.
   */
  useToken(id: string): Promise<boolean>;

  /** Inserts a node (offline, no endpoints, NAT unknown) and returns its id. */
  insertNode(n: NewNode): Promise<number>;
  nodeByKey(nodeKey: string): Promise<NodeRow | undefined>;
  nodeById(id: number): Promise<NodeRow | undefined>;
  nameTaken(name: string): Promise<boolean>;
  /** Deletes a node; false if there was none. */
  deleteNode(id: number): Promise<boolean>;
  /**
   * Writes a window's session state (endpoints, NAT type, disco key, last seen) for many
   * nodes at once: one statement on PostgreSQL, however many nodes (the write lock is
   * held meanwhile, by every replica in turn). Returns the ids written: a node that is
   * gone (removed, perhaps by another replica) is skipped.
   */
  saveSessionState(rows: SessionState[]): Promise<number[]>;
  /**
   * Records that `replica` holds the sessions of `held`, and no longer those of `released`:
   * those go offline, but only where `replica` still holds them (one that lost a session
   * must not mark offline a node another replica now serves). Returns the ids among
   * `released` that another replica holds.
   */
  recordSessions(replica: string, held: number[], released: number[]): Promise<number[]>;
  /** Stamps `when` as the last-seen of every node in `ids`. */
  setLastSeen(ids: number[], when: number): Promise<void>;
  /** Marks offline every node held by one of `replicas`; returns their ids. */
  releaseReplicas(replicas: string[]): Promise<number[]>;

  /** Takes (removes and returns) the lowest freed address index, or undefined. */
  takeFreeIpIndex(): Promise<number | undefined>;
  freeIpIndex(index: number): Promise<void>;

  /** Commits `changes` as the next peer-map version (one past the newest), made by replica `origin`, and returns it. */
  appendChange(changes: PeerChange[], origin?: string): Promise<number>;

  /**
   * Replica liveness: adds one to this replica's beat count (registering it). Counts,
   * not timestamps: each replica judges the others by whether their count moves on
   * its own monotonic clock, so neither clock skew between machines nor a step of
   * a wall clock can declare a live replica dead.
   */
  heartbeat(replica: string): Promise<void>;
  /** Every registered replica and its beat count, ordered by id. */
  replicaBeats(): Promise<{ id: string; beat: number }[]>;
  dropReplica(replica: string): Promise<void>;

  /**
   * Runs `fn` in a savepoint: if it throws, only its own changes are undone and the
   * error is rethrown; the surrounding transaction goes on.
   */
  savepoint<T>(fn: () => Promise<T>): Promise<T>;
}

/** Reads that need no write lock (each sees one consistent, committed state). */
export interface StoreReader {
  getMeta(key: string): Promise<string | undefined>;
  adminHash(id: string): Promise<string | undefined>;
  tokens(): Promise<TokenRow[]>;
  nodes(): Promise<NodeRow[]>;
  /** The newest committed version (0 when nothing was ever committed). */
  latestVersion(): Promise<number>;
  /** Committed versions after `version`, oldest first, at most `limit`. */
  changesSince(version: number, limit: number): Promise<ChangeRow[]>;
}

export interface Store extends StoreReader {
  readonly engine: 'sqlite' | 'postgres';
  /** Where the data lives, for messages: a file path, or the URL without its password. */
  readonly where: string;
  /**
   * Runs `fn` in one write transaction holding the store-wide write lock; commits
   * when it resolves, rolls back when it throws (and rethrows). Writes from one
   * process run one after another. Inside `fn`, use only `tx`: the store's own
   * reads wait for the write to end (SQLite shares one connection), so calling
   * one there never returns.
   */
  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  /**
   * Calls `fn` after a version is committed by any process sharing this store
   * (PostgreSQL: LISTEN/NOTIFY; SQLite: this process's own writes). A hint only:
   * followers read `changesSince`, and also poll in case a notification is lost.
   * Returns the remover.
   */
  onCommit(fn: () => void): () => void;
  /**
   * Passes a small message (at most MAX_BROADCAST_BYTES) at once to every process sharing
   * this store, itself included, without storing it (PostgreSQL NOTIFY) — for what only
   * the replica holding a session can do, like relaying call-me-maybe to its agent. Best
   * effort: lost if nobody listens. SQLite has no one else to tell; it does nothing.
   */
  broadcast(message: string): Promise<void>;
  /** Calls `fn` with every broadcast message. Returns the remover. */
  onBroadcast(fn: (message: string) => void): () => void;
  /** Deletes change rows older than `keep` versions behind the newest. */
  pruneChanges(keep: number): Promise<void>;
  close(): Promise<void>;
}
