/**
 * Quiet punching: the way through for routers whose own stack takes unsolicited
 * WAN packets (a plain Linux box doing masquerade, a cloud NAT instance), pure.
 *
 * Why ordinary punching fails there (seen in the lab with conntrack): A's first
 * punch reaches B's router before B has sent anything. B's router doesn't drop
 * it: its own stack answers (ICMP port unreachable) and conntrack keeps the
 * inbound flow A:p → B-router:p. When B then sends to A, masquerade can't give
 * that flow port p (the tuple is taken) and picks another; A's router drops
 * what comes from it, and A's punches to p keep the clashing flow alive for
 * ever. Neither side hears the other, while both NATs are endpoint-independent.
 *
 * The way out is to make the first packet in each direction find the other
 * side's mapping already open, and to let what went wrong expire:
 *
 *   both sides   silent towards each other's public endpoints for QUIET_SILENCE_MS
 *                (every stale flow and clashed mapping times out: 30 s unreplied in Linux)
 *   opener (O)   at S: one normal ping burst ("open") — O's mapping towards B is fresh and
 *                keeps its port; if B's router is of this kind, the burst lands on its stack
 *                again; O tells B through the coordinator (call-me-maybe) that it opened.
 *                Then O keeps its mapping alive with TTL-1 pings ("keep"): they refresh O's
 *                own router's flow (conntrack is looked up before the TTL check) and die there,
 *                so nothing more lands on B's router.
 *   waiter (W)   S + QUIET_SLOW_MS: its try, after the flow O's open burst may have left on W's
 *                router expired: W's ping leaves from its preserved port and meets O's
 *                mapping, kept open. No earlier try: were W's router of this kind, a try
 *                before that flow expired would clash, and Linux masquerade then gives every
 *                new flow of the tunnel port the clashed port (it reuses the newest flow's
 *                translation for the same source), which no timing undoes while such flows
 *                keep being made.
 *   either       a pong ends it (the path is chosen as usual); after QUIET_TAIL_MS without one
 *                the round ends, ordinary re-punching resumes, and another round may start
 *                after QUIET_RETRY_MS.
 *
 * The opener is the lower node key, as for WireGuard's handshake. Only public
 * (direct) candidates are held back; LAN candidates are pinged as ever.
 * Eligible: both NATs endpoint-independent (hard NATs have their own method,
 * hard-nat.ts) and the ordinary first burst failed.
 */
import type { NatType } from '../../shared/wire/control.js';

/** Longer than Linux's unreplied UDP conntrack timeout (30 s), plus the two sides' skew in starting. */
export const QUIET_SILENCE_MS = 35_000;
/** The opener's burst: two pings, the second in case the first is lost. */
export const QUIET_OPEN_OFFSETS_MS = [0, 300];
/** The waiter's try: after the flow the open burst may have left on its router expired (30 s unreplied, plus skew). */
export const QUIET_SLOW_MS = 32_000;
/** A try is a short burst. */
export const QUIET_TRY_OFFSETS_MS = [0, 300, 1000, 2500];
/** TTL-1 pings keep the opener's mapping open: well inside the 30 s unreplied timeout. */
export const QUIET_KEEP_MS = 10_000;
/** After the waiter's second try, how long to wait for a pong before the round ends. */
export const QUIET_TAIL_MS = 10_000;
/** Between rounds that found nothing (the pair may be unreachable for other reasons). */
export const QUIET_RETRY_MS = 120_000;
/** The TTL of the opener's keep pings: they die at the first router. */
export const QUIET_KEEP_TTL = 1;

export type QuietRole = 'opener' | 'waiter';
export type QuietStep = 'open' | 'keep' | 'try';

export interface QuietPunchState {
  role?: QuietRole;
  /** When the silence started; undefined = no round in progress. */
  enteredAt?: number;
  /** S: when the opener opens (the waiter's anchor, moved by the opener's call-me-maybe). */
  openAt: number;
  /** The round's remaining steps, earliest first. */
  plan: { at: number; step: QuietStep }[];
  endAt: number;
  rounds: number;
  lastEndAt: number;
}

export function newQuietPunch(): QuietPunchState {
  return { openAt: 0, plan: [], endAt: 0, rounds: 0, lastEndAt: -Infinity };
}

/** Whether a pair may need quiet punching: both mappings endpoint-independent. */
export function quietEligible(self: NatType, peer: NatType): boolean {
  return self === 'endpoint-independent' && peer === 'endpoint-independent';
}

export function quietActive(s: QuietPunchState): boolean {
  return s.enteredAt !== undefined;
}

/** Whether a new round may start now (none running, and the last one ended QUIET_RETRY_MS ago). */
export function quietMayStart(s: QuietPunchState, now: number): boolean {
  return !quietActive(s) && now - s.lastEndAt >= QUIET_RETRY_MS;
}

function planFor(role: QuietRole, openAt: number): { at: number; step: QuietStep }[] {
  if (role === 'opener') {
    const plan: { at: number; step: QuietStep }[] = QUIET_OPEN_OFFSETS_MS.map((o) => ({ at: openAt + o, step: 'open' }));
    for (let t = QUIET_KEEP_MS; t < QUIET_SLOW_MS + QUIET_TAIL_MS; t += QUIET_KEEP_MS) plan.push({ at: openAt + t, step: 'keep' });
    return plan;
  }
  return QUIET_TRY_OFFSETS_MS.map((o) => ({ at: openAt + QUIET_SLOW_MS + o, step: 'try' as const }));
}

/** Starts a round: silence now, the rest on schedule. */
export function startQuiet(s: QuietPunchState, role: QuietRole, now: number): void {
  s.role = role;
  s.enteredAt = now;
  s.openAt = now + QUIET_SILENCE_MS;
  s.plan = planFor(role, s.openAt);
  s.endAt = s.openAt + QUIET_SLOW_MS + QUIET_TAIL_MS;
  s.rounds++;
}

/**
 * The waiter heard (through the coordinator) that the opener just opened: its tries are
 * re-anchored on that moment, so the two sides' clocks needn't agree. Ignored outside the
 * silence (before it, or once the tries have begun) and by the opener.
 */
export function quietOpenerSignalled(s: QuietPunchState, now: number): void {
  if (s.role !== 'waiter' || s.enteredAt === undefined || now < s.enteredAt + QUIET_SILENCE_MS / 2) return;
  if (s.plan.length < QUIET_TRY_OFFSETS_MS.length) return; // a try already went out
  s.openAt = now;
  s.plan = planFor('waiter', s.openAt);
  s.endAt = s.openAt + QUIET_SLOW_MS + QUIET_TAIL_MS;
}

/** Ends the round at once: a path was found, or something changed (network, the peer restarted). */
export function stopQuiet(s: QuietPunchState, now: number, failed: boolean): void {
  if (s.enteredAt === undefined) return;
  s.enteredAt = undefined;
  s.plan = [];
  // A round that found a path doesn't hold the next one back (the path may die and need another).
  s.lastEndAt = failed ? now : -Infinity;
}

/**
 * What a round is about: a peer's public candidates on our tunnel port (not LAN ones, which no
 * router in between can spoil, nor hard-NAT extra sockets, which have their own method).
 */
export function isQuietTarget(c: { kind: 'lan' | 'direct'; via?: number }): boolean {
  return c.kind === 'direct' && c.via === undefined;
}

/** During a round its targets are pinged only on its schedule. */
export function quietHoldsBack(s: QuietPunchState, c: { kind: 'lan' | 'direct'; via?: number }): boolean {
  return s.enteredAt !== undefined && isQuietTarget(c);
}

/** The steps due at `now` (at most one of each kind), and whether the round just ended. */
export function quietDue(s: QuietPunchState, now: number): { steps: QuietStep[]; ended: boolean } {
  if (s.enteredAt === undefined) return { steps: [], ended: false };
  const steps = new Set<QuietStep>();
  while (s.plan.length > 0 && s.plan[0]!.at <= now) steps.add(s.plan.shift()!.step);
  if (now >= s.endAt) {
    stopQuiet(s, now, true);
    return { steps: [...steps], ended: true };
  }
  return { steps: [...steps], ended: false };
}

export function quietNextWakeup(s: QuietPunchState): number | undefined {
  if (s.enteredAt === undefined) return undefined;
  return Math.min(s.plan[0]?.at ?? Infinity, s.endAt);
}
