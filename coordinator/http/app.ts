/**
 * The coordinator's HTTP API on fastify, built apart from listening so tests
 * drive it with app.inject():
 *
 *   POST   /v1/join                one-token enrollment (rate-limited per source, with back-off)
 *   POST   /v1/admin/tokens        create a join token (admin)
 *   GET    /v1/admin/tokens        list tokens, never their secrets (admin)
 *   DELETE /v1/admin/tokens/:id    revoke a token (admin)
 *   GET    /v1/admin/nodes         list nodes (admin)
 *   DELETE /v1/admin/nodes/:id     remove a node (admin)
 *   GET    /v1/admin/paths         every node's last path report (admin)
 *   GET    /v1/admin/feed          WebSocket: the console's live feed (admin token in the first frame)
 *   GET    /ui, /ui/*              the web console's static files (ui.ts)
 *   GET    /healthz                {ok, nodes, online, version, stun: [ports]}
 *   GET    /metrics
 *
 * Every error is {"error":{"code","message"}} with a code from shared/errors.ts.
 */
import type { Server } from 'node:http';
import { isIPv4 } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../../shared/clock.js';
import { KnitError, isKnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { normalizeIp } from '../../shared/net/addr.js';
import { ipToBytes } from '../../shared/net/ip-bytes.js';
import { MAX_TAGS, validateJoinRequest, isValidTag } from '../../shared/wire/control.js';
import { ADMIN_FEED_PATH, createAdminFeed } from '../control/admin-feed.js';
import type { ControlHub } from '../control/hub.js';
import { routeUpgrade } from '../control/ws-server.js';
import { createJoinQueue } from './join-queue.js';
import { registerUi } from './ui.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { Registry } from '../registry/registry.js';

export interface AppDeps {
  registry: Registry;
  hub: ControlHub;
  metrics: CoordinatorMetrics;
  clock: Clock;
  logger: Logger;
  stunStats?: () => { requests: number; responses: number; dropped: number; rateLimited: number };
  /** The STUN ports bound, as the welcome announces them (one, when the second couldn't be bound). */
  stunPorts?: () => number[];
  /** Joins per minute per source address (burst = 2×). Joins are rare; a flood is an attack or a bug. */
  joinRatePerMin?: number;
}

/**
 * Back-off for token guessing, on top of the per-source rate. Only
 * KNIT_ERR_TOKEN_INVALID counts (an unknown, forged or wrong secret): an expired
 * or used token proves its holder had the secret, and a 100-way race on one
 * token must read "used", not "slow down". A few typos are free; after that each
 * further failure doubles how long the source must wait before its next join
 * (1 s, 2 s, 4 s … capped at 15 min), answered 429 with Retry-After. Success does
 * not reset it (a node re-joining with its own key must not launder guesses);
 * an hour without failures does.
 */
export const JOIN_FREE_FAILURES = 5;
export const JOIN_BACKOFF_BASE_MS = 1000;
export const JOIN_BACKOFF_MAX_MS = 15 * 60_000;
export const JOIN_FAILURE_MEMORY_MS = 60 * 60_000;

interface JoinSource { tokens: number; at: number; failures: number; failedAt: number; blockedUntil: number }

/** The rate-limit key of a source: an IPv4 address, or an IPv6 /64 (one host owns a whole /64 to spoof within). */
function joinSourceKey(ip: string): string {
  const a = normalizeIp(ip);
  if (isIPv4(a)) return a;
  try {
    return Buffer.from(ipToBytes(a).subarray(0, 8)).toString('hex');
  } catch {
    return a;
  }
}

/** The largest tokens/nodes request body we read; everything real is far smaller. */
const BODY_LIMIT = 16 * 1024;
const MAX_TOKEN_TTL_MS = 365 * 24 * 3600 * 1000;

const tokenBodySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    reusable: { type: 'boolean' },
    uses: { type: 'integer', minimum: 1, maximum: 1_000_000 },
    ephemeral: { type: 'boolean' },
    expiresInS: { type: 'integer', minimum: 1, maximum: MAX_TOKEN_TTL_MS / 1000 },
    tags: { type: 'array', maxItems: MAX_TAGS, items: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,31}$' } },
  },
} as const;

export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT, trustProxy: false, ajv: { customOptions: { coerceTypes: false, removeAdditional: false } } });
  const joinRate = deps.joinRatePerMin ?? 30;
  const joinQueued = createJoinQueue(deps.registry); // group commit: one fsync per batch of joins
  // 10,000 sources; the least recently seen is forgotten first, so a spoofing flood costs memory, not correctness.
  const joinSources = new LRUCache<string, JoinSource>({ max: 10_000 });

  const sourceState = (key: string, now: number): JoinSource => {
    let b = joinSources.get(key);
    if (!b) {
      b = { tokens: joinRate * 2, at: now, failures: 0, failedAt: now, blockedUntil: 0 };
      joinSources.set(key, b);
    }
    return b;
  };

  // Seconds for the Retry-After header of a 429, per error (the JSON body stays the common shape).
  const retryAfterS = new WeakMap<KnitError, number>();
  const rateLimited = (retryMs: number, why: string): KnitError => {
    const seconds = Math.max(1, Math.ceil(retryMs / 1000));
    const e = new KnitError('KNIT_ERR_RATE_LIMITED', `${why}; try again in ${seconds} s`);
    retryAfterS.set(e, seconds);
    return e;
  };

  /** Refuses a join before it touches the registry: back-off first (costs nothing), then the token bucket. */
  const limitJoin = (key: string): void => {
    const now = deps.clock.now();
    const cap = joinRate * 2;
    const b = sourceState(key, now);
    if (now < b.blockedUntil) throw rateLimited(b.blockedUntil - now, 'too many failed join attempts from this address');
    b.tokens = Math.min(cap, b.tokens + (Math.max(0, now - b.at) / 60_000) * joinRate);
    b.at = Math.max(b.at, now);
    if (b.tokens < 1) throw rateLimited(((1 - b.tokens) / joinRate) * 60_000, 'too many join attempts from this address');
    b.tokens -= 1;
  };

  const noteJoinFailure = (key: string, code: string): void => {
    if (code !== 'KNIT_ERR_TOKEN_INVALID') return;
    const now = deps.clock.now();
    const b = sourceState(key, now);
    if (now - b.failedAt >= JOIN_FAILURE_MEMORY_MS) b.failures = 0;
    b.failures++;
    b.failedAt = now;
    const over = b.failures - JOIN_FREE_FAILURES;
    if (over > 0) b.blockedUntil = now + Math.min(JOIN_BACKOFF_MAX_MS, JOIN_BACKOFF_BASE_MS * 2 ** Math.min(over - 1, 30));
  };

  const requireAdmin = async (req: FastifyRequest): Promise<void> => {
    const h = req.headers.authorization;
    const token = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : undefined;
    if (!await deps.registry.verifyAdmin(token)) throw new KnitError('KNIT_ERR_ADMIN_UNAUTHORIZED');
  };

  app.setErrorHandler((err: Error & { validation?: unknown; statusCode?: number }, req, reply) => {
    let e: KnitError;
    if (isKnitError(err)) e = err;
    else if (err.validation) e = new KnitError('KNIT_ERR_BAD_REQUEST', `invalid request: ${err.message}`);
    else if (err.statusCode && err.statusCode < 500) e = new KnitError('KNIT_ERR_BAD_REQUEST', err.message);
    else {
      deps.logger.error('request failed', { route: req.routeOptions?.url, err: err.message });
      e = new KnitError('KNIT_ERR_INTERNAL');
    }
    const retry = retryAfterS.get(e);
    if (retry !== undefined) void reply.header('retry-after', String(retry));
    void reply.status(e.status).send(e.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send(new KnitError('KNIT_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON());
  });

  // `stun` lets `knit doctor` tell "one port offered" (NAT type cannot be classified) and "blocked" apart.
  app.get('/healthz', async () => ({ ok: true, nodes: deps.registry.nodeCount, online: deps.hub.onlineCount, version: deps.hub.log.version, stun: deps.stunPorts?.() ?? [] }));

  app.get('/metrics', async (_req, reply) => {
    void reply.type('text/plain; version=0.0.4');
    return deps.metrics.render({ nodes: deps.registry.nodeCount, online: deps.hub.onlineCount, stun: deps.stunStats?.() });
  });

  app.post('/v1/join', async (req) => {
    const source = joinSourceKey(req.ip);
    try {
      limitJoin(source);
      const v = validateJoinRequest(req.body);
      if (!v.ok) throw new KnitError('KNIT_ERR_BAD_REQUEST', v.error);
      const { response, created } = await joinQueued(v.value);
      if (created) {
        deps.metrics.joins++;
        deps.logger.info('node joined', { node: response.node.id, name: response.node.name, ip: response.node.addresses[0] });
      }
      return response;
    } catch (err) {
      const code = isKnitError(err) ? err.code : 'KNIT_ERR_INTERNAL';
      noteJoinFailure(source, code);
      deps.metrics.noteJoinFailure(code.replace('KNIT_ERR_', '').toLowerCase());
      throw err;
    }
  });

  app.post('/v1/admin/tokens', { preHandler: requireAdmin, schema: { body: tokenBodySchema } }, async (req) => {
    const b = (req.body ?? {}) as { reusable?: boolean; uses?: number; ephemeral?: boolean; expiresInS?: number; tags?: string[] };
    if (b.uses !== undefined && !b.reusable) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'uses only applies to reusable tokens');
    if (b.tags && !b.tags.every(isValidTag)) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'bad tag');
    const { token, summary } = await deps.registry.createToken({
      reusable: b.reusable, uses: b.uses, ephemeral: b.ephemeral, tags: b.tags,
      expiresInMs: b.expiresInS === undefined ? undefined : b.expiresInS * 1000,
    });
    deps.logger.info('join token created', { tokenId: summary.id, reusable: summary.reusable, ephemeral: summary.ephemeral });
    return { token, ...summary };
  });

  app.get('/v1/admin/tokens', { preHandler: requireAdmin }, async () => ({ tokens: await deps.registry.listTokens() }));

  app.delete('/v1/admin/tokens/:id', { preHandler: requireAdmin }, async (req) => {
    const { id } = req.params as { id: string };
    if (!await deps.registry.revokeToken(id)) throw new KnitError('KNIT_ERR_NOT_FOUND', 'no such token');
    return { revoked: id };
  });

  app.get('/v1/admin/nodes', { preHandler: requireAdmin }, async () => ({ nodes: [...deps.registry.peers()] }));

  // Each node's last sampled view of its paths (agents report every 30 s and on change).
  app.get('/v1/admin/paths', { preHandler: requireAdmin }, async () => ({ paths: deps.hub.pathEdges() }));

  app.delete('/v1/admin/nodes/:id', { preHandler: requireAdmin }, async (req) => {
    const { id } = req.params as { id: string };
    if (!/^[0-9]{1,15}$/.test(id)) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'node id must be a number');
    if (!await deps.hub.removeNode(Number(id))) throw new KnitError('KNIT_ERR_NODE_UNKNOWN');
    deps.logger.info('node removed', { node: Number(id) });
    return { removed: Number(id) };
  });

  // The web console: static files, and its live feed on the control shell's upgrade listener.
  registerUi(app);
  const feed = createAdminFeed({ registry: deps.registry, hub: deps.hub, clock: deps.clock, logger: deps.logger });
  const unrouteFeed = routeUpgrade(app.server as Server, ADMIN_FEED_PATH, feed.handleUpgrade);
  app.addHook('preClose', async () => {
    unrouteFeed();
    await feed.close();
  });

  return app;
}
