/**
 * The path reports an agent sends the coordinator (the console, `knit nodes`):
 * what goes in one, and when one is sent. Reports are samples, not a log: a
 * path change brings the next one forward, otherwise one goes out every
 * PATH_REPORT_MS so the coordinator's view recovers from a lost one.
 */
import type { Clock, TimerHandle } from '../shared/clock.js';
import { MAX_PATH_REPORTS, type PathReport, type PeerInfo } from '../shared/wire/control.js';
import type { DiscoCore } from './disco/core.js';
import type { EnginePeerStats } from './engine/types.js';
import type { PathConfirmer } from './path-confirm.js';
import type { RelayPaths } from './relay/paths.js';

/** Paths are reported to the coordinator (console, `knit nodes`) this often, and this soon after a change. */
export const PATH_REPORT_MS = 30_000;
export const PATH_REPORT_DEBOUNCE_MS = 1000;

export interface PathReportSources {
  now: number;
  peers: ReadonlyMap<number, PeerInfo>;
  /** Meshes with more peers than this punch on demand, so most of their peers are idle by design. */
  eagerLimit: number;
  relay: Pick<RelayPaths, 'path'>;
  disco: Pick<DiscoCore, 'rttOf'>;
  stats: ReadonlyMap<string, EnginePeerStats>;
  confirm: Pick<PathConfirmer, 'state'>;
}

/**
 * Our paths as the coordinator wants them, cheaply (every agent sends one a second while
 * paths change): O(1) per peer, no status document. In a big mesh most peers are idle by
 * design (paths on demand), so only connected ones are reported; a small one reports all.
 */
export function pathReports(s: PathReportSources): PathReport[] {
  const big = s.peers.size > s.eagerLimit;
  const out: PathReport[] = [];
  for (const p of s.peers.values()) {
    const kind = s.relay.path(p.nodeKey).kind;
    if (big && kind === 'none') continue;
    const rttMs = kind === 'lan' || kind === 'direct' ? s.disco.rttOf(p.nodeKey, s.now) : undefined;
    const handshaking = kind !== 'none' && s.confirm.state(p.nodeKey, kind) !== kind;
    out.push({
      peer: p.nodeKey, kind, lastHandshake: s.stats.get(p.nodeKey)?.lastHandshakeMs ?? 0,
      ...(rttMs !== undefined ? { rttMs } : {}), ...(handshaking ? { handshaking: true as const } : {}),
    });
    if (out.length >= MAX_PATH_REPORTS) break;
  }
  return out;
}

export interface PathReportTimerDeps {
  clock: Clock;
  /** Whether the agent runs; a stopped agent schedules nothing. */
  running: () => boolean;
  report: () => void;
}

/** The one pending report: brought forward by a change, never duplicated. */
export class PathReportTimer {
  private timer: TimerHandle | undefined;
  private dueAt = Infinity;

  constructor(private readonly d: PathReportTimerDeps) {}

  /** Reports in `inMs` unless one is due sooner; each report schedules the next. */
  schedule(inMs: number): void {
    if (!this.d.running()) return;
    const at = this.d.clock.now() + inMs;
    if (this.timer !== undefined && this.dueAt <= at) return;
    if (this.timer !== undefined) this.d.clock.clearTimeout(this.timer);
    this.dueAt = at;
    this.timer = this.d.clock.setTimeout(() => {
      this.timer = undefined;
      this.dueAt = Infinity;
      this.d.report();
      this.schedule(PATH_REPORT_MS);
    }, inMs);
  }

  cancel(): void {
    if (this.timer !== undefined) this.d.clock.clearTimeout(this.timer);
  }
}
