/**
 * Replica liveness, pure: which of the other replicas sharing a store are dead.
 *
 * Every replica adds one to its beat count in the store every REPLICA_HEARTBEAT_MS.
 * An observer remembers, per other replica, the count it last saw and since when
 * (on its own monotonic clock) that count has stood still; still for
 * REPLICA_TIMEOUT_MS means dead. Counts, not timestamps: neither clock skew
 * between machines nor a stepped wall clock can make a live replica look dead.
 */

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
