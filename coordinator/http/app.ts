/**
 * The coordinator's HTTP API on fastify, built apart from listening so tests
 * drive it with app.inject():
 *
 *   POST   /v1/join                one-token enrollment (rate-limited per source)
 *   POST   /v1/admin/tokens        create a join token (admin)
 *   GET    /v1/admin/tokens        list tokens, never their secrets (admin)
 *   DELETE /v1/admin/tokens/:id    revoke a token (admin)
 *   GET    /v1/admin/nodes         list nodes (admin)
 *   DELETE /v1/admin/nodes/:id     remove a node (admin)
 *   GET    /healthz, GET /metrics
 *
 * Every error is {"error":{"code","message"}} with a code from shared/errors.ts.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../../shared/clock.js';
import { KnitError, isKnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { MAX_TAGS, validateJoinRequest, isValidTag } from '../../shared/wire/control.js';
import type { ControlHub } from '../control/hub.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { Registry } from '../registry/registry.js';

export interface AppDeps {
  registry: Registry;
  hub: ControlHub;
  metrics: CoordinatorMetrics;
  clock: Clock;
  logger: Logger;
  stunStats?: () => { requests: number; responses: number; dropped: number; rateLimited: number };
  /** Joins per minute per source address (burst = 2×). Joins are rare; a flood is an attack or a bug. */
  joinRatePerMin?: number;
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
  const joinBuckets = new LRUCache<string, { tokens: number; at: number }>({ max: 10_000 });

  const limitJoin = (source: string): void => {
    const now = deps.clock.now();
    const cap = joinRate * 2;
    const b = joinBuckets.get(source) ?? { tokens: cap, at: now };
    b.tokens = Math.min(cap, b.tokens + ((now - b.at) / 60_000) * joinRate);
    b.at = now;
    joinBuckets.set(source, b);
    if (b.tokens < 1) throw new KnitError('KNIT_ERR_RATE_LIMITED', 'too many join attempts from this address; try again in a minute');
    b.tokens -= 1;
  };

  const requireAdmin = async (req: FastifyRequest): Promise<void> => {
    const h = req.headers.authorization;
    const token = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : undefined;
    if (!deps.registry.verifyAdmin(token)) throw new KnitError('KNIT_ERR_ADMIN_UNAUTHORIZED');
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
    void reply.status(e.status).send(e.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send(new KnitError('KNIT_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON());
  });

  app.get('/healthz', async () => ({ ok: true, nodes: deps.registry.nodeCount, online: deps.hub.onlineCount, version: deps.hub.log.version }));

  app.get('/metrics', async (_req, reply) => {
    void reply.type('text/plain; version=0.0.4');
    return deps.metrics.render({ nodes: deps.registry.nodeCount, online: deps.hub.onlineCount, stun: deps.stunStats?.() });
  });

  app.post('/v1/join', async (req) => {
    try {
      limitJoin(req.ip);
      const v = validateJoinRequest(req.body);
      if (!v.ok) throw new KnitError('KNIT_ERR_BAD_REQUEST', v.error);
      const { response, created } = deps.registry.join(v.value);
      if (created) {
        deps.metrics.joins++;
        deps.logger.info('node joined', { node: response.node.id, name: response.node.name, ip: response.node.addresses[0] });
      }
      deps.hub.noteChanges();
      return response;
    } catch (err) {
      deps.metrics.noteJoinFailure(isKnitError(err) ? err.code.replace('KNIT_ERR_', '').toLowerCase() : 'internal');
      throw err;
    }
  });

  app.post('/v1/admin/tokens', { preHandler: requireAdmin, schema: { body: tokenBodySchema } }, async (req) => {
    const b = (req.body ?? {}) as { reusable?: boolean; uses?: number; ephemeral?: boolean; expiresInS?: number; tags?: string[] };
    if (b.uses !== undefined && !b.reusable) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'uses only applies to reusable tokens');
    if (b.tags && !b.tags.every(isValidTag)) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'bad tag');
    const { token, summary } = deps.registry.createToken({
      reusable: b.reusable, uses: b.uses, ephemeral: b.ephemeral, tags: b.tags,
      expiresInMs: b.expiresInS === undefined ? undefined : b.expiresInS * 1000,
    });
    deps.logger.info('join token created', { tokenId: summary.id, reusable: summary.reusable, ephemeral: summary.ephemeral });
    return { token, ...summary };
  });

  app.get('/v1/admin/tokens', { preHandler: requireAdmin }, async () => ({ tokens: deps.registry.listTokens() }));

  app.delete('/v1/admin/tokens/:id', { preHandler: requireAdmin }, async (req) => {
    const { id } = req.params as { id: string };
    if (!deps.registry.revokeToken(id)) throw new KnitError('KNIT_ERR_NOT_FOUND', 'no such token');
    return { revoked: id };
  });

  app.get('/v1/admin/nodes', { preHandler: requireAdmin }, async () => ({ nodes: [...deps.registry.peers()] }));

  app.delete('/v1/admin/nodes/:id', { preHandler: requireAdmin }, async (req) => {
    const { id } = req.params as { id: string };
    if (!/^[0-9]{1,15}$/.test(id)) throw new KnitError('KNIT_ERR_BAD_REQUEST', 'node id must be a number');
    if (!deps.hub.removeNode(Number(id))) throw new KnitError('KNIT_ERR_NODE_UNKNOWN');
    deps.logger.info('node removed', { node: Number(id) });
    return { removed: Number(id) };
  });

  return app;
}
