/**
 * The control hub: every agent's control session, transport-independent.
 * The ws shell (ws-server.ts) and the simulator's in-process transport both
 * hand it a `SessionTransport`; it never touches a socket or reads the time
 * except through the injected Clock.
 *
 * Session flow: challenge → hello (proof of node key) → welcome (proof of the
 * coordinator key) → snapshot or missed deltas → coalesced deltas. One
 * session per node: a new authenticated session replaces the old one.
 *
 * Fan-out follows the store's change feed, so every replica sharing the store
 * sends the same deltas under the same versions (docs/deployment.md):
 * - session changes (online, endpoints, disco keys) queue PeerChanges; the
 *   first queued change arms one timer (at once after a quiet spell, else at
 *   the end of the current window: ≥ 50 ms, stretched to the last flush's
 *   duration under load); when it fires the window is coalesced and committed
 *   to the feed as one version (Registry.commitWindow);
 * - joins and removals commit their own version (Registry);
 * - after any commit — this process's, or another replica's announced by the
 *   store (LISTEN/NOTIFY), or found by the housekeeping poll — `follow` reads
 *   the versions this replica hasn't sent, in order, applies them to the
 *   registry's memory, encodes each once as bytes, and hands the same Buffer
 *   to every ready session.
 * Work per change is proportional to the change plus one send per session —
 * never a rebuild of anyone's map.
 *
 * Snapshots: a client that needs the whole map gets the newest encoded
 * snapshot plus the (already encoded) deltas committed since it. A snapshot is
 * encoded at most once per version, and only when the tail of deltas behind
 * the cached one has grown long, so a connect storm (every connect is a
 * change) doesn't re-encode a 10,000-node map every window.
 *
 * Housekeeping (one Clock timer, every 10 s): this replica stamps itself alive
 * and marks offline the nodes of replicas that stopped doing so; ephemeral
 * nodes offline past their timeout are removed; about once a minute the nodes
 * with a live session get their last-seen written, so a crash loses at most a
 * minute; the feed is polled in case a notification was lost, and trimmed.
 */
import type { Clock, RandomBytes } from '../../shared/clock.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { KnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import {
  CONTROL_PROTOCOL_VERSION, NONCE_BYTES, controlAuthKey, decodeClientMessage, decodeServerMessage, helloProof, proofsEqual, welcomeProof,
  type ClientMessage, type DeltaMsg, type HelloMsg, type PathReport, type RelayInfo,
} from '../../shared/wire/control.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { Registry } from '../registry/registry.js';
import { REPLICA_HEARTBEAT_MS } from '../registry/liveness.js';
import { ChangeLog, coalesce } from '../registry/changes.js';
import type { ChangeRow } from '../store/store.js';
import { reportableEndpoints } from './endpoint-policy.js';
import { PATHS_MIN_INTERVAL_MS, PathReports, type PathEdge } from './path-reports.js';

export interface SessionTransport {
  send(text: string): void;
  /**
   * Sends a frame shared by many sessions (a snapshot or delta), already
   * encoded once as the UTF-8 bytes of its JSON text. A transport that can
   * write bytes implements it, so sending one frame to 10,000 sockets encodes
   * and copies nothing; without it the hub sends the decoded string.
   */
  sendEncoded?(bytes: Buffer): void;
  close(code: number, reason: string): void;
  readonly remoteAddress: string;
}

export interface SessionHandle {
  receive(frame: string): void;
  closed(): void;
}

export interface HubOptions {
  registry: Registry;
  clock: Clock;
  logger: Logger;
  metrics: CoordinatorMetrics;
  stunPorts: number[];
  /** Relays announced in the welcome (docs/relay.md); read at each welcome. */
  relays?: () => RelayInfo[];
  random?: RandomBytes;
  /** Coalescing window for peer-map deltas. 50 ms keeps fan-out well under 100 ms while folding join storms. */
  coalesceMs?: number;
  /** Accept loopback endpoints in reports (single-machine tests only). */
  allowLoopbackEndpoints?: boolean;
  /** Remove ephemeral nodes offline this long; undefined = never. */
  ephemeralTimeoutMs?: number;
  /** How often online nodes' last-seen is written (default 60 s: not per ping, not lost to a crash). */
  lastSeenRefreshMs?: number;
}

/** An agent that connects but never says hello is cut off after this long. */
export const HELLO_TIMEOUT_MS = 10_000;
/** call-me-maybe is cheap to send and costs the target a punch burst: 10/s with bursts of 20. */
const CMM_RATE_PER_S = 10;
const CMM_BURST = 20;
/** Housekeeping period: the replica heartbeat, and how late an ephemeral node may go. */
const HOUSEKEEPING_MS = REPLICA_HEARTBEAT_MS;
/** Versions kept in the store's feed: enough for agents that were away a while to resume with deltas. */
const FEED_KEEP_VERSIONS = 16_384;
/** How long a window that the store refused waits before it is tried again. */
const STORE_RETRY_MS = 1000;
/** Versions read from the feed per query while catching up. */
const FOLLOW_BATCH = 512;
export const LAST_SEEN_REFRESH_MS = 60_000;
/**
 * How far a cached snapshot may lag before a new one is encoded: a client
 * needing the map gets it plus at most 64 deltas, together at most 1/8 more
 * bytes than the snapshot. Encoding a 10,000-node map (~3 MB) costs tens of ms;
 * replaying a short tail costs the client little (every change is a "set").
 */
const SNAPSHOT_TAIL_MAX_DELTAS = 64;
const SNAPSHOT_TAIL_MAX_FRACTION = 1 / 8;

interface Session {
  t: SessionTransport;
  /** 'catching-up': hello was proven for a key not known here yet, and the feed is being read (see hello). */
  state: 'await-hello' | 'catching-up' | 'ready' | 'closed';
  serverNonce: string;
  nodeId: number;
  nodeKey: string;
  helloTimer?: ReturnType<Clock['setTimeout']>;
  cmmTokens: number;
  cmmAt: number;
  /** When this session's last path report was taken (reports closer than PATHS_MIN_INTERVAL_MS are dropped). */
  pathsAt: number;
  /** An endpoint of this session's was dropped and logged (once per session: a report repeats). */
  refusalLogged?: boolean;
}

function sendShared(s: Session, bytes: Buffer): void {
  if (s.t.sendEncoded) s.t.sendEncoded(bytes);
  else s.t.send(bytes.toString());
}

export class ControlHub {
  readonly log: ChangeLog;
  private readonly ready = new Map<number, Session>(); // node id → its one live session
  private readonly all = new Set<Session>();
  private readonly pathReports = new PathReports();
  private readonly changeListeners = new Set<(delta: DeltaMsg) => void>();
  private flushTimer: ReturnType<Clock['setTimeout']> | undefined;
  /** When the next delta may go out (see noteChanges and flush). */
  private nextFlushAt = -Infinity;
  /**
   * Each node's control-auth key (HKDF of X25519(coordinator, node)), kept once its holder has
   * proven it: the key never changes, and re-deriving it costs an X25519 per reconnect, which
   * is most of a reconnect storm's CPU. Only registered nodes are cached; removal drops it.
   */
  private readonly authKeys = new Map<string, Uint8Array>();
  private housekeepingTimer: ReturnType<Clock['setTimeout']> | undefined;
  private lastSeenWrittenAt: number;
  private snapshot: { version: number; bytes: Buffer } | undefined;
  private readonly random: RandomBytes;
  private stopped = false;
  /** A window is being committed (the next one waits for it: versions stay in order per replica). */
  private flushing: Promise<void> | undefined;
  /** A follow pass is running, and whether another was asked for meanwhile. */
  private following: Promise<void> | undefined;
  private followAgain = false;
  /** When the changes of this replica's own committed versions were accepted (fan-out latency). */
  private readonly acceptedAt = new Map<number, number>();
  private readonly unsubscribe: (() => void)[];

  constructor(private readonly o: HubOptions) {
    this.random = o.random ?? defaultRandomBytes;
    this.log = new ChangeLog(o.registry.startVersion, o.registry.history);
    this.lastSeenWrittenAt = o.clock.now();
    this.unsubscribe = [
      o.registry.store.onCommit(() => void this.follow()),
      o.registry.store.onBroadcast((m) => this.relayed(m)),
    ];
    this.armHousekeeping();
  }

  get onlineCount(): number {
    return this.ready.size;
  }

  connect(t: SessionTransport): SessionHandle {
    if (this.stopped) {
      // An upgrade that raced shutdown: nothing to serve, and no timer may outlive stop().
      t.close(1001, 'coordinator shutting down');
      return { receive() {}, closed() {} };
    }
    const s: Session = {
      t, state: 'await-hello', serverNonce: Buffer.from(this.random(NONCE_BYTES)).toString('base64'),
      nodeId: -1, nodeKey: '', cmmTokens: CMM_BURST, cmmAt: this.o.clock.now(), pathsAt: -Infinity,
    };
    this.all.add(s);
    this.o.metrics.connections++;
    s.helloTimer = this.o.clock.setTimeout(() => this.close(s, 4408, 'no hello in time'), HELLO_TIMEOUT_MS);
    t.send(JSON.stringify({ type: 'challenge', v: CONTROL_PROTOCOL_VERSION, serverNonce: s.serverNonce, coordinatorKey: this.o.registry.coordinatorKey }));
    return {
      receive: (frame) => this.receive(s, frame),
      closed: () => this.closed(s),
    };
  }

  /** Session changes were queued: make sure a window commit is coming. */
  noteChanges(): void {
    if (this.flushTimer !== undefined || this.flushing || this.stopped || !this.o.registry.hasPending) return;
    // At most one window per period: a change after a quiet spell goes out on the next turn of
    // the event loop (so a lone endpoint change isn't held back), one that follows a flush
    // waits until its window is over, and everything accepted meanwhile folds into it.
    const wait = Math.max(0, this.nextFlushAt - this.o.clock.now());
    this.flushTimer = this.o.clock.setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, wait);
  }

  /**
   * Commits the pending window as one version of the feed, then sends it (and anything
   * else new in the feed) to every ready session. Resolves when both are done.
   */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => this.flush());
    this.flushing = this.commitWindow().finally(() => {
      this.flushing = undefined;
      this.noteChanges(); // changes queued while this window committed
    });
    return this.flushing;
  }

  private async commitWindow(): Promise<void> {
    const startedAt = this.o.clock.now();
    const { changes, since } = this.o.registry.takePending();
    const folded = coalesce(changes);
    if (folded.length === 0 && !this.o.registry.hasPending) return; // nothing for the feed, and no rows to record
    try {
      const version = await this.o.registry.commitWindow(folded);
      if (version !== undefined) this.acceptedAt.set(version, since);
    } catch (err) {
      // The store is unreachable or failing: the window is kept and retried a second later,
      // with whatever comes meanwhile (the mesh keeps working from memory; new changes wait).
      this.o.registry.requeue(changes, since);
      this.o.logger.error('could not commit the peer map window', { err: (err as Error).message });
      this.nextFlushAt = this.o.clock.now() + STORE_RETRY_MS;
      return;
    }
    await this.follow();
    const now = this.o.clock.now();
    const took = Math.max(0, now - startedAt);
    this.o.metrics.flush.observe(took / 1000);
    // The next window lasts at least as long as this flush took: under a connect storm (every
    // connect is a change for every peer) fan-out gets at most about half the event loop, the
    // rest goes to handshakes, and more changes fold into each delta.
    this.nextFlushAt = now + Math.max(this.o.coalesceMs ?? 50, took);
  }

  /**
   * Sends every version of the feed this replica hasn't sent yet, in order. One pass at a
   * time; a call during a pass makes it read once more before it ends. Resolves when the
   * replica has caught up with what the store had when the call was made.
   */
  follow(): Promise<void> {
    if (this.following) {
      this.followAgain = true;
      return this.following;
    }
    this.following = (async () => {
      try {
        do {
          this.followAgain = false;
          for (;;) {
            const rows = await this.o.registry.store.changesSince(this.log.version, FOLLOW_BATCH);
            if (rows.length > 0 && rows[0]!.version > this.log.version + 1) {
              // Versions this replica never saw are gone from the store (it was cut off from it
              // for longer than the feed is kept): its memory is rebuilt from the rows instead.
              this.o.logger.warn('fell behind the change feed; reloading the peer map', { had: this.log.version, next: rows[0]!.version });
              await this.o.registry.resync();
            }
            for (const row of rows) this.deliver(row);
            if (rows.length < FOLLOW_BATCH) break;
          }
        } while (this.followAgain && !this.stopped);
      } catch (err) {
        this.o.logger.error('could not read the change feed', { err: (err as Error).message });
      } finally {
        this.following = undefined;
      }
    })();
    return this.following;
  }

  /** One committed version: into memory, into the log, out to every ready session. */
  private deliver(row: ChangeRow): void {
    if (row.version <= this.log.version) return;
    const foreign = row.origin !== this.o.registry.replica;
    for (const c of row.changes) {
      const removedKey = c.op === 'remove' ? this.o.registry.peer(c.id)?.nodeKey : undefined; // before memory forgets it
      if (foreign) this.o.registry.applyChange(c);
      if (c.op === 'remove') this.dropSession(c.id, removedKey);
    }
    if (foreign) this.noteChanges(); // applying it may have queued a correction (see Registry.applyChange)
    const { msg, bytes } = this.log.append(row.version, row.changes);
    for (const s of this.ready.values()) sendShared(s, bytes);
    this.o.metrics.deltasSent += this.ready.size;
    for (const l of this.changeListeners) l(msg);
    const since = this.acceptedAt.get(row.version);
    if (since !== undefined) {
      this.acceptedAt.delete(row.version);
      this.o.metrics.fanout.observe(Math.max(0, this.o.clock.now() - since) / 1000);
    }
  }

  /** Ends a node's session with an error frame and the error's close code. */
  kick(nodeId: number, err: KnitError): void {
    const s = this.ready.get(nodeId);
    if (s) this.fail(s, err);
  }

  /** A removed node (by this replica or another): its cached key and reports go, its session is closed for good. */
  private dropSession(id: number, nodeKey: string | undefined): void {
    if (nodeKey !== undefined) this.authKeys.delete(nodeKey);
    this.pathReports.forget(id);
    // KNIT_ERR_NODE_UNKNOWN closes with 4404, which tells the agent not to retry.
    this.kick(id, new KnitError('KNIT_ERR_NODE_UNKNOWN', 'this node was removed from the mesh'));
  }

  /** Removes a node (admin or ephemeral expiry): committed to the feed, then sent to everyone. */
  async removeNode(id: number): Promise<boolean> {
    const nodeKey = this.o.registry.peer(id)?.nodeKey;
    const removed = await this.o.registry.remove(id);
    if (removed) {
      this.dropSession(id, nodeKey);
      await this.follow();
    }
    return removed;
  }

  /**
   * Closes every session, commits the window that made them offline, and leaves the
   * replica list, so other replicas see this one's nodes offline at once.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const u of this.unsubscribe) u();
    if (this.flushTimer !== undefined) this.o.clock.clearTimeout(this.flushTimer);
    if (this.housekeepingTimer !== undefined) this.o.clock.clearTimeout(this.housekeepingTimer);
    this.flushTimer = this.housekeepingTimer = undefined;
    for (const s of [...this.all]) this.close(s, 1001, 'coordinator shutting down');
    try {
      await this.flushing;
      if (this.o.registry.hasPending) await this.flush();
      await this.following;
      await this.o.registry.leave();
    } catch (err) {
      this.o.logger.error('could not record the shutdown in the store', { err: (err as Error).message });
    }
  }

  private armHousekeeping(): void {
    this.housekeepingTimer = this.o.clock.setTimeout(() => {
      this.housekeepingTimer = undefined;
      if (this.stopped) return;
      this.housekeeping().catch((err: unknown) => {
        this.o.logger.error('housekeeping failed', { err: (err as Error).message });
      }).finally(() => {
        if (!this.stopped) this.armHousekeeping();
      });
    }, HOUSEKEEPING_MS);
  }

  /** One housekeeping pass (exposed for tests that drive it with a manual clock). */
  async housekeeping(): Promise<void> {
    await this.o.registry.heartbeat();
    await this.follow(); // a lost notification costs at most one period
    await this.o.registry.learnEphemeral();
    if (this.o.ephemeralTimeoutMs !== undefined) {
      for (const id of this.o.registry.expiredEphemeral(this.o.ephemeralTimeoutMs)) {
        this.o.logger.info('ephemeral node expired', { node: id });
        await this.removeNode(id);
      }
    }
    const now = this.o.clock.now();
    if (now - this.lastSeenWrittenAt >= (this.o.lastSeenRefreshMs ?? LAST_SEEN_REFRESH_MS)) {
      this.lastSeenWrittenAt = now;
      await this.o.registry.refreshLastSeen(this.ready.keys());
      await this.o.registry.store.pruneChanges(FEED_KEEP_VERSIONS);
    }
  }

  /** The endpoints of a report or call-me-maybe a peer may be sent to (endpoint-policy.ts); the rest counted, logged once per session. */
  private reportable(s: Session, endpoints: string[]): string[] {
    const { keep, dropped } = reportableEndpoints(endpoints, this.o.allowLoopbackEndpoints === true);
    if (dropped.length === 0) return endpoints;
    this.o.metrics.endpointsRefused += dropped.length;
    if (!s.refusalLogged) {
      s.refusalLogged = true;
      this.o.logger.debug('endpoints dropped from a report (loopback, multicast, broadcast or unspecified)', { node: s.nodeId, dropped });
    }
    return keep;
  }

  /** The frames that give a client the current map: the cached snapshot and the deltas since it, or a new snapshot. */
  private mapFrames(): Buffer[] {
    const cached = this.snapshot;
    if (cached && this.log.version - cached.version <= SNAPSHOT_TAIL_MAX_DELTAS) {
      const tail = this.log.since(cached.version);
      if (tail && tail.reduce((n, b) => n + b.length, 0) <= cached.bytes.length * SNAPSHOT_TAIL_MAX_FRACTION) return [cached.bytes, ...tail];
    }
    const version = this.log.version;
    // Built from memory, which may already hold changes of the next window; that is safe
    // because every change is a "set" and will be re-applied by the delta that follows.
    const bytes = Buffer.from(JSON.stringify({ type: 'snapshot', version, peers: [...this.o.registry.peers()] }));
    this.snapshot = { version, bytes };
    this.o.metrics.snapshotsEncoded++;
    return [bytes];
  }

  private fail(s: Session, err: KnitError): void {
    if (s.state === 'closed') return;
    s.t.send(JSON.stringify({ type: 'error', code: err.code, message: err.message }));
    this.close(s, err.closeCode, err.message);
  }

  private close(s: Session, code: number, reason: string): void {
    if (s.state === 'closed') return;
    s.t.close(code, reason.slice(0, 120));
    this.closed(s);
  }

  private closed(s: Session): void {
    if (s.state === 'closed') return;
    const wasReady = s.state === 'ready';
    s.state = 'closed';
    this.all.delete(s);
    this.o.metrics.connections--;
    if (s.helloTimer !== undefined) this.o.clock.clearTimeout(s.helloTimer);
    if (wasReady && this.ready.get(s.nodeId) === s) {
      this.ready.delete(s.nodeId);
      this.o.registry.setOnline(s.nodeId, false);
      this.noteChanges();
    }
  }

  private receive(s: Session, frame: string): void {
    if (s.state === 'closed') return;
    const d = decodeClientMessage(frame);
    if (!d.ok) {
      this.o.metrics.wsProtocolErrors++;
      return this.fail(s, new KnitError('KNIT_ERR_PROTOCOL', d.error));
    }
    this.guarded(s, () => this.handle(s, d.value));
  }

  /** Runs a step of a session; a KnitError it throws ends the session with that error, anything else as internal. */
  private guarded(s: Session, step: () => void): void {
    try {
      step();
    } catch (err) {
      if (err instanceof KnitError) return this.fail(s, err);
      this.o.logger.error('control session failed', { err: (err as Error).message });
      this.fail(s, new KnitError('KNIT_ERR_INTERNAL'));
    }
  }

  private handle(s: Session, m: ClientMessage): void {
    if (s.state === 'await-hello') {
      if (m.type !== 'hello') throw new KnitError('KNIT_ERR_PROTOCOL', 'the first message must be hello');
      return this.hello(s, m);
    }
    if (m.type === 'hello') throw new KnitError('KNIT_ERR_PROTOCOL', 'hello sent twice');
    if (s.state === 'catching-up') throw new KnitError('KNIT_ERR_PROTOCOL', 'nothing but hello may come before the welcome');
    const now = this.o.clock.now();
    if (m.type === 'paths') return this.paths(s, m.paths, now);
    if (m.type === 'endpoints') {
      this.o.registry.setEndpoints(s.nodeId, this.reportable(s, m.endpoints), m.natType);
      this.noteChanges();
      return;
    }
    // call-me-maybe: the target pings every endpoint in it, so the same rule as for reports
    // applies (no node can aim a peer's pings at its own loopback services); then a token
    // bucket per session, then relay with the sender's proven key as `from`.
    const endpoints = this.reportable(s, m.endpoints);
    // Nothing usable left of what it named: nothing to pass on (an empty one by itself still goes).
    if (endpoints.length === 0 && m.endpoints.length > 0) return;
    s.cmmTokens = Math.min(CMM_BURST, s.cmmTokens + ((now - s.cmmAt) / 1000) * CMM_RATE_PER_S);
    s.cmmAt = now;
    if (s.cmmTokens < 1) return; // over the rate: dropped silently, the sender retries on its own schedule
    s.cmmTokens -= 1;
    const target = this.o.registry.peerByKey(m.to);
    if (!target || target.id === s.nodeId) return;
    const frame = JSON.stringify({ type: 'call-me-maybe', from: s.nodeKey, endpoints });
    const ts = this.ready.get(target.id);
    if (ts) return ts.t.send(frame);
    // The target's session may be on another replica: the one that holds it passes it on.
    if (target.online) {
      this.o.registry.store.broadcast(JSON.stringify({ to: target.id, from: this.o.registry.replica, frame })).catch((err: unknown) => {
        this.o.logger.warn('could not pass call-me-maybe to the other replicas', { err: (err as Error).message });
      });
    }
  }

  /** A message another replica broadcast: a call-me-maybe for a session held here. */
  private relayed(message: string): void {
    let m: { to?: unknown; from?: unknown; frame?: unknown };
    try {
      m = JSON.parse(message) as typeof m;
    } catch {
      return this.o.logger.warn('dropped a malformed message from another replica');
    }
    if (m === null || typeof m !== 'object' || m.from === this.o.registry.replica || typeof m.to !== 'number' || typeof m.frame !== 'string') return;
    // Only what this hub itself would send: a call-me-maybe frame that decodes as one.
    const d = decodeServerMessage(m.frame);
    if (!d.ok || d.value.type !== 'call-me-maybe') return this.o.logger.warn('dropped a malformed message from another replica');
    this.ready.get(m.to)?.t.send(m.frame);
  }

  /** Stores a node's view of its paths, at most one report per PATHS_MIN_INTERVAL_MS per session. */
  private paths(s: Session, reports: PathReport[], now: number): void {
    if (now - s.pathsAt < PATHS_MIN_INTERVAL_MS) return;
    s.pathsAt = now;
    this.pathReports.record(s.nodeId, reports, (key) => this.o.registry.peerByKey(key)?.id, this.o.clock.wallNow());
  }

  /** Every node's last path report (what the console's matrix and `knit nodes` show). */
  pathEdges(): PathEdge[] {
    return this.pathReports.edges((id) => this.o.registry.peer(id) !== undefined);
  }

  /**
   * Calls `fn` with every committed delta, once per window (the console's live feed);
   * returns its remover. Costs one call per listener per window, nothing per agent.
   */
  onChanges(fn: (delta: DeltaMsg) => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  /** Calls `fn` with every new path report; returns its remover. */
  onPathReport(fn: (from: number, edges: PathEdge[]) => void): () => void {
    return this.pathReports.onReport(fn);
  }

  private hello(s: Session, m: HelloMsg): void {
    // The proof first: only the key's holder learns whether the key is registered.
    const k = this.authKeys.get(m.nodeKey) ?? controlAuthKey(this.o.registry.coordinatorPrivate, m.nodeKey);
    if (!k || !proofsEqual(m.proof, helloProof(k, s.serverNonce, m.clientNonce, m.nodeKey, m.discoKey))) {
      this.o.metrics.authFailures++;
      throw new KnitError('KNIT_ERR_AUTH_FAILED');
    }
    const peer = this.o.registry.peerByKey(m.nodeKey);
    if (!peer) {
      const unknown = new KnitError('KNIT_ERR_NODE_UNKNOWN', 'this node key is not registered (removed, or never joined)');
      if (s.state === 'catching-up' || !this.o.registry.shared) throw unknown;
      // It may have joined through another replica a moment ago, in a version this one hasn't
      // followed yet. "Unknown" (4404) tells the agent to give up for good, so catch up with
      // the feed once before saying it. Only a key's holder gets here (the proof came first).
      s.state = 'catching-up';
      void this.follow().then(() => {
        if (s.state === 'catching-up') this.guarded(s, () => this.hello(s, m));
      });
      return;
    }
    this.authKeys.set(peer.nodeKey, k); // keyed by the registry's string, not this frame's copy
    if (s.helloTimer !== undefined) this.o.clock.clearTimeout(s.helloTimer);
    s.helloTimer = undefined;
    const previous = this.ready.get(peer.id);
    if (previous) {
      this.ready.delete(peer.id); // replaced: its close must not mark the node offline
      this.close(previous, 4409, 'replaced by a newer session of the same node');
    }
    s.state = 'ready';
    s.nodeId = peer.id;
    s.nodeKey = peer.nodeKey;
    this.ready.set(peer.id, s);
    this.o.registry.setDiscoKey(peer.id, m.discoKey);
    this.o.registry.setOnline(peer.id, true);
    this.noteChanges();
    s.t.send(JSON.stringify({
      type: 'welcome', node: { id: peer.id, name: peer.name, addresses: peer.addresses },
      serverProof: welcomeProof(k, m.clientNonce, s.serverNonce), stun: this.o.stunPorts,
      ...(this.o.allowLoopbackEndpoints ? { loopbackEndpoints: true } : {}),
      ...(this.o.relays ? { relays: this.o.relays() } : {}),
    }));
    const missed = m.lastVersion > 0 ? this.log.since(m.lastVersion) : undefined;
    if (missed) {
      if (missed.length === 0) s.t.send(JSON.stringify({ type: 'delta', from: m.lastVersion, version: m.lastVersion, changes: [] }));
      for (const delta of missed) sendShared(s, delta);
      this.o.metrics.deltasSent += missed.length;
    } else {
      const [snapshot, ...tail] = this.mapFrames();
      sendShared(s, snapshot!);
      for (const delta of tail) sendShared(s, delta);
      this.o.metrics.snapshotsSent++;
      this.o.metrics.deltasSent += tail.length;
    }
  }
}

/** The hub as a factory, the way the coordinator and the simulator build it. */
export function createControlHub(options: HubOptions): ControlHub {
  return new ControlHub(options);
}
