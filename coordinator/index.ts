/**
 * The coordinator, assembled: store → registry → control hub → HTTP + WS,
 * plus the STUN observer(s). `createCoordinator` opens the store (SQLite in
 * the data dir, claimed first; or a PostgreSQL database shared with other
 * replicas) and loads the mesh; `start` listens; `stop` closes every socket,
 * timer and connection.
 * Both are idempotent; a failed start leaves everything closed and throws a
 * KnitError (KNIT_ERR_LISTEN for a port that can't be bound).
 */
import { mkdirSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { Server } from 'node:http';
import { systemClock, type Clock, type RandomBytes } from '../shared/clock.js';
import { decodeKey } from '../shared/crypto/keys.js';
import { KnitError, isKnitError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/log.js';
import { createControlHub } from './control/hub.js';
import { attachControlWebSocket } from './control/ws-server.js';
import { buildApp } from './http/app.js';
import { CoordinatorMetrics } from './metrics.js';
import { createStunObserver, type StunObserver } from './observer/index.js';
import { createRelayServer, type RelayServer } from '../relay/index.js';
import type { RelayInfo } from '../shared/wire/control.js';
import { Registry } from './registry/registry.js';
import { claimDataDir } from './store/pidfile.js';
import { isPostgresUrl, openStore } from './store/open.js';
import type { Store } from './store/store.js';

export { databasePath } from './store/open.js';

export interface HostPort { host: string; port: number }

export interface CoordinatorOptions {
  dataDir: string; // SQLite's home (and the lock that keeps a second coordinator out); unused with a PostgreSQL store
  /** A postgres:// URL: share that database with other replicas instead of SQLite in dataDir. */
  store?: string;
  listen: HostPort;
  /**
   * STUN observer ports; [] = none. An `optional` port that can't be bound is skipped with a
   * warning (the default second port: one port still gives reflexive addresses).
   */
  stun?: (HostPort & { optional?: boolean })[];
  url?: string; // public URL written into tokens; default derived from `listen`
  ipv4Prefix?: string;
  allowLoopbackEndpoints?: boolean;
  ephemeralTimeoutMs?: number;
  coalesceMs?: number;
  joinRatePerMin?: number;
  /** WS ping interval (default 15 s); tests shorten it or drive it with a manual clock. */
  pingIntervalMs?: number;
  /**
   * Run a relay in this process (docs/relay.md): UDP control port, optional WebSocket
   * fallback listener. Its key is the coordinator key; its members are the registry's nodes.
   */
  relay?: { udp: HostPort; ws?: HostPort; tls?: { cert: string | Buffer; key: string | Buffer }; packetsPerSec?: number; bytesPerSec?: number; optional?: boolean };
  /** Relays run elsewhere (`knit relay`), announced to agents as they are. */
  externalRelays?: RelayInfo[];
}

export const DEFAULT_EPHEMERAL_TIMEOUT_MS = 10 * 60_000;
/** The HTTP/WS listen backlog, sized for a reconnect storm of 10,000 agents. */
const LISTEN_BACKLOG = 8192;

/**
 * The URL written into tokens when --url isn't given: the listen address, or — when
 * listening on every address — this machine's first non-loopback IPv4, so tokens work
 * from other machines out of the box (loopback only when there is nothing else).
 */
export function defaultUrl(listen: HostPort, interfaces = networkInterfaces()): string {
  let host = listen.host;
  if (host === '0.0.0.0' || host === '::') {
    const external = Object.values(interfaces).flat().find((i) => i && i.family === 'IPv4' && !i.internal);
    host = external?.address ?? '127.0.0.1';
  }
  return `http://${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
}

/** A socket error from listen/bind as the one operational error the CLI prints. */
function listenError(err: unknown, what: string): KnitError {
  if (isKnitError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'EADDRINUSE' ? 'the address is already in use'
    : code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)'
    : code === 'EADDRNOTAVAIL' ? 'no such address on this machine'
    : (err as Error).message;
  return new KnitError('KNIT_ERR_LISTEN', `cannot listen on ${what}: ${why}`, { cause: err });
}

/** The relay's WebSocket URL as agents reach it: the coordinator's public host, the relay's port. */
function relayWsUrl(publicUrl: string, port: number, tls: boolean): string {
  const host = new URL(publicUrl).host.replace(/:[0-9]+$/, '');
  return `${tls ? 'wss' : 'ws'}://${host}:${port}/v1/relay`;
}

function hostPortText(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

export async function createCoordinator(options: CoordinatorOptions, deps: { clock?: Clock; logger?: Logger; random?: RandomBytes } = {}) {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ base: { component: 'coordinator' } });
  const shared = isPostgresUrl(options.store);
  let release = () => {};
  if (!shared) {
    try {
      mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new KnitError('KNIT_ERR_STORE', `cannot create the data dir ${options.dataDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    // Claim the dir before opening the store, so a second coordinator fails before touching it.
    release = claimDataDir(options.dataDir);
  }
  let store: Store | undefined;
  let registry: Registry;
  try {
    store = await openStore({ store: options.store, dataDir: options.dataDir });
    // SQLite behind the data-dir claim is this process's alone; a shared database has other replicas.
    registry = await Registry.open(store, { clock, url: options.url ?? defaultUrl(options.listen), ipv4Prefix: options.ipv4Prefix, random: deps.random, exclusive: !shared });
  } catch (err) {
    await store?.close().catch(() => {});
    release();
    throw err;
  }
  const db = store;
  const observers: StunObserver[] = (options.stun ?? []).map((s) => createStunObserver({ ...s, clock, logger }));
  const metrics = new CoordinatorMetrics();
  let stunPorts: number[] = [];
  const relay: RelayServer | undefined = options.relay && createRelayServer({
    host: options.relay.udp.host, port: options.relay.udp.port,
    ws: options.relay.ws && { ...options.relay.ws, tls: options.relay.tls },
    privateKey: registry.coordinatorPrivate, publicKey: decodeKey(registry.coordinatorKey)!,
    isMember: (k) => registry.peerByKey(k) !== undefined,
    packetsPerSec: options.relay.packetsPerSec, bytesPerSec: options.relay.bytesPerSec,
    clock, logger: logger.child({ component: 'relay' }), random: deps.random,
  });
  let relayInfo: RelayInfo[] = [...(options.externalRelays ?? [])];
  const hub = createControlHub({
    registry, clock, logger, metrics, random: deps.random,
    get stunPorts() { return stunPorts; },
    relays: () => relayInfo,
    coalesceMs: options.coalesceMs, allowLoopbackEndpoints: options.allowLoopbackEndpoints,
    ephemeralTimeoutMs: options.ephemeralTimeoutMs ?? DEFAULT_EPHEMERAL_TIMEOUT_MS,
  });
  const app = buildApp({
    registry, hub, metrics, clock, logger, joinRatePerMin: options.joinRatePerMin, stunPorts: () => stunPorts,
    stunStats: () => observers.map((o) => o.stats()).reduce(
      (a, b) => ({ requests: a.requests + b.requests, responses: a.responses + b.responses, dropped: a.dropped + b.dropped, rateLimited: a.rateLimited + b.rateLimited }),
      { requests: 0, responses: 0, dropped: 0, rateLimited: 0 }),
  });
  let ws: { close(): void } | undefined;
  let listening: Promise<{ httpPort: number; stunPorts: number[] }> | undefined; // listen() itself
  let starting: Promise<{ httpPort: number; stunPorts: number[] }> | undefined; // …and the cleanup after a failure
  let stopping: Promise<void> | undefined;

  const listen = async (): Promise<{ httpPort: number; stunPorts: number[] }> => {
    const ports: number[] = [];
    for (const [i, o] of observers.entries()) {
      const at = options.stun![i]!;
      try {
        ports.push((await o.start()).port);
      } catch (err) {
        if (!at.optional) throw listenError(err, `udp ${hostPortText(at)} (STUN)`);
        // Loud: with one port agents can't classify their NAT, and hard-NAT traversal never starts.
        logger.warn('second STUN port not started: agents will report NAT type unknown', {
          err: listenError(err, `udp ${hostPortText(at)} (STUN)`).message, fix: 'free the port, or choose one with --stun2 HOST:PORT',
        });
      }
    }
    stunPorts = ports;
    if (relay && options.relay) {
      let bound: { port: number; wsPort?: number } | undefined;
      try {
        bound = await relay.start();
      } catch (err) {
        // The default relay is a convenience: a busy port warns instead of stopping the coordinator.
        if (!options.relay.optional) throw listenError(err, `udp ${hostPortText(options.relay.udp)} (relay)`);
        logger.warn('relay not started', { err: listenError(err, `${hostPortText(options.relay.udp)} (relay)`).message });
      }
      if (bound) relayInfo = [{ key: registry.coordinatorKey, port: bound.port, ...(bound.wsPort !== undefined ? { ws: relayWsUrl(registry.publicUrl, bound.wsPort, options.relay.tls !== undefined) } : {}) }, ...relayInfo];
    }
    ws = attachControlWebSocket(app.server as Server, hub, { clock, pingIntervalMs: options.pingIntervalMs });
    try {
      // A reconnect storm is every agent at once: Node's default accept queue (511) would drop
      // SYNs and cost each dropped agent a 1 s retransmit (the kernel caps it at somaxconn).
      await app.listen({ host: options.listen.host, port: options.listen.port, backlog: LISTEN_BACKLOG });
    } catch (err) {
      throw listenError(err, `tcp ${hostPortText(options.listen)} (HTTP)`);
    }
    const addr = app.server.address();
    const httpPort = typeof addr === 'object' && addr ? addr.port : options.listen.port;
    if (!options.url) registry.publicUrl = defaultUrl({ host: options.listen.host, port: httpPort });
    // Local admin commands (`knit token create --data DIR`) write this URL into their tokens.
    await db.write((tx) => tx.setMeta('public_url', registry.publicUrl));
    return { httpPort, stunPorts: ports };
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await listening?.catch(() => {}); // let a start in flight settle, then undo all of it
      await hub.stop();
      ws?.close();
      await app.close();
      for (const o of observers) await o.stop();
      await relay?.stop();
      await db.close();
      release();
    })();
    return stopping;
  };

  return {
    app, registry, hub, metrics, store: db, relay,
    /** The admin token, created and returned once on the very first start of this data dir (call after start: it carries the URL). */
    ensureAdmin: () => registry.ensureAdmin(),
    /** Listens on HTTP and STUN; resolves to the bound ports (port 0 picks free ones). */
    start(): Promise<{ httpPort: number; stunPorts: number[] }> {
      if (stopping) return Promise.reject(new KnitError('KNIT_ERR_INTERNAL', 'the coordinator was stopped; create a new one'));
      if (!starting) {
        listening = listen();
        starting = listening.catch(async (err: unknown) => {
          logger.error('coordinator failed to start', { err: (err as Error).message });
          await stop();
          throw err;
        });
      }
      return starting;
    },
    stop,
  };
}

export type Coordinator = Awaited<ReturnType<typeof createCoordinator>>;
