/**
 * Agents' path reports, as the coordinator keeps them: each node's last view of
 * its paths to its peers (lan / direct / relay / none, RTT, last handshake), by
 * node id. Soft state in memory only, like online state: on a shared store each
 * replica holds the reports of the agents connected to it (docs/deployment.md).
 * What the console's matrix and `knit nodes` show.
 */
import type { PathReport, PathReportKind } from '../../shared/wire/control.js';

/** A stored path report, by node id. */
export interface PathEdge {
  from: number;
  to: number;
  kind: PathReportKind;
  rttMs?: number;
  lastHandshake: number;
  reportedAt: number; // wall ms
  /** Handed to WireGuard, no handshake over it yet: shown as "direct (handshaking)". */
  handshaking?: true;
}

/** Agents report paths every 30 s and on change; anything faster than this is dropped (by the hub, per session). */
export const PATHS_MIN_INTERVAL_MS = 1000;

export class PathReports {
  private readonly byNode = new Map<number, PathEdge[]>();
  private readonly listeners = new Set<(from: number, edges: PathEdge[]) => void>();

  /**
   * Stores `from`'s report (peers by key → id through `idOf`; strangers and itself skipped,
   * RTT to 0.1 ms) and tells the listeners.
   */
  record(from: number, reports: PathReport[], idOf: (nodeKey: string) => number | undefined, reportedAt: number): void {
    const edges: PathEdge[] = [];
    for (const r of reports) {
      const to = idOf(r.peer);
      if (to === undefined || to === from) continue;
      edges.push({
        from, to, kind: r.kind, lastHandshake: r.lastHandshake, reportedAt,
        ...(r.rttMs !== undefined ? { rttMs: Math.round(r.rttMs * 10) / 10 } : {}), ...(r.handshaking ? { handshaking: true as const } : {}),
      });
    }
    this.byNode.set(from, edges);
    for (const l of this.listeners) l(from, edges);
  }

  /** A removed node's report goes with it. */
  forget(id: number): void {
    this.byNode.delete(id);
  }

  /** Every report of a node that `exists`. */
  edges(exists: (id: number) => boolean): PathEdge[] {
    const out: PathEdge[] = [];
    for (const [from, edges] of this.byNode) if (exists(from)) out.push(...edges);
    return out;
  }

  /** Calls `fn` with every new report; returns its remover. */
  onReport(fn: (from: number, edges: PathEdge[]) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
