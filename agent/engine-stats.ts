/**
 * Reads WireGuard's per-peer stats every STATS_POLL_MS and keeps the latest.
 * A handshake is what confirms a path to WireGuard's side and turns the
 * responder's keepalive on (the anti-stall rule, docs/disco.md); the stats
 * also feed `knit status` and the path reports. What a new handshake means is
 * the agent's business: this only notices it and says so.
 */
import type { Clock, TimerHandle } from '../shared/clock.js';
import type { Logger } from '../shared/log.js';
import type { Engine, EnginePeerStats } from './engine/types.js';

/** WireGuard stats are read this often; they confirm paths and feed `knit status`. */
export const STATS_POLL_MS = 2000;
/**
 * While a path waits for its handshake (agent/path-confirm.ts) the stats are read this often:
 * the handshake is what lets status say `direct`, and what tells the agent a forced handshake
 * is not needed. One UAPI read is a socket round trip, cheap at this rate for a few seconds.
 */
export const STATS_FAST_POLL_MS = 100;

export interface EngineStatsDeps {
  clock: Clock;
  logger: Logger;
  engine: Pick<Engine, 'stats'>;
  /** Whether the agent runs; a stopped agent stops reading. */
  running: () => boolean;
  /** A peer's handshake is newer than the one last read. */
  onHandshake: (s: EnginePeerStats) => void;
  /** After every read; `firstHandshake` when some peer handshook for the first time. */
  onRead: (list: EnginePeerStats[], firstHandshake: boolean) => void;
}

export class EngineStatsPoller {
  /** The latest stats per peer node key. */
  readonly stats = new Map<string, EnginePeerStats>();
  private timer: TimerHandle | undefined;
  private timerAt = Infinity;
  private fast = false;
  private reading = false;

  constructor(private readonly d: EngineStatsDeps) {}

  /** Reads every STATS_FAST_POLL_MS instead of STATS_POLL_MS while `fast` (a path waits for its handshake). */
  setFast(fast: boolean): void {
    if (fast === this.fast) return;
    this.fast = fast;
    // A read already scheduled for later is brought forward (one in flight schedules the next itself).
    if (fast && !this.reading && this.timer !== undefined && this.timerAt > this.d.clock.now() + STATS_FAST_POLL_MS) {
      this.d.clock.clearTimeout(this.timer);
      this.poll();
    }
  }

  /** Reads in STATS_POLL_MS (STATS_FAST_POLL_MS while fast), then again, while the agent runs. */
  poll(): void {
    if (!this.d.running()) return;
    const delay = this.fast ? STATS_FAST_POLL_MS : STATS_POLL_MS;
    this.timerAt = this.d.clock.now() + delay;
    this.timer = this.d.clock.setTimeout(async () => {
      this.timer = undefined;
      this.reading = true;
      try {
        const list = await this.d.engine.stats();
        let firstHandshake = false;
        for (const s of list) {
          const prev = this.stats.get(s.publicKey);
          if ((prev?.lastHandshakeMs ?? 0) === 0 && s.lastHandshakeMs > 0) firstHandshake = true;
          this.stats.set(s.publicKey, s);
          if (s.lastHandshakeMs > 0 && s.lastHandshakeMs !== prev?.lastHandshakeMs) this.d.onHandshake(s);
        }
        this.d.onRead(list, firstHandshake);
      } catch (err) {
        this.d.logger.warn('engine stats failed', { err: (err as Error).message });
      }
      this.reading = false;
      this.poll();
    }, delay);
  }

  cancel(): void {
    if (this.timer !== undefined) this.d.clock.clearTimeout(this.timer);
  }
}
