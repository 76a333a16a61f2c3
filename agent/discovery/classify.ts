/**
 * What a round of STUN answers says about our NAT, pure: the reflexive
 * endpoints, the mapping behaviour in RFC 4787 §4.1 terms (measured the RFC
 * 5780 §4.3 way, by asking two observers), port preservation, and the
 * candidate list the agent advertises. Used by the discovery core and by
 * `knit netcheck`'s report.
 *
 *   nobody answered                                   → blocked
 *   two observers saw different mappings              → endpoint-dependent
 *   every mapping equals a local address + our port   → none (no NAT)
 *   two observers saw the same mapping                → endpoint-independent
 *   only one observer answered (or the answers can't
 *   be compared: one IPv4, one IPv6)                  → unknown
 *
 * Two observers on one address, different ports, tell endpoint-independent
 * from address-and-port-dependent mapping, but an address-dependent NAT looks
 * endpoint-independent to them; `comparedAcross` says which kind of pair was
 * compared so a report can say so.
 */
import { isIPv4 } from 'node:net';
import { formatEndpoint, normalizeIp, sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { MAX_ENDPOINTS, type NatType } from '../../shared/wire/control.js';

/** One observer asked in a round, and the mapping it reported (undefined: no answer). */
export interface MappingObservation {
  server: UdpEndpoint;
  mapped?: UdpEndpoint;
}

export interface MappingClassification {
  natType: NatType;
  /** Distinct mapped endpoints, in the order of the observers that reported them. */
  reflexive: UdpEndpoint[];
  /** Some mapping kept our local port (RFC 4787 §4.1 "port preservation"); undefined without answers. */
  portPreserved?: boolean;
  /** What differed between the observers compared: their ports only, or their addresses. */
  comparedAcross?: 'ports' | 'addresses';
  answered: number;
  asked: number;
}

export function classifyMapping(observations: readonly MappingObservation[], local: { addresses: readonly string[]; port: number }): MappingClassification {
  const answered = observations.filter((o): o is Required<MappingObservation> => o.mapped !== undefined);
  const reflexive: UdpEndpoint[] = [];
  for (const o of answered) if (!reflexive.some((r) => sameEndpoint(r, o.mapped))) reflexive.push(o.mapped);
  const base = { reflexive, answered: answered.length, asked: observations.length };
  if (answered.length === 0) return { ...base, natType: 'blocked' };
  const portPreserved = answered.some((o) => o.mapped.port === local.port);

  // Pairs of distinct observers in one address family: only those are comparable.
  let same: 'ports' | 'addresses' | undefined;
  for (let i = 0; i < answered.length; i++) {
    for (let j = i + 1; j < answered.length; j++) {
      const a = answered[i]!;
      const b = answered[j]!;
      if (sameEndpoint(a.server, b.server) || family(a.server.address) !== family(b.server.address)) continue;
      const across = normalizeIp(a.server.address) === normalizeIp(b.server.address) ? 'ports' : 'addresses';
      if (!sameEndpoint(a.mapped, b.mapped)) return { ...base, natType: 'endpoint-dependent', portPreserved, comparedAcross: across };
      // A pair of different addresses is the stronger evidence of endpoint independence.
      if (same !== 'addresses') same = across;
    }
  }
  const locals = new Set(local.addresses.map(normalizeIp));
  if (answered.every((o) => o.mapped.port === local.port && locals.has(normalizeIp(o.mapped.address)))) {
    return { ...base, natType: 'none', portPreserved };
  }
  if (same) return { ...base, natType: 'endpoint-independent', portPreserved, comparedAcross: same };
  return { ...base, natType: 'unknown', portPreserved };
}

function family(address: string): 4 | 6 {
  return isIPv4(normalizeIp(address)) ? 4 : 6;
}

/**
 * Our candidate list as "ip:port" text: the reflexive endpoints first (they
 * are what peers outside our LAN can use, and must survive the cap), then
 * each local address with the tunnel port. Deduplicated, at most `max`
 * (the coordinator refuses more than MAX_ENDPOINTS).
 */
export function candidateEndpoints(localAddresses: readonly string[], port: number, reflexive: readonly UdpEndpoint[], max = MAX_ENDPOINTS): string[] {
  const out: string[] = [];
  for (const ep of [...reflexive, ...localAddresses.map((address) => ({ address, port }))]) {
    const text = formatEndpoint({ address: normalizeIp(ep.address), port: ep.port });
    if (!out.includes(text)) out.push(text);
  }
  return out.slice(0, max);
}
