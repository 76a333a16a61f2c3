/**
 * Hard NAT traversal, planned sans-I/O: port prediction and birthday-style
 * many-port probing for a peer pair where one side maps endpoint-dependently
 * ("hard", symmetric NAT) and the other endpoint-independently ("easy"). The
 * disco core (core.ts) owns one HardNatState per peer; hard-nat-runner.ts asks
 * this module what to send and when, and turns the answer into sealed disco
 * pings. Nothing here touches a socket, a timer or the clock. docs/disco.md,
 * "Hard NATs".
 *
 * Why it is needed: a port-restricted easy NAT admits a packet only from an
 * ip:port it has sent to. The hard side's mapping towards the easy side (port
 * M) is new and unknown, so the easy side must send to M first — it has to
 * guess M.
 *
 *   sequential allocator (two STUN servers saw ports p, p+s with small s):
 *     predict — the hard side pings the easy side from its tunnel port (its
 *     mapping lands a few strides after the last one observed); the easy side
 *     probes the window of PROBES ports around p+s, p+2s, … No extra sockets:
 *     WireGuard stays on the tunnel port.
 *   random allocator (or a prediction that failed last time):
 *     birthday — the hard side opens K extra sockets, each pinging the easy
 *     side's endpoint (K mappings with permits for the easy side); the easy
 *     side pings N random ports at the hard side's address. One meets with
 *     P ≈ 1 − exp(−K·N / 64512): K = N = 512 gives 98.3% per attempt.
 *
 * Either order works: a packet the hard NAT drops still opens the easy NAT for
 * that port, so the hard side's opener arriving later (within the 30 s
 * mapping lifetime) is admitted, and vice versa. Both sides derive the same
 * plan from public facts (both NAT types and the hard side's reflexive ports,
 * from the coordinator's peer map) and start when their first punch burst
 * ends without a path, so no new coordination message is needed; the peer's
 * call-me-maybe re-aligns them after a restart or roam.
 *
 * Budget: at most HARD_NAT_MAX_PROBES_PER_ATTEMPT (1,024) packets per attempt
 * across both sides (K + N), paced at HARD_NAT_PROBES_PER_S per peer, attempts
 * backed off from 20 s doubling to 10 min.
 */
import { isLoopbackIp, isPrivateIp, parseEndpoint } from '../../shared/net/addr.js';
import type { RandomBytes } from '../../shared/clock.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';

/** Both sides together never send more than this many hard-NAT packets in one attempt (the bound). */
export const HARD_NAT_MAX_PROBES_PER_ATTEMPT = 1024;
/** Extra sockets the hard side opens in a birthday attempt (K). */
export const BIRTHDAY_SOCKETS = 512;
/** Ports the easy side probes per attempt (N); K + N stays within the budget. */
export const HARD_NAT_PROBES = 512;
/** Extra sockets open at once, all peers together (two birthday attempts): file descriptors are not free. */
export const HARD_NAT_MAX_OPEN_SOCKETS = 1024;
/** Pacing per peer: 100 packets a second, sent as 10 every 100 ms (gentle on NAT tables and rate limiters). */
export const HARD_NAT_PROBES_PER_S = 100;
export const HARD_NAT_SLICE_MS = 100;
const SLICE_SIZE = (HARD_NAT_PROBES_PER_S * HARD_NAT_SLICE_MS) / 1000;
/**
 * The hard side keeps an attempt's sockets this long after it began: the easy side starts within
 * a second or two and needs 5.12 s for its probes; mappings and permits live 30 s after the last
 * outbound packet, so a meeting is still possible for the whole hold.
 */
export const HARD_NAT_HOLD_MS = 20_000;
/** The next attempt comes this long after the previous one began, doubling up to the cap. */
export const HARD_NAT_BACKOFF_BASE_MS = 20_000;
export const HARD_NAT_BACKOFF_CAP_MS = 640_000;
/** Two observed mappings this close (in ports) mean a sequential allocator; random ones are ~21,000 apart on average. */
export const SEQUENTIAL_MAX_STRIDE = 16;
/** How many strides before the last observed mapping the predicted window starts (a mapping made just before it). */
const PREDICT_BEHIND = 32;
/** NAPT ports (RFC 6056 leaves 0–1023 alone; sim/nat.ts does the same). */
export const HARD_NAT_PORT_MIN = 1024;
export const HARD_NAT_PORT_MAX = 65535;
const PORT_RANGE = HARD_NAT_PORT_MAX - HARD_NAT_PORT_MIN + 1;

if (BIRTHDAY_SOCKETS + HARD_NAT_PROBES > HARD_NAT_MAX_PROBES_PER_ATTEMPT) throw new Error('hard-nat: K + N must fit the probe budget');

export type HardNatRole = 'hard' | 'easy';

/**
 * Which half of an attempt this side plays, from both NAT types: only hard ↔ endpoint-independent
 * can meet (hard ↔ hard would need two unknown ports to coincide: the relay carries it).
 */
export function hardNatRole(self: NatType, peer: NatType): HardNatRole | undefined {
  if (self === 'endpoint-dependent' && peer === 'endpoint-independent') return 'hard';
  if (self === 'endpoint-independent' && peer === 'endpoint-dependent') return 'easy';
  return undefined;
}

/** What the hard side's reflexive endpoints say about its port allocator. */
export type PortPrediction =
  | { kind: 'sequential'; address: string; last: number; stride: number }
  | { kind: 'random'; address: string };

function isPublic(ep: UdpEndpoint): boolean {
  return !isPrivateIp(ep.address) && !isLoopbackIp(ep.address);
}

/**
 * Reads the hard side's public address and allocator from its endpoint list (reflexive endpoints
 * first, in the order of the STUN servers that saw them). Two ports of one address a small stride
 * apart mean sequential allocation; anything else is treated as random. Undefined: no public
 * address to aim at.
 */
export function predictPorts(endpoints: readonly string[]): PortPrediction | undefined {
  const byAddress = new Map<string, number[]>();
  for (const text of endpoints) {
    const ep = parseEndpoint(text);
    if (!ep || !isPublic(ep)) continue;
    const ports = byAddress.get(ep.address) ?? [];
    if (!ports.includes(ep.port)) ports.push(ep.port);
    byAddress.set(ep.address, ports);
  }
  let best: [string, number[]] | undefined;
  for (const e of byAddress) if (!best || e[1].length > best[1].length || (e[1].length === best[1].length && !e[0].includes(':') && best[0].includes(':'))) best = e;
  if (!best) return undefined;
  const [address, ports] = best;
  if (ports.length >= 2) {
    const stride = ports[1]! - ports[0]!;
    if (stride !== 0 && Math.abs(stride) <= SEQUENTIAL_MAX_STRIDE) return { kind: 'sequential', address, last: ports[1]!, stride };
  }
  return { kind: 'random', address };
}

/** Wraps a port into the NAPT range, as a sequential allocator does. */
function wrapPort(p: number): number {
  return HARD_NAT_PORT_MIN + ((((p - HARD_NAT_PORT_MIN) % PORT_RANGE) + PORT_RANGE) % PORT_RANGE);
}

/** The easy side's probe ports: the predicted window for a sequential allocator, else N distinct random ports. */
export function probePorts(prediction: PortPrediction, random: RandomBytes, count = HARD_NAT_PROBES): number[] {
  if (!Number.isInteger(count) || count < 0 || count > HARD_NAT_MAX_PROBES_PER_ATTEMPT) throw new RangeError('probe count out of budget');
  const out: number[] = [];
  const seen = new Set<number>();
  if (prediction.kind === 'sequential') {
    // Most likely first: the next mappings after the last one seen, then the few just before it.
    const order: number[] = [];
    for (let i = 1; i <= count - PREDICT_BEHIND; i++) order.push(i);
    for (let i = 0; i > -PREDICT_BEHIND; i--) order.push(i);
    for (const i of order) {
      const p = wrapPort(prediction.last + i * prediction.stride);
      if (seen.has(p)) continue;
      seen.add(p);
      out.push(p);
    }
    return out.slice(0, count);
  }
  // Random distinct ports: 3 bytes per draw, rejection-free modulo bias is < 0.4% and irrelevant here.
  for (let tries = 0; out.length < count && tries < count * 4; tries++) {
    const b = random(3);
    const p = HARD_NAT_PORT_MIN + (((b[0]! << 16) | (b[1]! << 8) | b[2]!) % PORT_RANGE);
    if (seen.has(p)) continue;
    seen.add(p);
    out.push(p);
  }
  return out;
}

/** The chance one attempt meets: K hard-side mappings, N easy-side probes, over the port range. */
export function birthdaySuccessProbability(k = BIRTHDAY_SOCKETS, n = HARD_NAT_PROBES, range = PORT_RANGE): number {
  return 1 - Math.exp((-k * n) / range);
}

/** One attempt in flight. */
export interface HardNatAttempt {
  role: HardNatRole;
  mode: 'predict' | 'birthday';
  index: number;
  startedAt: number;
  /** Easy side: where to send, in order. */
  target?: UdpEndpoint;
  ports: number[];
  /** Hard side: how many extra sockets to open (each sends one ping to `target`). */
  sockets: number;
  /** Packets sent so far in this attempt (probes or openers). */
  sent: number;
  /** When the next slice of SLICE_SIZE packets may go. */
  nextSliceAt: number;
  /** Hard side: the socket ids this attempt opened. */
  socketIds: number[];
  /** The sockets are given back at this time unless one carries the path. */
  releaseAt: number;
  released: boolean;
}

export interface HardNatState {
  /** Attempts since the last reset (new peer, new disco key, a roam). */
  attempts: number;
  /** When the next attempt may start; undefined until the first punch burst has ended without a path. */
  nextAttemptAt?: number;
  backoffMs: number;
  current?: HardNatAttempt;
  /** Sockets kept past their attempt because a path runs on them. */
  kept: Set<number>;
}

export function newHardNatState(): HardNatState {
  return { attempts: 0, backoffMs: HARD_NAT_BACKOFF_BASE_MS, kept: new Set() };
}

/** Forget the schedule (both sides re-punch after a new disco key or a roam, so both start over together). */
export function resetHardNat(s: HardNatState): void {
  s.attempts = 0;
  s.nextAttemptAt = undefined;
  s.backoffMs = HARD_NAT_BACKOFF_BASE_MS;
}

/** The first punch burst ended without a path: the first attempt may start now (later ones keep their back-off). */
export function noteBurstFailed(s: HardNatState, now: number): void {
  s.nextAttemptAt ??= now;
}

export interface PlanInput {
  role: HardNatRole;
  /** The hard side's allocator, from its endpoint list (ours when we are hard). */
  prediction: PortPrediction;
  /** Easy side: probes go to prediction.address. Hard side: openers go here (the easy side's public endpoint). */
  peerEndpoint?: UdpEndpoint;
  /** Hard side: whether this agent can open extra sockets at all (the shell offers them). */
  canOpenSockets: boolean;
  random: RandomBytes;
}

/**
 * Starts the next attempt: sequential allocators alternate prediction (no extra sockets, the
 * tunnel's own mapping is the target) and birthday; random ones always use birthday. Both sides
 * count attempts the same way, and the easy side's window covers a sequential hard side's new
 * sockets as well, so a side that miscounted still meets.
 */
export function startAttempt(s: HardNatState, input: PlanInput, now: number): HardNatAttempt {
  const index = s.attempts++;
  const mode = input.prediction.kind === 'sequential' && index % 2 === 0 ? 'predict' : 'birthday';
  const a: HardNatAttempt = {
    role: input.role, mode, index, startedAt: now, ports: [], sockets: 0, sent: 0, nextSliceAt: now, socketIds: [],
    releaseAt: now + HARD_NAT_HOLD_MS, released: false,
  };
  if (input.role === 'easy') {
    a.target = { address: input.prediction.address, port: 0 };
    a.ports = probePorts(input.prediction, input.random);
  } else {
    a.target = input.peerEndpoint;
    a.sockets = mode === 'birthday' && input.canOpenSockets && input.peerEndpoint ? BIRTHDAY_SOCKETS : 0;
  }
  s.current = a;
  s.nextAttemptAt = now + s.backoffMs;
  s.backoffMs = Math.min(HARD_NAT_BACKOFF_CAP_MS, s.backoffMs * 2);
  return a;
}

function attemptTotal(a: HardNatAttempt): number {
  return a.role === 'easy' ? a.ports.length : a.sockets;
}

/**
 * How many packets may go now: one slice when it is due, else none; the caller sends that many
 * and adds them to `sent`. A late wakeup sends one slice, never a catch-up burst, so the rate
 * stays at or under HARD_NAT_PROBES_PER_S however the timer fires.
 */
export function takeSlice(a: HardNatAttempt, now: number): number {
  const left = attemptTotal(a) - a.sent;
  if (left <= 0 || now < a.nextSliceAt) return 0;
  a.nextSliceAt = now + HARD_NAT_SLICE_MS;
  return Math.min(SLICE_SIZE, left);
}

/** Stops the attempt's sending (a path was found: the rest of the budget is saved). */
export function stopSending(a: HardNatAttempt): void {
  a.sent = attemptTotal(a);
}

/** When the attempt (or the schedule) next needs a wakeup. */
export function hardNatNextWakeup(s: HardNatState, pathless: boolean): number | undefined {
  let t: number | undefined;
  const consider = (x: number | undefined) => { if (x !== undefined && (t === undefined || x < t)) t = x; };
  const a = s.current;
  if (a) {
    if (a.sent < attemptTotal(a)) consider(a.nextSliceAt);
    if (!a.released) consider(a.releaseAt);
  }
  if (pathless) consider(s.nextAttemptAt);
  return t;
}

/** The endpoint an easy-side probe goes to. */
export function probeTarget(a: HardNatAttempt, i: number): UdpEndpoint {
  return { address: a.target!.address, port: a.ports[i]! };
}
