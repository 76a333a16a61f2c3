/**
 * Path MTU discovery for one peer's chosen path, pure: which probe sizes to send
 * and when, what the answers prove, and what that means for the tunnel's packets.
 *
 * Why: a link below 1500 bytes on the way (PPPoE 1492, a tunnel in a tunnel, a
 * 1280-byte IPv6-era uplink) silently drops WireGuard packets that don't fit;
 * routers rarely say so (no ICMP, or ICMP filtered), so small pings pass while
 * full-size packets vanish. Only probing tells. The disco core sends one padded
 * disco ping of every size in PATH_MTU_PROBE_SIZES at once on the chosen path;
 * the peer answers each with a pong of exactly the same length
 * (shared/wire/disco.ts), so an answered probe proves that packets of that size
 * cross in both directions. The largest answered size is the path MTU; the
 * tunnel then carries at most `tunnelMtuFor(pathMtu)` bytes per packet to that
 * peer (the agent sets it as the peer's route MTU: docs/disco.md, "Path MTU").
 *
 * Timeline for one path:
 *   chosen ─► probe every size at once ─► each answer raises the proven size at once
 *          └ PATH_MTU_ROUND_MS later the round ends; a re-probe (every
 *            PATH_MTU_REPROBE_MS) may lower it, if the path got smaller
 *   a new path (or none) ─► forget everything, probe again
 *
 * Nothing here sends or trusts a packet; core.ts does both (a probe's pong counts
 * only under the ordinary pong rules and only at its full length).
 */
/**
 * Path MTUs probed: whole IP packets on the underlay. 1280 is IPv6's minimum link MTU (and
 * nested tunnels'); 1360–1440 cover tunnels with various overheads; 1480 fits the interface's
 * 1420 over IPv4 (and 6in4 links), 1500 over IPv6 (and Ethernet). Larger paths change nothing:
 * the interface's MTU is the cap.
 */
export const PATH_MTU_PROBE_SIZES = [1280, 1360, 1400, 1440, 1480, 1500] as const;
/** IP and UDP headers in front of a disco payload on the underlay. */
export const UDP_OVERHEAD_V4 = 28;
export const UDP_OVERHEAD_V6 = 48;
/** WireGuard's data message header (16) and tag (16), on top of IP and UDP. */
export const WIREGUARD_DATA_OVERHEAD = 32;
/**
 * WireGuard pads each packet to a multiple of 16 bytes, capped by the *interface's* MTU, not
 * by a route's: a route MTU that is not a multiple of 16 would be padded past the path.
 */
export const WIREGUARD_PADDING_MULTIPLE = 16;
/** Answers later than this don't count (disco's PING_TIMEOUT_MS); a round ends then. */
export const PATH_MTU_ROUND_MS = 5000;
/** A path is probed again this often: a route's MTU can shrink (a new uplink, a VPN under us). */
export const PATH_MTU_REPROBE_MS = 10 * 60_000;

export interface PathMtuState {
  /** The candidate key of the path probed (core's "ip:port" or "ip:port@socket"); undefined = no path. */
  key?: string;
  ipv6: boolean;
  /** The largest path MTU proven on this path; undefined until a probe is answered. */
  provenBytes?: number;
  /** The round in flight: when it began and the largest size answered in it. */
  round?: { startedAt: number; best?: number };
  nextProbeAt?: number;
}

export function newPathMtu(): PathMtuState {
  return { ipv6: false };
}

/** The UDP payload (disco packet length) of a probe for path MTU `pathBytes`. */
export function probePayloadBytes(pathBytes: number, ipv6: boolean): number {
  return pathBytes - (ipv6 ? UDP_OVERHEAD_V6 : UDP_OVERHEAD_V4);
}

/**
 * The largest inner packet WireGuard can carry over a path of `pathBytes` without being cut:
 * the path less IP, UDP and WireGuard's 32 bytes, and never above the interface's MTU. Below
 * the interface's MTU it is rounded down to WireGuard's padding unit (padding stops at the
 * interface's MTU, so a full-size packet is never padded past it). 1280 → 1216 over IPv4,
 * 1200 over IPv6; 1492 → 1420.
 */
export function tunnelMtuFor(pathBytes: number, ipv6: boolean, interfaceMtu: number): number {
  const room = pathBytes - (ipv6 ? UDP_OVERHEAD_V6 : UDP_OVERHEAD_V4) - WIREGUARD_DATA_OVERHEAD;
  return room >= interfaceMtu ? interfaceMtu : Math.floor(room / WIREGUARD_PADDING_MULTIPLE) * WIREGUARD_PADDING_MULTIPLE;
}

/**
 * Follows the peer's chosen path (`key` undefined: none). A different path is a different
 * route: what was proven is forgotten and probing starts now. Returns whether the proven
 * size changed (it was known and now isn't).
 */
export function followPath(s: PathMtuState, key: string | undefined, ipv6: boolean, now: number): boolean {
  if (key === s.key) return false;
  const hadProof = s.provenBytes !== undefined;
  s.key = key;
  s.ipv6 = ipv6;
  s.provenBytes = undefined;
  s.round = undefined;
  s.nextProbeAt = key === undefined ? undefined : now;
  return hadProof;
}

/**
 * What the timers want at `now`: the path MTUs to probe (a new round), and whether a round
 * just ended having lowered the proven size (a re-probe found a smaller path).
 */
export function dueProbes(s: PathMtuState, now: number): { sizes: readonly number[]; changed: boolean } {
  let changed = false;
  if (s.round && now >= s.round.startedAt + PATH_MTU_ROUND_MS) {
    // An answered round is the truth about the path now; an unanswered one proves nothing
    // (lost probes, or a peer too old to pad its pongs), so it leaves the proof as it was.
    const best = s.round.best;
    if (best !== undefined && best !== s.provenBytes) {
      s.provenBytes = best;
      changed = true;
    }
    s.round = undefined;
  }
  if (s.key === undefined || s.nextProbeAt === undefined || now < s.nextProbeAt) return { sizes: [], changed };
  s.round = { startedAt: now };
  s.nextProbeAt = now + PATH_MTU_REPROBE_MS;
  return { sizes: PATH_MTU_PROBE_SIZES, changed };
}

/**
 * A probe of path MTU `pathBytes` on path `key` was answered at full length. Raises the
 * proven size at once (the tunnel needn't wait for the round to end); returns whether it changed.
 */
export function noteProbeAnswered(s: PathMtuState, key: string, pathBytes: number): boolean {
  if (key !== s.key || !s.round) return false;
  s.round.best = Math.max(s.round.best ?? 0, pathBytes);
  if (s.provenBytes !== undefined && s.provenBytes >= pathBytes) return false;
  s.provenBytes = pathBytes;
  return true;
}

export function pathMtuNextWakeup(s: PathMtuState): number | undefined {
  const roundEnd = s.round ? s.round.startedAt + PATH_MTU_ROUND_MS : undefined;
  if (roundEnd === undefined) return s.nextProbeAt;
  return s.nextProbeAt === undefined ? roundEnd : Math.min(roundEnd, s.nextProbeAt);
}
