/**
 * Whether a peer's path carries the tunnel yet, pure. A path (lan, direct or
 * relay, as the agent hands it to the engine) counts only once WireGuard has a
 * handshake newer than the moment the path was handed over; until then it is
 * `direct (handshaking)` and the like, in every surface that shows it (status,
 * path reports, the console). A pong proves that disco packets cross; only a
 * handshake proves that the tunnel does.
 *
 * It also makes the tunnel follow a new path within a round trip instead of
 * WireGuard's own timers. wireguard-go sends at most one handshake initiation
 * per REKEY_TIMEOUT (5 s): a first initiation lost on the way (sent before the
 * far NAT was open, or to a path that just died) costs five seconds, and an
 * existing session moved onto a new path never handshakes again for up to two
 * minutes. So when a path is not confirmed soon after it starts, this asks the
 * engine for a fresh handshake (the engine re-creates the peer, which makes
 * WireGuard initiate at once), and again until it is, a bounded number of times.
 *
 * Who forces: the initiator (the lower node key, engine-config.ts) first; the
 * responder only later, once the initiator's handshake had its chance, so the
 * two never initiate in the same instant (the lock-step stall in LAB-NOTES).
 *
 *   path handed over ─► handshaking ─(handshake newer than the hand-over)─► confirmed
 *                          │ no handshake by FORCE_FIRST_MS (initiator) / RESPONDER_FORCE_FIRST_MS
 *                          └─► force a handshake, again every FORCE_RETRY_MS, at most FORCE_MAX times
 */
import type { PathKind, PathState } from './status.js';

/** The initiator forces a handshake when none came this long after the path started: a lost first initiation, or a session moved onto a new path. */
export const FORCE_FIRST_MS = 400;
/** The responder waits longer — past its own anti-stall wait (RESPONDER_WAIT_MS, 2 s) — so its forced initiation never meets the initiator's. */
export const RESPONDER_FORCE_FIRST_MS = 2500;
/** Between forced handshakes while none completes; WireGuard's own retry is 5 s. */
export const FORCE_RETRY_MS = 1000;
/** After this many forced handshakes WireGuard's own retries take over (the path may be dying). */
export const FORCE_MAX = 6;

interface PeerConfirm {
  kind: PathKind;
  endpoint?: string;
  /** Monotonic ms when the path was handed to the engine. */
  since: number;
  /** Wall ms of the same moment: WireGuard reports handshakes in wall time. */
  sinceWall: number;
  confirmed: boolean;
  initiator: boolean;
  forces: number;
  nextForceAt?: number;
}

export class PathConfirmer {
  private readonly peers = new Map<string, PeerConfirm>();
  /** The peers still waiting for a handshake: timers and `pending` look at these only (a big mesh is mostly confirmed). */
  private readonly waiting = new Set<string>();
  /** Handshakes forced so far (a counter for status). */
  forced = 0;

  /**
   * The path the engine uses for a peer changed (kind or endpoint). `lastHandshakeMs` is what
   * WireGuard reported last: a handshake from before the change proves nothing about the new path.
   */
  pathChanged(nodeKey: string, kind: PathKind, endpoint: string | undefined, initiator: boolean, now: number, wallNow: number): void {
    this.start(nodeKey, kind, endpoint, initiator, now, wallNow, initiator ? FORCE_FIRST_MS : RESPONDER_FORCE_FIRST_MS);
  }

  /**
   * The peer restarted (a new disco key) while its path stayed: its WireGuard has no session,
   * so ours to it is dead, and nothing on our side would handshake before WireGuard's own
   * timers notice (a restarted responder waits for us). The path counts again only after a
   * new handshake, and the initiator forces one at once.
   */
  peerRestarted(nodeKey: string, kind: PathKind, endpoint: string | undefined, initiator: boolean, now: number, wallNow: number): void {
    this.start(nodeKey, kind, endpoint, initiator, now, wallNow, initiator ? 0 : RESPONDER_FORCE_FIRST_MS);
  }

  private start(nodeKey: string, kind: PathKind, endpoint: string | undefined, initiator: boolean, now: number, wallNow: number, firstForceInMs: number): void {
    if (kind === 'none') return this.forget(nodeKey);
    this.waiting.add(nodeKey);
    this.peers.set(nodeKey, { kind, endpoint, since: now, sinceWall: wallNow, confirmed: false, initiator, forces: 0, nextForceAt: now + firstForceInMs });
  }

  /** WireGuard's latest handshake for a peer (wall ms, 0 = never); returns true when it confirms the path. */
  handshake(nodeKey: string, lastHandshakeMs: number): boolean {
    const p = this.peers.get(nodeKey);
    if (!p || p.confirmed || lastHandshakeMs <= 0 || lastHandshakeMs < p.sinceWall) return false;
    p.confirmed = true;
    p.nextForceAt = undefined;
    this.waiting.delete(nodeKey);
    return true;
  }

  /** The peer left the map. */
  forget(nodeKey: string): void {
    this.peers.delete(nodeKey);
    this.waiting.delete(nodeKey);
  }

  /** What status shows for a peer whose path (from the relay/disco choice) is `kind`. */
  state(nodeKey: string, kind: PathKind): PathState {
    if (kind === 'none') return 'none';
    const p = this.peers.get(nodeKey);
    return p && p.kind === kind && p.confirmed ? kind : `${kind} (handshaking)`;
  }

  /** Whether some path waits for its handshake: the engine's stats are then read often. */
  pending(): boolean {
    return this.waiting.size > 0;
  }

  /** Peers whose handshake is to be forced now (each counted once per call). */
  due(now: number): string[] {
    const out: string[] = [];
    for (const key of this.waiting) {
      const p = this.peers.get(key)!;
      if (p.nextForceAt === undefined || now < p.nextForceAt) continue;
      p.forces++;
      this.forced++;
      p.nextForceAt = p.forces < FORCE_MAX ? now + FORCE_RETRY_MS : undefined;
      out.push(key);
    }
    return out;
  }

  nextWakeup(): number | undefined {
    let t: number | undefined;
    for (const key of this.waiting) {
      const at = this.peers.get(key)!.nextForceAt;
      if (at !== undefined && (t === undefined || at < t)) t = at;
    }
    return t;
  }
}
