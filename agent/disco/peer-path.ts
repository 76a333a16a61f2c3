/**
 * One peer's path state, pure: which candidate endpoints it has, which pings
 * are outstanding, which path is chosen, and when something must happen next.
 * The DiscoCore owns one of these per peer and turns its decisions into
 * packets; nothing here touches a socket, a timer or the clock.
 *
 * Lifecycle of a path:
 *   no path ──punch burst (ping every candidate at 0, .5, 1, 2, 4 s)──► pong ──► chosen
 *   chosen ──heartbeat every HEARTBEAT_MS──► pong keeps it alive
 *   chosen ──no pong for PATH_DEAD_MS──► no path, re-punch (and ask the peer to call back)
 *   chosen (not lan) ──every UPGRADE_MS──► ping every candidate; a better one that answers wins
 *
 * Trust: an address becomes the chosen endpoint only after an authenticated
 * pong from it (or a WireGuard handshake WireGuard saw from it). Anything else
 * — coordinator endpoints, mDNS, call-me-maybe, a ping's source — is only a
 * candidate to probe.
 */
import { formatEndpoint, isLoopbackIp, isPrivateIp } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { PathKind } from '../status.js';

/** Offsets of the pings of one punch burst. Crossing pings need both NATs opened within one mapping lifetime. */
export const PUNCH_SCHEDULE_MS = [0, 500, 1000, 2000, 4000];
/** After a burst without an answer, try again this long after (doubling up to the cap). */
export const REPUNCH_BASE_MS = 5000;
export const REPUNCH_CAP_MS = 30_000;
/** Heartbeat on the chosen path; three missed heartbeats make it dead. */
export const HEARTBEAT_MS = 2000;
/** A chosen path with no pong for this long is dead (the issue asks for about 7 s). */
export const PATH_DEAD_MS = 6500;
/** A pong later than this doesn't count (and the ping is forgotten). */
export const PING_TIMEOUT_MS = 5000;
/** How often a non-LAN path looks for a better one. */
export const UPGRADE_MS = 30_000;
/**
 * A direct path chosen while a LAN candidate never answered looks again this soon: the
 * burst that would have tried the LAN ends at the first pong, and behind a hairpinning
 * router the hairpin often answers first.
 */
export const LAN_RECHECK_MS = 2000;
/** A new candidate must be this much faster (ratio) to replace a chosen path of the same kind. */
export const SWITCH_RTT_RATIO = 0.7;
/** Candidates per peer: a hostile peer map can't make us probe the whole internet. */
export const MAX_CANDIDATES = 32;
/** A candidate not reconfirmed by any source for this long is forgotten. */
export const CANDIDATE_TTL_MS = 120_000;

export type CandidateSource = 'coordinator' | 'lan' | 'call-me-maybe' | 'ping' | 'wireguard' | 'hard-nat';

export interface Candidate {
  ep: UdpEndpoint;
  key: string;
  /**
   * The extra local socket this path runs on (hard-NAT birthday probing, hard-nat.ts); undefined =
   * the tunnel port. The same remote endpoint through another socket is another path (another key).
   */
  via?: number;
  kind: 'lan' | 'direct';
  /** Who vouches for it (a short list: a Set per candidate costs a big mesh dearly). */
  sources: CandidateSource[];
  addedAt: number;
  refreshedAt: number;
  lastPingAt: number;
  lastPongAt: number;
  rttMs?: number;
}

export interface PeerPathState {
  candidates: Map<string, Candidate>;
  /** suspect: one side's address just changed, so the next authenticated answer on any candidate may replace it. */
  best?: { key: string; kind: 'lan' | 'direct'; rttMs?: number; since: number; suspect?: boolean };
  burstStart?: number;
  burstIndex: number; // next index in PUNCH_SCHEDULE_MS
  repunchAt?: number;
  repunchDelay: number;
  nextHeartbeatAt?: number;
  nextUpgradeAt?: number;
  pingsSent: number;
  pongsReceived: number;
}

export function newPeerPath(): PeerPathState {
  return { candidates: new Map(), burstIndex: PUNCH_SCHEDULE_MS.length, repunchDelay: REPUNCH_BASE_MS, pingsSent: 0, pongsReceived: 0 };
}

export function candidateKind(ep: UdpEndpoint, source: CandidateSource): 'lan' | 'direct' {
  return source === 'lan' || isPrivateIp(ep.address) || isLoopbackIp(ep.address) ? 'lan' : 'direct';
}

/** A candidate's key: "ip:port", or "ip:port@socket" for a path through an extra socket. */
export function candidateKey(ep: UdpEndpoint, via?: number): string {
  return via === undefined ? formatEndpoint(ep) : `${formatEndpoint(ep)}@${via}`;
}

const KIND_RANK: Record<'lan' | 'direct', number> = { lan: 2, direct: 1 };

/** Whether a candidate of kind `kind` would beat the chosen path's kind (a LAN path over a direct one). */
export function betterKind(kind: 'lan' | 'direct', than: 'lan' | 'direct' | undefined): boolean {
  return than === undefined || KIND_RANK[kind] > KIND_RANK[than];
}

/** Adds or refreshes a candidate; returns true when it is new. */
export function addCandidate(s: PeerPathState, ep: UdpEndpoint, source: CandidateSource, now: number, via?: number): boolean {
  const key = candidateKey(ep, via);
  const c = s.candidates.get(key);
  if (c) {
    if (!c.sources.includes(source)) c.sources.push(source);
    c.refreshedAt = now;
    if (source === 'lan') c.kind = 'lan';
    return false;
  }
  if (s.candidates.size >= MAX_CANDIDATES) {
    // Evict the stalest candidate that isn't the chosen path.
    let stalest: Candidate | undefined;
    for (const x of s.candidates.values()) if (x.key !== s.best?.key && (!stalest || x.refreshedAt < stalest.refreshedAt)) stalest = x;
    if (!stalest) return false;
    s.candidates.delete(stalest.key);
  }
  s.candidates.set(key, {
    ep, key, ...(via !== undefined && { via }), kind: candidateKind(ep, source), sources: [source], addedAt: now, refreshedAt: now, lastPingAt: -Infinity, lastPongAt: -Infinity,
  });
  return true;
}

/**
 * Drops candidates nobody has vouched for in CANDIDATE_TTL_MS. Never the chosen path, and never
 * one the coordinator still lists (those leave through `withdrawCoordinatorCandidates`).
 */
export function expireCandidates(s: PeerPathState, now: number): void {
  for (const c of s.candidates.values()) {
    if (c.key === s.best?.key || c.sources.includes('coordinator')) continue;
    if (now - c.refreshedAt > CANDIDATE_TTL_MS && now - c.lastPongAt > CANDIDATE_TTL_MS) s.candidates.delete(c.key);
  }
}

/** The coordinator's list for the peer changed: endpoints it no longer lists lose that vouching. */
export function withdrawCoordinatorCandidates(s: PeerPathState, listed: Set<string>): void {
  for (const c of s.candidates.values()) {
    if (!c.sources.includes('coordinator') || listed.has(c.key)) continue;
    c.sources = c.sources.filter((x) => x !== 'coordinator');
    if (c.sources.length === 0 && c.key !== s.best?.key) s.candidates.delete(c.key);
  }
}

/** Starts (or restarts) a punch burst now. */
export function startBurst(s: PeerPathState, now: number): void {
  s.burstStart = now;
  s.burstIndex = 0;
  s.repunchAt = undefined;
}

/** Is `a` a better path than `b`? LAN before direct, then lower RTT (with hysteresis for the incumbent). */
function better(a: Candidate, b: { kind: 'lan' | 'direct'; rttMs?: number } | undefined, bIsIncumbent: boolean): boolean {
  if (!b) return true;
  if (KIND_RANK[a.kind] !== KIND_RANK[b.kind]) return KIND_RANK[a.kind] > KIND_RANK[b.kind];
  if (a.rttMs === undefined || b.rttMs === undefined) return false;
  return a.rttMs < b.rttMs * (bIsIncumbent ? SWITCH_RTT_RATIO : 1);
}

/** Records an authenticated pong and re-chooses; returns the candidate that is now best if it changed. */
export function notePong(s: PeerPathState, key: string, rttMs: number, now: number): Candidate | undefined {
  const c = s.candidates.get(key);
  if (!c) return undefined;
  c.lastPongAt = now;
  c.rttMs = c.rttMs === undefined ? rttMs : Math.round((c.rttMs * 3 + rttMs) / 4);
  s.pongsReceived++;
  if (s.best?.key === key) {
    s.best.rttMs = c.rttMs;
    s.best.suspect = false;
    return undefined;
  }
  const incumbent = s.best && !s.best.suspect ? s.candidates.get(s.best.key) : undefined;
  if (!better(c, incumbent && now - incumbent.lastPongAt < PATH_DEAD_MS ? { kind: incumbent.kind, rttMs: incumbent.rttMs } : undefined, true)) return undefined;
  s.best = { key, kind: c.kind, rttMs: c.rttMs, since: now };
  s.burstIndex = PUNCH_SCHEDULE_MS.length; // the burst has done its job
  s.repunchAt = undefined;
  s.repunchDelay = REPUNCH_BASE_MS;
  s.nextHeartbeatAt = now + HEARTBEAT_MS;
  const lanUnanswered = c.kind !== 'lan' && [...s.candidates.values()].some((x) => x.kind === 'lan' && x.lastPongAt === -Infinity);
  s.nextUpgradeAt = c.kind === 'lan' ? undefined : now + (lanUnanswered ? LAN_RECHECK_MS : UPGRADE_MS);
  return c;
}

/** Adopts an endpoint WireGuard itself authenticated (a handshake from it) when we have no live path. */
export function noteWireguardEvidence(s: PeerPathState, ep: UdpEndpoint, now: number): Candidate | undefined {
  if (s.best && now - (s.candidates.get(s.best.key)?.lastPongAt ?? -Infinity) < PATH_DEAD_MS) return undefined;
  addCandidate(s, ep, 'wireguard', now);
  const c = s.candidates.get(formatEndpoint(ep));
  if (!c) return undefined;
  c.lastPongAt = now;
  s.best = { key: c.key, kind: c.kind, rttMs: c.rttMs, since: now };
  s.nextHeartbeatAt = now + HEARTBEAT_MS;
  return c;
}

export function pathKind(s: PeerPathState, now: number): PathKind {
  if (!s.best) return 'none';
  const c = s.candidates.get(s.best.key);
  return c && now - c.lastPongAt < PATH_DEAD_MS ? s.best.kind : 'none';
}

/** What the peer's timers want at `now`: which candidates to ping, and whether the path just died. */
export function due(s: PeerPathState, now: number): { ping: Candidate[]; died: boolean; burstEnded: boolean } {
  const ping = new Set<Candidate>();
  let died = false;
  let burstEnded = false;
  if (s.best) {
    const c = s.candidates.get(s.best.key);
    if (!c || now - c.lastPongAt >= PATH_DEAD_MS) {
      died = true;
      s.best = undefined;
      s.nextHeartbeatAt = s.nextUpgradeAt = undefined;
      startBurst(s, now);
    } else {
      if (s.nextHeartbeatAt !== undefined && now >= s.nextHeartbeatAt) {
        ping.add(c);
        s.nextHeartbeatAt = now + HEARTBEAT_MS;
      }
      if (s.nextUpgradeAt !== undefined && now >= s.nextUpgradeAt) {
        for (const x of s.candidates.values()) ping.add(x);
        s.nextUpgradeAt = now + UPGRADE_MS;
      }
    }
  }
  if (s.repunchAt !== undefined && now >= s.repunchAt) startBurst(s, now);
  if (s.burstStart !== undefined && s.burstIndex < PUNCH_SCHEDULE_MS.length && now >= s.burstStart + PUNCH_SCHEDULE_MS[s.burstIndex]!) {
    for (const x of s.candidates.values()) ping.add(x);
    // Skip offsets already passed (a late wakeup must not fire several rounds at once).
    while (s.burstIndex < PUNCH_SCHEDULE_MS.length && now >= s.burstStart + PUNCH_SCHEDULE_MS[s.burstIndex]!) s.burstIndex++;
    if (s.burstIndex >= PUNCH_SCHEDULE_MS.length && !s.best) {
      burstEnded = true;
      s.repunchAt = now + s.repunchDelay;
      s.repunchDelay = Math.min(REPUNCH_CAP_MS, s.repunchDelay * 2);
    }
  }
  return { ping: [...ping], died, burstEnded };
}

export function nextWakeup(s: PeerPathState): number | undefined {
  let t: number | undefined;
  const consider = (x: number | undefined) => { if (x !== undefined && (t === undefined || x < t)) t = x; };
  if (s.best) {
    consider(s.nextHeartbeatAt);
    consider(s.nextUpgradeAt);
    const c = s.candidates.get(s.best.key);
    if (c) consider(c.lastPongAt + PATH_DEAD_MS);
  }
  consider(s.repunchAt);
  if (s.burstStart !== undefined && s.burstIndex < PUNCH_SCHEDULE_MS.length) consider(s.burstStart + PUNCH_SCHEDULE_MS[s.burstIndex]!);
  return t;
}
