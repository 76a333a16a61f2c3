/**
 * The coordinator, assembled: store → registry → control hub → HTTP + WS,
 * plus the STUN observer. `createCoordinator` builds; `start` listens;
 * `stop` closes every socket and timer. Both are idempotent.
 */
import { join } from 'node:path';
import { networkInterfaces } from 'node:os';
import type { Server } from 'node:http';
import { systemClock, type Clock, type RandomBytes } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/log.js';
import { ControlHub } from './control/hub.js';
import { attachControlWebSocket } from './control/ws-server.js';
import { buildApp } from './http/app.js';
import { CoordinatorMetrics } from './metrics.js';
import { createStunObserver, type StunObserver } from './observer/index.js';
import { Registry } from './registry/registry.js';
import { SqliteStore } from './store/sqlite.js';
import { claimDataDir } from './store/pidfile.js';

export interface HostPort { host: string; port: number }

export interface CoordinatorOptions {
  dataDir: string;
  listen: HostPort;
  stun?: HostPort[]; // [] = no STUN observer
  url?: string; // public URL written into tokens; default derived from `listen`
  ipv4Prefix?: string;
  allowLoopbackEndpoints?: boolean;
  ephemeralTimeoutMs?: number;
  coalesceMs?: number;
  joinRatePerMin?: number;
}

export const DEFAULT_EPHEMERAL_TIMEOUT_MS = 10 * 60_000;

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

export function databasePath(dataDir: string): string {
  return join(dataDir, 'knit.db');
}

export function createCoordinator(options: CoordinatorOptions, deps: { clock?: Clock; logger?: Logger; random?: RandomBytes } = {}) {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ base: { component: 'coordinator' } });
  const store = new SqliteStore(databasePath(options.dataDir));
  let registry: Registry;
  let release: () => void;
  try {
    release = claimDataDir(options.dataDir);
    registry = new Registry(store, { clock, url: options.url ?? defaultUrl(options.listen), ipv4Prefix: options.ipv4Prefix, random: deps.random });
  } catch (err) {
    store.close();
    throw err;
  }
  const observers: StunObserver[] = (options.stun ?? []).map((s) => createStunObserver({ ...s, clock, logger }));
  const metrics = new CoordinatorMetrics();
  let stunPorts: number[] = [];
  const hub = new ControlHub({
    registry, clock, logger, metrics, random: deps.random,
    get stunPorts() { return stunPorts; },
    coalesceMs: options.coalesceMs, allowLoopbackEndpoints: options.allowLoopbackEndpoints,
    ephemeralTimeoutMs: options.ephemeralTimeoutMs ?? DEFAULT_EPHEMERAL_TIMEOUT_MS,
  });
  const app = buildApp({
    registry, hub, metrics, clock, logger, joinRatePerMin: options.joinRatePerMin,
    stunStats: () => observers.map((o) => o.stats()).reduce(
      (a, b) => ({ requests: a.requests + b.requests, responses: a.responses + b.responses, dropped: a.dropped + b.dropped, rateLimited: a.rateLimited + b.rateLimited }),
      { requests: 0, responses: 0, dropped: 0, rateLimited: 0 }),
  });
  let ws: { close(): void } | undefined;
  let started: { httpPort: number; stunPorts: number[] } | undefined;
  let stopped = false;

  return {
    app, registry, hub, metrics, store,
    /** The admin token, created and returned once on the very first start of this data dir. */
    ensureAdmin: () => registry.ensureAdmin(),
    async start(): Promise<{ httpPort: number; stunPorts: number[] }> {
      if (started) return started;
      stunPorts = [];
      for (const o of observers) stunPorts.push((await o.start()).port);
      ws = attachControlWebSocket(app.server as Server, hub);
      await app.listen({ host: options.listen.host, port: options.listen.port });
      const addr = app.server.address();
      started = { httpPort: typeof addr === 'object' && addr ? addr.port : options.listen.port, stunPorts };
      if (!options.url) registry.publicUrl = defaultUrl({ host: options.listen.host, port: started.httpPort });
      // Local admin commands (`knit token create --data DIR`) write this URL into their tokens.
      store.setMeta('public_url', registry.publicUrl);
      return started;
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      hub.stop();
      ws?.close();
      await app.close();
      for (const o of observers) await o.stop();
      store.close();
      release();
    },
  };
}

export type Coordinator = ReturnType<typeof createCoordinator>;
