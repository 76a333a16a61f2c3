/**
 * Replica liveness: which of the other replicas sharing a store are dead (a pure
 * judge, ReplicaLiveness), and the one write that acts on it (releaseReplicas).
 *
 * Every replica adds one to its beat count in the store every REPLICA_HEARTBEAT_MS.
 * An observer remembers, per other replica, the count it last saw and since when
 * (on its own monotonic clock) that count has stood still; still for
 * REPLICA_TIMEOUT_MS means dead. Counts, not timestamps: neither clock skew
 * between machines nor a stepped wall clock can make a live replica look dead.
 */
import type { PeerChange } from '../../shared/wire/control.js';
import type { StoreTx } from '../store/store.js';

/** A replica whose beat count stood still this long (on the observer's monotonic clock) is taken for dead. */
export const REPLICA_TIMEOUT_MS = 30_000;
/** How often a replica beats (a third of the timeout). */
export const REPLICA_HEARTBEAT_MS = 10_000;

export class ReplicaLiveness {
  private readonly seen = new Map<string, { beat: number; since: number }>();

  constructor(private readonly self: string) {}

  /**
   * Takes every replica's count as the store has it now (monotonic `now`), and returns the
   * replicas found dead, which it then forgets (the caller releases their sessions).
   */
  observe(beats: { id: string; beat: number }[], now: number): string[] {
    const dead: string[] = [];
    const present = new Set<string>();
    for (const { id, beat } of beats) {
      if (id === this.self) continue;
      present.add(id);
      const last = this.seen.get(id);
      if (!last || last.beat !== beat) this.seen.set(id, { beat, since: now });
      else if (now - last.since >= REPLICA_TIMEOUT_MS) dead.push(id);
    }
    for (const id of this.seen.keys()) if (!present.has(id)) this.seen.delete(id);
    for (const id of dead) this.seen.delete(id);
    return dead;
  }
}

/**
 * Marks offline (in rows and in the feed, as made by `origin`) every node held by the given
 * dead replicas, and forgets the replicas. Returns the changes, for the caller's memory.
 */
export async function releaseReplicas(tx: StoreTx, replicas: string[], lastSeen: number, origin: string): Promise<PeerChange[]> {
  if (replicas.length === 0) return [];
  const ids = await tx.releaseReplicas(replicas);
  for (const r of replicas) await tx.dropReplica(r);
  const changes: PeerChange[] = ids.map((id) => ({ op: 'online', id, online: false, lastSeen }));
  if (changes.length > 0) await tx.appendChange(changes, origin);
  return changes;
}
