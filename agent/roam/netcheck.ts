/**
 * `knit netcheck`'s report, pure: turns what the running agent answers on its
 * local API (a fresh discovery round from the tunnel port, plus the tunnel
 * port, the selected addresses and the observers) into a JSON document and
 * the lines a person reads: is UDP reachable, what is our reflexive address,
 * how does the NAT map (RFC 4787 terms), is the port preserved.
 *
 * The input crossed a socket as JSON, so every field is read defensively: an
 * older agent's answer gives a shorter report, never an exception.
 */
import { classifyMapping, type MappingObservation } from '../discovery/classify.js';
import { formatEndpoint, parseEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { NAT_TYPES, type NatType } from '../../shared/wire/control.js';

/** What `POST /v1/netcheck` on the agent's local API returns. */
export interface NetcheckInput {
  result?: unknown;
  servers?: unknown;
  localAddresses?: unknown;
  port?: unknown;
}

export interface NetcheckReport {
  tunnelPort: number | null;
  localAddresses: string[];
  servers: string[];
  /** null: not tested (no observer known yet: the agent has not reached the coordinator). */
  udpReachable: boolean | null;
  answered: number;
  asked: number;
  reflexive: string[];
  mapping: NatType | null;
  /** The mapping in words, with what the measurement can and cannot tell. */
  mappingDetail: string;
  portPreserved: boolean | null;
  candidates: string[];
  observations: { server: string; mapped: string | null; rttMs: number | null }[];
}

export function netcheckReport(input: NetcheckInput): NetcheckReport {
  const localAddresses = strings(input.localAddresses);
  const tunnelPort = isPort(input.port) ? input.port : null;
  const r = isObject(input.result) ? input.result : undefined;
  const observations = r && Array.isArray(r.observations) ? r.observations.flatMap(observation) : [];
  const base = { tunnelPort, localAddresses, servers: strings(input.servers), candidates: r ? strings(r.candidates) : [] };
  if (!r) {
    return { ...base, udpReachable: null, answered: 0, asked: 0, reflexive: [], mapping: null, mappingDetail: 'not measured: no STUN observer known yet', portPreserved: null, observations: [] };
  }
  // Re-derive from the raw observations when they are there: the report then explains exactly what was compared.
  const c = observations.length > 0 && tunnelPort !== null ? classifyMapping(observations, { addresses: localAddresses, port: tunnelPort }) : undefined;
  const mapping = c?.natType ?? (NAT_TYPES.includes(r.natType as NatType) ? (r.natType as NatType) : null);
  const answered = c?.answered ?? (typeof r.answered === 'number' ? r.answered : 0);
  const asked = c?.asked ?? (typeof r.asked === 'number' ? r.asked : 0);
  const reflexive = c ? c.reflexive.map(formatEndpoint) : Array.isArray(r.reflexive) ? r.reflexive.flatMap((e) => (endpoint(e) ? [formatEndpoint(endpoint(e)!)] : [])) : [];
  const portPreserved = c ? c.portPreserved ?? null : typeof r.portPreserved === 'boolean' ? r.portPreserved : null;
  return {
    ...base,
    udpReachable: asked > 0 ? answered > 0 : null,
    answered, asked, reflexive, mapping, portPreserved,
    mappingDetail: describeMapping(mapping, c?.comparedAcross ?? (r.comparedAcross === 'ports' || r.comparedAcross === 'addresses' ? r.comparedAcross : undefined)),
    observations: observations.map((o) => ({
      server: formatEndpoint(o.server), mapped: o.mapped ? formatEndpoint(o.mapped) : null, rttMs: o.rttMs ?? null,
    })),
  };
}

/** The mapping behaviour in RFC 4787 §4.1 words, and what it means for hole punching. */
export function describeMapping(mapping: NatType | null, comparedAcross?: 'ports' | 'addresses'): string {
  switch (mapping) {
    case 'none': return 'no NAT: the tunnel port is reachable as it is';
    case 'endpoint-independent':
      return comparedAcross === 'ports'
        ? 'endpoint-independent mapping (RFC 4787 EIM) across two ports of one observer address (an address-dependent NAT would look the same): hole punching works'
        : 'endpoint-independent mapping (RFC 4787 EIM): hole punching works';
    case 'endpoint-dependent':
      return comparedAcross === 'ports'
        ? 'address-and-port-dependent mapping (symmetric NAT): a new public port per destination; direct paths need an easy NAT on the other side'
        : 'endpoint-dependent mapping (symmetric NAT): a new public port per destination; direct paths need an easy NAT on the other side';
    case 'unknown': return 'unknown: only one STUN port answered (the coordinator offers two by default: it could not bind the second, was started with --stun2 off, or UDP to it is dropped; knit doctor checks each)';
    case 'blocked': return 'no STUN answer: UDP to the coordinator seems blocked; peers can only be reached by relay';
    default: return 'not measured';
  }
}

/** The human lines, one fact per line, aligned. */
export function formatNetcheck(report: NetcheckReport): string[] {
  const yesNo = (v: boolean | null) => (v === null ? '-' : v ? 'yes' : 'no');
  const lines = [
    `tunnel port     ${report.tunnelPort ?? '-'}`,
    `local addresses ${report.localAddresses.join(' ') || '(none selected)'}`,
    `STUN servers    ${report.servers.join(' ') || '(not known yet: the agent has not reached the coordinator)'}`,
    `UDP             ${report.udpReachable === null ? 'not tested' : report.udpReachable ? `yes (${report.answered}/${report.asked} observers answered)` : `no answer from ${report.asked} observer(s)`}`,
    `reflexive       ${report.reflexive.join(' ') || '-'}`,
    `mapping         ${report.mappingDetail}`,
    `port preserved  ${yesNo(report.portPreserved)}`,
  ];
  if (report.candidates.length > 0) lines.push(`candidates      ${report.candidates.join(' ')}`);
  for (const o of report.observations) {
    lines.push(`  ${o.server.padEnd(22)} ${o.mapped ? `saw us as ${o.mapped}${o.rttMs !== null ? ` in ${o.rttMs} ms` : ''}` : 'no answer'}`);
  }
  return lines;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPort(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** An endpoint as the agent's JSON carries it ({address, port}) or as text ("ip:port"). */
function endpoint(v: unknown): UdpEndpoint | undefined {
  if (typeof v === 'string') return parseEndpoint(v);
  if (isObject(v) && typeof v.address === 'string' && isPort(v.port)) return parseEndpoint(formatEndpoint({ address: v.address, port: v.port }));
  return undefined;
}

function observation(v: unknown): (MappingObservation & { rttMs?: number })[] {
  if (!isObject(v)) return [];
  const server = endpoint(v.server);
  if (!server) return [];
  const mapped = v.mapped === undefined ? undefined : endpoint(v.mapped);
  const rttMs = typeof v.rttMs === 'number' && Number.isFinite(v.rttMs) ? v.rttMs : undefined;
  return [{ server, ...(mapped && { mapped }), ...(rttMs !== undefined && { rttMs }) }];
}
