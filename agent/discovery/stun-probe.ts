/**
 * Endpoint discovery, sans-I/O: STUN binding requests to the coordinator's
 * observer port(s), sent from the tunnel's own UDP port (the shell sends the
 * bytes on the shared socket), and the NAT's mapping behaviour from the
 * answers (RFC 4787 §4.1, measured the RFC 5780 way):
 *
 *   two observer ports saw the same mapped address:port → endpoint-independent
 *   they saw different ones                              → endpoint-dependent
 *   mapped == local address:port                         → none (no NAT)
 *   one observer only                                    → unknown (can't tell)
 *   no answer at all                                     → blocked
 *
 * Runs at start, whenever the shell says the network changed, and every
 * REDISCOVER_MS — which also refreshes the NAT mapping the tunnel uses.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { formatEndpoint, sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import { encodeBindingRequest, parseStun, STUN_BINDING_SUCCESS, STUN_KNIT_REQUEST_LEN, STUN_TXID_LEN } from '../../shared/wire/stun.js';

/** Retransmissions of each request (RFC 8489 uses 500 ms doubling; a LAN/Internet RTT budget is enough here). */
export const STUN_RETRANSMIT_MS = [0, 250, 750];
/** A probe round gives up after this long; servers that didn't answer count as unreachable. */
export const STUN_ROUND_TIMEOUT_MS = 2000;
/** NAT mappings have been seen to expire after 30 s of silence; re-probing every 20 s keeps ours and notices changes. */
export const REDISCOVER_MS = 20_000;

export interface DiscoveryResult {
  reflexive: UdpEndpoint[]; // distinct mapped addresses seen
  natType: NatType;
  portPreserved?: boolean;
  answered: number;
  asked: number;
  at: number;
}

export type DiscoveryAction =
  | { type: 'send'; to: UdpEndpoint; bytes: Uint8Array }
  | { type: 'result'; result: DiscoveryResult };

interface Probe { server: UdpEndpoint; txid: Uint8Array; txHex: string; mapped?: UdpEndpoint; sends: number }

export class StunProbe {
  private servers: UdpEndpoint[] = [];
  private probes: Probe[] = [];
  private roundStart?: number;
  private nextRoundAt?: number;
  private localAddresses: string[] = [];
  last?: DiscoveryResult;

  constructor(private readonly localPort: () => number, private readonly random: RandomBytes) {}

  /** Sets the observer addresses (from the coordinator's welcome) and the host's own addresses. */
  configure(servers: UdpEndpoint[], localAddresses: string[]): void {
    this.servers = servers;
    this.localAddresses = localAddresses;
  }

  /** Starts a probe round now (start, network change, or a caller that wants fresh data). */
  trigger(now: number): DiscoveryAction[] {
    if (this.servers.length === 0) return [];
    this.roundStart = now;
    this.nextRoundAt = undefined;
    this.probes = this.servers.map((server) => {
      const txid = this.random(STUN_TXID_LEN);
      return { server, txid, txHex: Buffer.from(txid).toString('hex'), sends: 0 };
    });
    return this.tick(now);
  }

  /** Consumes a STUN packet that arrived on the tunnel port; returns actions (maybe the result). */
  packet(from: UdpEndpoint, bytes: Uint8Array, now: number): DiscoveryAction[] {
    const m = parseStun(bytes);
    if (!m || m.type !== STUN_BINDING_SUCCESS || !m.mapped || this.roundStart === undefined) return [];
    const txHex = Buffer.from(m.txid).toString('hex');
    const p = this.probes.find((x) => x.txHex === txHex && sameEndpoint(x.server, from));
    if (!p || p.mapped) return [];
    p.mapped = m.mapped;
    return this.probes.every((x) => x.mapped) ? [this.finish(now)] : [];
  }

  tick(now: number): DiscoveryAction[] {
    const out: DiscoveryAction[] = [];
    if (this.roundStart === undefined) {
      if (this.nextRoundAt !== undefined && now >= this.nextRoundAt) return this.trigger(now);
      return out;
    }
    if (now - this.roundStart >= STUN_ROUND_TIMEOUT_MS) return [this.finish(now)];
    for (const p of this.probes) {
      while (!p.mapped && p.sends < STUN_RETRANSMIT_MS.length && now >= this.roundStart + STUN_RETRANSMIT_MS[p.sends]!) {
        p.sends++;
        out.push({ type: 'send', to: p.server, bytes: encodeBindingRequest(p.txid, { padTo: STUN_KNIT_REQUEST_LEN }) });
      }
    }
    return out;
  }

  nextWakeup(): number | undefined {
    if (this.roundStart === undefined) return this.nextRoundAt;
    const pending = this.probes.filter((p) => !p.mapped && p.sends < STUN_RETRANSMIT_MS.length).map((p) => this.roundStart! + STUN_RETRANSMIT_MS[p.sends]!);
    return Math.min(this.roundStart + STUN_ROUND_TIMEOUT_MS, ...pending);
  }

  private finish(now: number): DiscoveryAction {
    const answered = this.probes.filter((p) => p.mapped);
    const reflexive: UdpEndpoint[] = [];
    for (const p of answered) if (!reflexive.some((r) => sameEndpoint(r, p.mapped!))) reflexive.push(p.mapped!);
    let natType: NatType;
    const first = reflexive[0];
    if (answered.length === 0) natType = 'blocked';
    else if (reflexive.length > 1) natType = 'endpoint-dependent';
    else if (first && first.port === this.localPort() && this.localAddresses.includes(first.address)) natType = 'none';
    else natType = answered.length >= 2 ? 'endpoint-independent' : 'unknown';
    const result: DiscoveryResult = {
      reflexive, natType, answered: answered.length, asked: this.probes.length, at: now,
      portPreserved: first ? first.port === this.localPort() : undefined,
    };
    this.last = result;
    this.roundStart = undefined;
    this.probes = [];
    this.nextRoundAt = now + REDISCOVER_MS;
    return { type: 'result', result };
  }
}

/** Our candidate list: each local address with the tunnel port, then the reflexive ones. */
export function candidateEndpoints(localAddresses: string[], port: number, reflexive: UdpEndpoint[], max = 16): string[] {
  const out: string[] = [];
  for (const ep of [...reflexive, ...localAddresses.map((address) => ({ address, port }))]) {
    const text = formatEndpoint(ep);
    if (!out.includes(text)) out.push(text);
  }
  return out.slice(0, max);
}
