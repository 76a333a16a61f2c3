/**
 * Group commit for POST /v1/join. Joins that arrive in the same turn of the
 * event loop are queued and registered together, in one transaction, on the
 * next turn (setImmediate): one fsync per batch rather than per node. One
 * batch commits at a time, and the requests that arrive meanwhile make up the
 * next — batches grow with the load by themselves (and with the store's
 * latency: a PostgreSQL round trip batches more), and a lone join waits for
 * nothing but its turn.
 * Each join still gets its own answer or error (see Registry.joinMany).
 */
import type { JoinRequest, JoinResponse } from '../../shared/wire/control.js';
import type { Registry } from '../registry/registry.js';

/** Bounds one transaction (and so one stall of the event loop) to a few hundred joins. */
const MAX_JOIN_BATCH = 256;

export type QueuedJoin = (req: JoinRequest) => Promise<{ response: JoinResponse; created: boolean }>;

export function createJoinQueue(registry: Registry): QueuedJoin {
  let queue: { req: JoinRequest; resolve(v: { response: JoinResponse; created: boolean }): void; reject(e: unknown): void }[] = [];
  let running = false;
  const run = async () => {
    running = true;
    while (queue.length > 0) {
      const batch = queue.slice(0, MAX_JOIN_BATCH);
      queue = queue.slice(MAX_JOIN_BATCH);
      const results = await registry.joinMany(batch.map((q) => q.req));
      for (const [i, q] of batch.entries()) {
        const r = results[i]!;
        if (r.ok) q.resolve(r);
        else q.reject(r.error);
      }
    }
    running = false;
  };
  return (req) => new Promise((resolve, reject) => {
    if (queue.length === 0 && !running) setImmediate(() => void run());
    queue.push({ req, resolve, reject });
  });
}
