/**
 * Endpoint discovery, sans-I/O: which endpoints can peers reach us at, and
 * how does our NAT map? `handle(event, now)` returns actions; `nextWakeup()`
 * says when to call it with a tick. The shell sends the STUN requests from
 * the tunnel's own UDP port and feeds back the STUN packets that arrive on it,
 * so the reflexive endpoint the observer reports is the NAT mapping the
 * tunnel itself uses.
 *
 * A round:
 *   1. for each observer (the coordinator's STUN port or ports) a Binding
 *      request with a fresh random transaction id, padded so the answer is
 *      never larger (no amplification), sent at +0, +250 and +750 ms until
 *      answered;
 *   2. an answer counts only if its transaction id is outstanding and it
 *      comes from the observer that id was sent to;
 *   3. the round ends when every observer answered or after 2 s; the answers
 *      are classified (classify.ts) into a result: reflexive endpoints,
 *      mapping behaviour, port preservation, candidates.
 *
 * Rounds run at start, when the interfaces change (at once, abandoning a
 * round in flight: its answers describe the old network), on request
 * (`refresh`: knit netcheck, a path died), and every 20 s. The periodic round
 * doubles as the keepalive of the tunnel port's NAT mapping.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import { encodeBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN, STUN_TXID_LEN } from '../../shared/wire/stun.js';
import { candidateEndpoints, classifyMapping, type MappingClassification, type MappingObservation } from './classify.js';

/**
 * When each request is (re)sent, relative to the round's start. RFC 8489
 * §6.2.1 starts at 500 ms and doubles for 39.5 s; an observer one Internet RTT
 * away answers in well under 250 ms, and a roaming host wants its new mapping
 * in a second, not in forty.
 */
export const STUN_RETRANSMIT_MS: readonly number[] = [0, 250, 750];
/** A round gives up after this long; observers that stayed silent count as unreachable. */
export const STUN_ROUND_TIMEOUT_MS = 2000;
/** NAT UDP mappings have been seen to expire after 30 s of silence: a round every 20 s keeps ours and notices a moved one. */
export const REDISCOVER_MS = 20_000;
/**
 * After a round nobody answered, the next comes this soon, doubling each time
 * up to REDISCOVER_MS: a few lost packets or a restarting coordinator should
 * not cost the reflexive candidate for a whole period.
 */
export const BLOCKED_RETRY_MS = 5000;
/**
 * A round without answers keeps the last reflexive endpoints among the
 * candidates for this long (unless the interfaces changed): one lost round
 * must not retract what peers are using, and three missed periods mean the
 * mapping is likely gone.
 */
export const REFLEXIVE_KEEP_MS = 60_000;

export type DiscoveryReason = 'start' | 'interfaces-changed' | 'refresh' | 'periodic';

export type DiscoveryEvent =
  /** The observers are known (the coordinator's welcome) or changed: start over with a round now. */
  | { type: 'start'; servers: readonly UdpEndpoint[]; localAddresses: readonly string[]; localPort: number }
  /** The interface monitor saw a new address set (roaming): a round now. */
  | { type: 'interfaces-changed'; localAddresses: readonly string[]; localPort?: number }
  /** Someone wants fresh data; a round already in flight serves. */
  | { type: 'refresh' }
  /** A STUN packet arrived on the tunnel port. */
  | { type: 'packet'; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'tick' }
  /** No more rounds until the next start (the agent is going down, or lost its coordinator). */
  | { type: 'stop' };

export interface DiscoveryObservation extends MappingObservation {
  /** Round trip of an answer to a request that was sent once (Karn: a retransmitted one is ambiguous). */
  rttMs?: number;
}

export interface DiscoveryResult extends MappingClassification {
  natType: NatType;
  /** Our endpoints as "ip:port": reflexive first, then local addresses with the tunnel port. */
  candidates: string[];
  /** The reflexive endpoints in `candidates` come from an earlier round (this one got no answer). */
  reflexiveCarried: boolean;
  observations: DiscoveryObservation[];
  localPort: number;
  reason: DiscoveryReason;
  at: number;
}

export type DiscoveryAction =
  | { type: 'send'; to: UdpEndpoint; bytes: Uint8Array }
  /** A round ended. `changed`: candidates, mapping or port preservation differ from the previous result. */
  | { type: 'result'; result: DiscoveryResult; changed: boolean };

export interface DiscoveryOptions {
  random: RandomBytes;
  periodMs?: number;
  retransmitMs?: readonly number[];
  roundTimeoutMs?: number;
  blockedRetryMs?: number;
}

export interface EndpointDiscovery {
  handle(event: DiscoveryEvent, now: number): DiscoveryAction[];
  /** When to deliver the next `tick`; undefined when nothing is scheduled. */
  nextWakeup(): number | undefined;
  /** The latest result, if a round has ended. */
  last(): DiscoveryResult | undefined;
  /** Whether a round is in flight. */
  busy(): boolean;
}

interface Probe {
  server: UdpEndpoint;
  txid: Uint8Array;
  key: string;
  bytes: Uint8Array;
  sends: number;
  firstSentAt?: number;
  mapped?: UdpEndpoint;
  rttMs?: number;
}

interface Round { reason: DiscoveryReason; startedAt: number; probes: Probe[] }

export function createEndpointDiscovery(options: DiscoveryOptions): EndpointDiscovery {
  const periodMs = options.periodMs ?? REDISCOVER_MS;
  const schedule = options.retransmitMs ?? STUN_RETRANSMIT_MS;
  const timeoutMs = options.roundTimeoutMs ?? STUN_ROUND_TIMEOUT_MS;
  const blockedRetryMs = options.blockedRetryMs ?? BLOCKED_RETRY_MS;
  if (schedule.length === 0 || schedule.some((t, i) => t < 0 || (i > 0 && t <= schedule[i - 1]!)) || schedule.at(-1)! >= timeoutMs) {
    throw new RangeError('retransmitMs must be increasing, non-negative and end before roundTimeoutMs');
  }

  let servers: UdpEndpoint[] = [];
  let localAddresses: string[] = [];
  let localPort = 0;
  let round: Round | undefined;
  let nextRoundAt: number | undefined;
  let blockedStreak = 0;
  let lastResult: DiscoveryResult | undefined;
  /** Reflexive endpoints of the last answered round on the current network, for carrying over. */
  let lastSeen: { reflexive: UdpEndpoint[]; at: number } | undefined;

  function begin(reason: DiscoveryReason, now: number): DiscoveryAction[] {
    nextRoundAt = undefined;
    if (servers.length === 0) {
      round = undefined;
      return [];
    }
    round = {
      reason,
      startedAt: now,
      probes: servers.map((server) => {
        const txid = options.random(STUN_TXID_LEN);
        return { server, txid, key: hex(txid), bytes: encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN }), sends: 0 };
      }),
    };
    return sendDue(round, now);
  }

  function sendDue(r: Round, now: number): DiscoveryAction[] {
    const out: DiscoveryAction[] = [];
    for (const p of r.probes) {
      // Only the latest due send goes out: a tick that comes late must not burst old retransmits.
      let due = false;
      while (!p.mapped && p.sends < schedule.length && now >= r.startedAt + schedule[p.sends]!) {
        p.sends++;
        due = true;
      }
      if (!due) continue;
      p.firstSentAt ??= now;
      out.push({ type: 'send', to: p.server, bytes: p.bytes });
    }
    return out;
  }

  function finish(r: Round, now: number): DiscoveryAction {
    round = undefined;
    const observations: DiscoveryObservation[] = r.probes.map((p) => ({
      server: p.server, ...(p.mapped && { mapped: p.mapped }), ...(p.rttMs !== undefined && { rttMs: p.rttMs }),
    }));
    const c = classifyMapping(observations, { addresses: localAddresses, port: localPort });
    let reflexive = c.reflexive;
    let reflexiveCarried = false;
    if (c.answered > 0) {
      lastSeen = { reflexive: c.reflexive, at: now };
      blockedStreak = 0;
      nextRoundAt = r.startedAt + periodMs;
    } else {
      if (lastSeen && now - lastSeen.at < REFLEXIVE_KEEP_MS) {
        reflexive = lastSeen.reflexive;
        reflexiveCarried = reflexive.length > 0;
      }
      blockedStreak++;
      nextRoundAt = r.startedAt + Math.min(periodMs, blockedRetryMs * 2 ** (blockedStreak - 1));
    }
    const result: DiscoveryResult = {
      ...c, candidates: candidateEndpoints(localAddresses, localPort, reflexive), reflexiveCarried,
      observations, localPort, reason: r.reason, at: now,
    };
    const prev = lastResult;
    const changed = !prev || prev.natType !== result.natType || prev.portPreserved !== result.portPreserved ||
      prev.candidates.join(',') !== result.candidates.join(',');
    lastResult = result;
    return { type: 'result', result, changed };
  }

  function onPacket(from: UdpEndpoint, bytes: Uint8Array, now: number): DiscoveryAction[] {
    const r = round;
    if (!r) return [];
    const m = parseBindingResponse(bytes);
    if (!m) return [];
    const key = hex(m.txid);
    const p = r.probes.find((x) => x.key === key);
    if (!p || p.mapped || !sameEndpoint(p.server, from)) return [];
    p.mapped = m.mapped;
    if (p.sends === 1 && p.firstSentAt !== undefined) p.rttMs = Math.max(0, now - p.firstSentAt);
    return r.probes.every((x) => x.mapped) ? [finish(r, now)] : [];
  }

  return {
    handle(event, now) {
      switch (event.type) {
        case 'start':
          servers = [...event.servers];
          localAddresses = [...event.localAddresses];
          localPort = event.localPort;
          blockedStreak = 0;
          return begin('start', now);
        case 'interfaces-changed':
          localAddresses = [...event.localAddresses];
          if (event.localPort !== undefined) localPort = event.localPort;
          lastSeen = undefined; // a mapping seen from the old network says nothing about the new one
          blockedStreak = 0;
          return begin('interfaces-changed', now);
        case 'refresh':
          return round ? [] : begin('refresh', now);
        case 'packet':
          return onPacket(event.from, event.bytes, now);
        case 'tick': {
          const r = round;
          if (r) return now >= r.startedAt + timeoutMs ? [finish(r, now)] : sendDue(r, now);
          return nextRoundAt !== undefined && now >= nextRoundAt ? begin('periodic', now) : [];
        }
        case 'stop':
          round = undefined;
          nextRoundAt = undefined;
          return [];
      }
    },
    nextWakeup() {
      const r = round;
      if (!r) return nextRoundAt;
      let at = r.startedAt + timeoutMs;
      for (const p of r.probes) if (!p.mapped && p.sends < schedule.length) at = Math.min(at, r.startedAt + schedule[p.sends]!);
      return at;
    },
    last: () => lastResult,
    busy: () => round !== undefined,
  };
}

function hex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}
