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

  constructor(private readonly d: EngineStatsDeps) {}

  /** Reads in STATS_POLL_MS, then again every STATS_POLL_MS while the agent runs. */
  poll(): void {
    if (!this.d.running()) return;
    this.timer = this.d.clock.setTimeout(async () => {
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
      this.poll();
    }, STATS_POLL_MS);
  }

  cancel(): void {
    if (this.timer !== undefined) this.d.clock.clearTimeout(this.timer);
  }
}
