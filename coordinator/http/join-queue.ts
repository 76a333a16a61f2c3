/**
 * Group commit for POST /v1/join. Joins that arrive in the same turn of the
 * event loop are queued and registered together, in one transaction, on the
 * next turn (setImmediate): one fsync per batch rather than per node. While a
 * batch commits the event loop is blocked (better-sqlite3 is synchronous), so
 * the requests that arrive meanwhile make up the next batch — batches grow
 * with the load by themselves, and a lone join waits for nothing but its turn.
 * Each join still gets its own answer or error (see Registry.joinMany).
 */
import type { JoinRequest, JoinResponse } from '../../shared/wire/control.js';
import type { Registry } from '../registry/registry.js';

/** Bounds one transaction (and so one stall of the event loop) to a few hundred joins. */
const MAX_JOIN_BATCH = 256;

export type QueuedJoin = (req: JoinRequest) => Promise<{ response: JoinResponse; created: boolean }>;

export function createJoinQueue(registry: Registry): QueuedJoin {
  let queue: { req: JoinRequest; resolve(v: { response: JoinResponse; created: boolean }): void; reject(e: unknown): void }[] = [];
  const run = () => {
    const batch = queue.slice(0, MAX_JOIN_BATCH);
    queue = queue.slice(MAX_JOIN_BATCH);
    if (queue.length > 0) setImmediate(run);
    const results = registry.joinMany(batch.map((q) => q.req));
    for (const [i, q] of batch.entries()) {
      const r = results[i]!;
      if (r.ok) q.resolve(r);
      else q.reject(r.error);
    }
  };
  return (req) => new Promise((resolve, reject) => {
    if (queue.length === 0) setImmediate(run);
    queue.push({ req, resolve, reject });
  });
}
