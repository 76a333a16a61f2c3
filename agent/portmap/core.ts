/**
 * Port mapping, sans-I/O: ask the gateway for a UDP mapping to the tunnel
 * port, keep it, prove it works, give it back. `handle(event, now)` returns
 * actions; `nextWakeup()` says when to deliver a `tick`. The shell (index.ts)
 * owns the sockets, HTTP and the timer. docs/port-mapping.md.
 *
 * Flow:
 *   start(gateway, our LAN address, tunnel port)
 *     → PCP MAP (RFC 6887)            to gateway:5351  — no answer / error →
 *     → NAT-PMP address + map (6886)  to gateway:5351  — no answer / error →
 *     → UPnP-IGD: SSDP M-SEARCH on the LAN, GET the description, SOAP
 *       GetExternalIPAddress + AddPortMapping                — failed →
 *     → wait (30 s, doubling to 5 min) and start over
 *   mapped (external ip:port, lifetime L)
 *     → verify: a STUN Binding request to the coordinator's observer from the
 *       mapper's own socket with RESPONSE-PORT = the external port. The answer
 *       goes to external-ip:external-port, i.e. through the mapping, and must
 *       arrive on the tunnel port and name the mapped address as our source
 *       address. Only then is the mapping an endpoint candidate.
 *     → renew at L/2 (retrying until L), re-verify when the mapping moved;
 *       a server whose Epoch went wrong lost its state: map again at once
 *   network change → forget the mapping, start over on the new gateway
 *   stop → delete the mapping (lifetime 0 / DeletePortMapping), then `stopped`
 *
 * Every response is checked against what is outstanding (source, sizes,
 * opcode, PCP nonce, internal port, epoch); anything else is dropped and
 * counted.
 */
import { isIPv4 } from 'node:net';
import type { RandomBytes } from '../../shared/clock.js';
import { formatEndpoint, normalizeIp, sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { encodeBindingRequest, isStunPacket, parseBindingResponse, STUN_KNIT_REQUEST_LEN, STUN_TXID_LEN } from '../../shared/wire/stun.js';
import {
  encodeNatpmpExternalAddressRequest, encodeNatpmpMapRequest, NATPMP_RESULT, NATPMP_SERVER_PORT, natpmpResultName, parseNatpmpResponse,
} from './natpmp.js';
import {
  encodePcpMapRequest, epochIsValid, IPPROTO_UDP, parsePcpResponse, PCP_NONCE_LEN, PCP_OPCODE_ANNOUNCE, PCP_RESULT, PCP_SERVER_PORT, pcpResultName,
} from './pcp.js';
import {
  addPortMappingRequest, deletePortMappingRequest, encodeSsdpSearch, getExternalIpRequest, parseDeviceDescription, parseSoapResponse,
  parseSsdpResponse, SSDP_MULTICAST_ADDRESS, SSDP_PORT, SSDP_SEARCH_TARGETS, UPNP_ERROR, type SoapRequest,
} from './upnp.js';

export type PortMapProtocol = 'pcp' | 'natpmp' | 'upnp';
export const PORTMAP_PROTOCOLS: readonly PortMapProtocol[] = ['pcp', 'natpmp', 'upnp'];

/**
 * Requested lifetime. Short, so a mapping of a crashed agent (or one whose
 * delete was lost) is gone within two minutes; renewing at half-life costs
 * one small datagram a minute.
 */
export const PORTMAP_LIFETIME_S = 120;
/**
 * When a request is (re)sent, relative to the first send. RFC 6887 §8.1.1
 * starts at 3 s and RFC 6886 §3.1 at 250 ms; the gateway is one LAN hop away
 * and answers in milliseconds, and a silent one should cost seconds, not a
 * minute, before the next protocol is tried.
 */
export const PORTMAP_RETRANSMIT_MS: readonly number[] = [0, 250, 750];
/** A request nobody answered within this long counts as "this protocol is not spoken here". */
export const PORTMAP_REQUEST_TIMEOUT_MS = 2000;
/** An HTTP exchange with the IGD (the shell also aborts at PORTMAP_HTTP_TIMEOUT_MS - 1 s). */
export const PORTMAP_HTTP_TIMEOUT_MS = 5000;
/** After every protocol failed: try again this soon, doubling up to PORTMAP_RETRY_MAX_MS (a gateway may enable UPnP later). */
export const PORTMAP_RETRY_MS = 30_000;
export const PORTMAP_RETRY_MAX_MS = 300_000;
/** Stop waits this long for the gateway to confirm a delete before reporting `stopped` anyway. */
export const PORTMAP_STOP_TIMEOUT_MS = 1000;
/** UPnP: other external ports tried after ConflictInMappingEntry on the tunnel port. */
const UPNP_CONFLICT_TRIES = 3;
/** Lifetimes shorter than this are treated as this for scheduling (no renewal storms on a silly gateway). */
const MIN_RENEW_INTERVAL_MS = 1000;

export interface PortMapperOptions {
  random: RandomBytes;
  /** Which protocols to try, in order (default PCP, NAT-PMP, UPnP). Tests force one. */
  protocols?: readonly PortMapProtocol[];
  lifetimeS?: number;
  retransmitMs?: readonly number[];
  requestTimeoutMs?: number;
  /** The UPnP mapping's description, seen in the router's UI. */
  description?: string;
}

export type PortMapEvent =
  /** Begin (or begin again) on this network. No gateway: nothing to ask until a network change names one. */
  | { type: 'start'; gateway?: string; localAddress?: string; internalPort: number }
  | { type: 'network-changed'; gateway?: string; localAddress?: string }
  /** The STUN observers that can verify a mapping (the coordinator's). */
  | { type: 'observers'; servers: readonly UdpEndpoint[] }
  /** A datagram on the mapper's socket (PCP/NAT-PMP answers, or a STUN answer that ignored RESPONSE-PORT). */
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array }
  /** A datagram on the SSDP socket. */
  | { type: 'ssdp'; from: UdpEndpoint; bytes: Uint8Array }
  /** A STUN packet that arrived on the tunnel port (maybe the verification echo). */
  | { type: 'tunnel-stun'; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'http-response'; id: number; status: number; body: string }
  | { type: 'http-error'; id: number; error: string }
  | { type: 'tick' }
  | { type: 'stop' };

export interface PortMapping {
  protocol: PortMapProtocol;
  /** The mapped address as "ip:port": the endpoint candidate. */
  external: string;
  externalAddress: string;
  externalPort: number;
  internalPort: number;
  lifetimeS: number;
  /** `now` scale (the caller's clock). */
  expiresAt: number;
}

export type PortMapAction =
  | { type: 'send'; to: UdpEndpoint; bytes: Uint8Array }
  | { type: 'ssdp-send'; to: UdpEndpoint; bytes: Uint8Array }
  | { type: 'http'; id: number; method: 'GET' | 'POST'; url: string; headers: Record<string, string>; body?: string }
  /** The verified mapping (the endpoint candidate) appeared, moved or went away. */
  | { type: 'candidate'; mapping: PortMapping | undefined }
  /** Something worth a log line. */
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; msg: string; fields?: Record<string, unknown> }
  /** After `stop`: the delete is done (or given up); the shell may close its sockets. */
  | { type: 'stopped' };

export type PortMapPhase = 'idle' | 'probing' | 'mapped' | 'waiting' | 'stopping' | 'stopped';

export interface PortMapStatus {
  phase: PortMapPhase;
  gateway?: string;
  /** The protocol being tried (probing) or holding the mapping. */
  protocol?: PortMapProtocol;
  mapping?: PortMapping;
  verified: boolean;
  /** Why the mapping is not (yet) a candidate, or why the last attempt failed. */
  detail?: string;
  /** Per protocol, why it failed last time. */
  errors: Partial<Record<PortMapProtocol, string>>;
}

export interface PortMapCounters {
  requestsSent: number;
  mappingsObtained: number;
  renewals: number;
  verified: number;
  verifyFailed: number;
  /** Datagrams or answers that were malformed, unexpected or from the wrong source. */
  dropped: number;
  epochResets: number;
}

export interface PortMapper {
  handle(event: PortMapEvent, now: number): PortMapAction[];
  nextWakeup(): number | undefined;
  status(): PortMapStatus;
  readonly counters: PortMapCounters;
}

/** What the mapper is waiting for now. */
type Pending =
  | { kind: 'pcp'; bytes: Uint8Array; sends: number; startedAt: number }
  | { kind: 'natpmp'; extBytes?: Uint8Array; mapBytes: Uint8Array; sends: number; startedAt: number; ext?: string; map?: { externalPort: number; lifetimeS: number } }
  | { kind: 'ssdp'; sends: number; startedAt: number }
  | { kind: 'http'; id: number; step: 'describe' | 'external-ip' | 'add' | 'delete'; startedAt: number };

type Purpose = 'map' | 'renew' | 'delete';

interface Held {
  protocol: PortMapProtocol;
  externalAddress: string;
  externalPort: number;
  lifetimeS: number;
  obtainedAt: number;
  expiresAt: number;
  renewAt: number;
}

interface Verify { txids: Map<string, UdpEndpoint>; sends: number; startedAt: number; bytes: Map<string, Uint8Array> }

export function createPortMapper(options: PortMapperOptions): PortMapper {
  const protocols = options.protocols ?? PORTMAP_PROTOCOLS;
  if (protocols.length === 0 || protocols.some((p) => !PORTMAP_PROTOCOLS.includes(p))) throw new RangeError('protocols must be a non-empty list of pcp, natpmp, upnp');
  const lifetimeS = options.lifetimeS ?? PORTMAP_LIFETIME_S;
  if (!Number.isInteger(lifetimeS) || lifetimeS < 2 || lifetimeS > 86_400) throw new RangeError('lifetimeS must be an integer in 2..86400');
  const schedule = options.retransmitMs ?? PORTMAP_RETRANSMIT_MS;
  const timeoutMs = options.requestTimeoutMs ?? PORTMAP_REQUEST_TIMEOUT_MS;
  if (schedule.length === 0 || schedule[0] !== 0 || schedule.some((t, i) => i > 0 && t <= schedule[i - 1]!) || schedule.at(-1)! >= timeoutMs) {
    throw new RangeError('retransmitMs must start at 0, increase, and end before requestTimeoutMs');
  }
  const description = options.description ?? 'knit';
  const random = options.random;

  const counters: PortMapCounters = { requestsSent: 0, mappingsObtained: 0, renewals: 0, verified: 0, verifyFailed: 0, dropped: 0, epochResets: 0 };
  let phase: PortMapPhase = 'idle';
  let gateway: string | undefined;
  let localAddress: string | undefined;
  let internalPort = 0;
  let observers: UdpEndpoint[] = [];
  let protoIndex = 0;
  let pending: Pending | undefined;
  let purpose: Purpose = 'map';
  let held: Held | undefined;
  let verified = false;
  let verify: Verify | undefined;
  let detail: string | undefined;
  const errors: Partial<Record<PortMapProtocol, string>> = {};
  let retryAt: number | undefined;
  let retryStreak = 0;
  let stopDeadline: number | undefined;
  let epoch: { epochS: number; atMs: number } | undefined;
  let httpSeq = 0;
  // Per-protocol context that lives across steps and renewals.
  let pcpNonce: Uint8Array | undefined;
  let upnp: { location?: URL; serviceType?: string; controlUrl?: string; externalAddress?: string; externalPort: number; leaseS: number; conflicts: number } | undefined;

  const protocol = () => protocols[protoIndex]!;
  const gw = (port: number): UdpEndpoint => ({ address: gateway!, port });
  const log = (level: 'info' | 'warn' | 'debug', msg: string, fields?: Record<string, unknown>): PortMapAction => ({ type: 'log', level, msg, fields });

  function mappingOf(h: Held): PortMapping {
    return {
      protocol: h.protocol, external: formatEndpoint({ address: h.externalAddress, port: h.externalPort }), externalAddress: h.externalAddress,
      externalPort: h.externalPort, internalPort, lifetimeS: h.lifetimeS, expiresAt: h.expiresAt,
    };
  }

  /** Starts trying protocols from the first (a fresh attempt on this network). */
  function beginProbing(now: number): PortMapAction[] {
    retryAt = undefined;
    held = undefined;
    verified = false;
    verify = undefined;
    epoch = undefined;
    upnp = undefined;
    pcpNonce = undefined;
    if (!gateway || !localAddress || internalPort === 0) {
      phase = 'idle';
      pending = undefined;
      detail = gateway ? 'no local address towards the gateway' : 'no default gateway';
      return [];
    }
    if (!isIPv4(gateway) || !isIPv4(localAddress)) {
      phase = 'idle';
      pending = undefined;
      detail = 'port mapping needs an IPv4 default gateway';
      return [];
    }
    phase = 'probing';
    protoIndex = 0;
    return tryProtocol(now);
  }

  function tryProtocol(now: number): PortMapAction[] {
    purpose = 'map';
    detail = undefined;
    switch (protocol()) {
      case 'pcp': {
        pcpNonce = random(PCP_NONCE_LEN);
        return startPcp(lifetimeS, internalPort, now);
      }
      case 'natpmp':
        return startNatpmp(lifetimeS, internalPort, true, now);
      case 'upnp':
        upnp = { externalPort: internalPort, leaseS: lifetimeS, conflicts: 0 };
        pending = { kind: 'ssdp', sends: 0, startedAt: now };
        return sendDue(now);
    }
  }

  function startPcp(life: number, suggestedPort: number, now: number): PortMapAction[] {
    const bytes = encodePcpMapRequest({
      nonce: pcpNonce!, lifetimeS: life, clientAddress: localAddress!, internalPort,
      suggestedExternalPort: suggestedPort, suggestedExternalAddress: held?.externalAddress ?? '0.0.0.0',
    });
    pending = { kind: 'pcp', bytes, sends: 0, startedAt: now };
    return sendDue(now);
  }

  function startNatpmp(life: number, suggestedPort: number, withAddress: boolean, now: number): PortMapAction[] {
    pending = {
      kind: 'natpmp', mapBytes: encodeNatpmpMapRequest(internalPort, suggestedPort, life), sends: 0, startedAt: now,
      ...(withAddress ? { extBytes: encodeNatpmpExternalAddressRequest() } : {}),
    };
    return sendDue(now);
  }

  function http(step: 'describe' | 'external-ip' | 'add' | 'delete', url: string, req: SoapRequest | undefined, now: number): PortMapAction[] {
    const id = ++httpSeq;
    pending = { kind: 'http', id, step, startedAt: now };
    counters.requestsSent++;
    return [req
      ? { type: 'http', id, method: 'POST', url, headers: req.headers, body: req.body }
      : { type: 'http', id, method: 'GET', url, headers: {} }];
  }

  /** Sends whatever datagrams are due on the retransmit schedule (only the latest due send: a late tick must not burst). */
  function sendDue(now: number): PortMapAction[] {
    const p = pending;
    if (!p || p.kind === 'http') return [];
    let due = false;
    while (p.sends < schedule.length && now >= p.startedAt + schedule[p.sends]!) {
      p.sends++;
      due = true;
    }
    if (!due) return [];
    const out: PortMapAction[] = [];
    if (p.kind === 'pcp') out.push({ type: 'send', to: gw(PCP_SERVER_PORT), bytes: p.bytes });
    else if (p.kind === 'natpmp') {
      if (p.extBytes && p.ext === undefined) out.push({ type: 'send', to: gw(NATPMP_SERVER_PORT), bytes: p.extBytes });
      if (!p.map) out.push({ type: 'send', to: gw(NATPMP_SERVER_PORT), bytes: p.mapBytes });
    } else {
      for (const st of SSDP_SEARCH_TARGETS) out.push({ type: 'ssdp-send', to: { address: SSDP_MULTICAST_ADDRESS, port: SSDP_PORT }, bytes: encodeSsdpSearch(st) });
    }
    counters.requestsSent += out.length;
    return out;
  }

  /** The current protocol failed (`why`): the next one, or wait and start over. */
  function protocolFailed(why: string, now: number): PortMapAction[] {
    pending = undefined;
    const p = protocol();
    errors[p] = why;
    const out: PortMapAction[] = [log('debug', 'port mapping: protocol failed', { protocol: p, why })];
    if (protoIndex + 1 < protocols.length) {
      protoIndex++;
      return [...out, ...tryProtocol(now)];
    }
    phase = 'waiting';
    retryAt = now + Math.min(PORTMAP_RETRY_MAX_MS, PORTMAP_RETRY_MS * 2 ** retryStreak);
    retryStreak++;
    detail = `no gateway port mapping (${protocols.map((x) => `${x}: ${errors[x] ?? 'not tried'}`).join('; ')})`;
    return [...out, log('info', 'port mapping unavailable', { gateway, errors: { ...errors } })];
  }

  /** The gateway granted (or renewed) a mapping. */
  function granted(externalAddress: string, externalPort: number, grantedS: number, now: number): PortMapAction[] {
    pending = undefined;
    const p = protocol();
    const ext = normalizeIp(externalAddress);
    const moved = !held || held.externalAddress !== ext || held.externalPort !== externalPort;
    const renewed = held !== undefined;
    const lifeMs = grantedS * 1000;
    held = {
      protocol: p, externalAddress: ext, externalPort, lifetimeS: grantedS, obtainedAt: now, expiresAt: now + lifeMs,
      renewAt: now + Math.max(MIN_RENEW_INTERVAL_MS, lifeMs / 2),
    };
    phase = 'mapped';
    purpose = 'map';
    retryStreak = 0;
    delete errors[p];
    const out: PortMapAction[] = [];
    if (renewed) counters.renewals++;
    else counters.mappingsObtained++;
    if (!renewed || moved) out.push(log('info', renewed ? 'port mapping moved' : 'port mapping obtained', { protocol: p, external: formatEndpoint({ address: ext, port: externalPort }), lifetimeS: grantedS, gateway }));
    if (moved) {
      if (verified) out.push({ type: 'candidate', mapping: undefined });
      verified = false;
      out.push(...startVerify(now));
    } else if (verified) {
      out.push({ type: 'candidate', mapping: mappingOf(held) }); // same candidate, new expiry
    } else if (!verify) {
      out.push(...startVerify(now)); // not proven yet: every renewal tries again
    }
    return out;
  }

  /** The mapping is gone (expired, or the gateway refused a renewal): withdraw it and start over. */
  function lost(why: string, now: number): PortMapAction[] {
    const out: PortMapAction[] = [log('warn', 'port mapping lost', { why, gateway })];
    if (verified) out.push({ type: 'candidate', mapping: undefined });
    return [...out, ...beginProbing(now)];
  }

  function startVerify(now: number): PortMapAction[] {
    if (!held) return [];
    if (observers.length === 0) {
      verify = undefined;
      detail = 'waiting for the coordinator\'s STUN observer to verify the mapping';
      return [];
    }
    verify = { txids: new Map(), bytes: new Map(), sends: 0, startedAt: now };
    for (const server of observers) {
      const txid = random(STUN_TXID_LEN);
      const key = hex(txid);
      verify.txids.set(key, server);
      verify.bytes.set(key, encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN, responsePort: held.externalPort }));
    }
    detail = 'verifying the mapping from outside';
    return verifySendDue(now);
  }

  function verifySendDue(now: number): PortMapAction[] {
    const v = verify;
    if (!v) return [];
    let due = false;
    while (v.sends < schedule.length && now >= v.startedAt + schedule[v.sends]!) {
      v.sends++;
      due = true;
    }
    if (!due) return [];
    const out: PortMapAction[] = [];
    for (const [key, server] of v.txids) out.push({ type: 'send', to: server, bytes: v.bytes.get(key)! });
    counters.requestsSent += out.length;
    return out;
  }

  function verifyFailed(why: string): PortMapAction[] {
    verify = undefined;
    counters.verifyFailed++;
    detail = `not used as a candidate: ${why}`;
    return [log('warn', 'port mapping not verified', { why, external: held && formatEndpoint({ address: held.externalAddress, port: held.externalPort }) })];
  }

  /** A STUN answer: on the tunnel port (`viaMapping`) it is the echo; on the mapper's socket the observer ignored RESPONSE-PORT. */
  function onStun(bytes: Uint8Array, from: UdpEndpoint, viaMapping: boolean): PortMapAction[] {
    const v = verify;
    const m = parseBindingResponse(bytes);
    if (!v || !m || !held) return []; // not ours (discovery's answers come this way too): not counted
    const server = v.txids.get(hex(m.txid));
    if (!server) return [];
    if (!sameEndpoint(server, from)) {
      counters.dropped++;
      return [];
    }
    if (!viaMapping) return verifyFailed('the STUN observer ignored RESPONSE-PORT (an older coordinator?)');
    if (normalizeIp(m.mapped.address) !== held.externalAddress) {
      return verifyFailed(`the observer sees us at ${m.mapped.address}, not at the mapped ${held.externalAddress} (another NAT in front of the gateway?)`);
    }
    verify = undefined;
    verified = true;
    counters.verified++;
    detail = undefined;
    return [
      log('info', 'port mapping verified', { protocol: held.protocol, external: formatEndpoint({ address: held.externalAddress, port: held.externalPort }) }),
      { type: 'candidate', mapping: mappingOf(held) },
    ];
  }

  /** Checks a PCP/NAT-PMP Epoch; a server that lost its state loses our mapping too (RFC 6887 §8.5, RFC 6886 §3.6). */
  function checkEpoch(epochS: number, now: number): boolean {
    const ok = epochIsValid(epoch, epochS, now);
    epoch = { epochS, atMs: now };
    if (!ok) counters.epochResets++;
    return ok;
  }

  function renewNow(now: number): PortMapAction[] {
    if (!held) return [];
    purpose = 'renew';
    switch (held.protocol) {
      case 'pcp': return startPcp(lifetimeS, held.externalPort, now);
      case 'natpmp': return startNatpmp(lifetimeS, held.externalPort, false, now);
      case 'upnp': return http('add', upnp!.controlUrl!, addPortMappingRequest(upnp!.serviceType!, {
        externalPort: held.externalPort, internalPort, internalClient: localAddress!, leaseS: upnp!.leaseS, description,
      }), now);
    }
  }

  function onUdp(from: UdpEndpoint, bytes: Uint8Array, now: number): PortMapAction[] {
    if (isStunPacket(bytes)) return onStun(bytes, from, false);
    if (!gateway || from.address !== gateway || from.port !== PCP_SERVER_PORT) {
      counters.dropped++;
      return [];
    }
    const kind = held && !pending ? held.protocol : pending?.kind;
    if (kind === 'pcp') return onPcp(bytes, now);
    if (kind === 'natpmp') return onNatpmp(bytes, now);
    counters.dropped++;
    return [];
  }

  function onPcp(bytes: Uint8Array, now: number): PortMapAction[] {
    const r = parsePcpResponse(bytes);
    if (!r) {
      counters.dropped++;
      return [];
    }
    if (r.opcode === 'natpmp-only') {
      if (pending?.kind !== 'pcp' || purpose !== 'map') return (counters.dropped++, []);
      return protocolFailed('the gateway speaks NAT-PMP only (UNSUPP_VERSION)', now);
    }
    if (r.opcode === PCP_OPCODE_ANNOUNCE) {
      // An ANNOUNCE says "I may have restarted": with a bad Epoch, our mapping is gone; map again now (§14.1.3).
      if (held && !checkEpoch(r.epochS, now) && purpose !== 'delete') return [log('info', 'PCP server restarted; mapping again'), ...renewNow(now)];
      return [];
    }
    const p = pending;
    if (p?.kind !== 'pcp' || !pcpNonce || !equalBytes(r.nonce, pcpNonce) || r.protocol !== IPPROTO_UDP || r.internalPort !== internalPort) {
      counters.dropped++;
      return [];
    }
    if (purpose === 'delete') return finishStop();
    checkEpoch(r.epochS, now); // tracked for ANNOUNCE; a renewal's answer is itself the fresh mapping
    if (r.resultCode !== PCP_RESULT.SUCCESS) {
      const why = pcpResultName(r.resultCode);
      return purpose === 'renew' ? renewFailed(why, now) : protocolFailed(why, now);
    }
    if (r.lifetimeS === 0 || r.externalPort === 0 || !isIPv4(r.externalAddress) || r.externalAddress === '0.0.0.0') {
      counters.dropped++;
      return purpose === 'renew' ? renewFailed('bad MAP answer', now) : protocolFailed('the answer carried no usable mapping', now);
    }
    return granted(r.externalAddress, r.externalPort, r.lifetimeS, now);
  }

  function onNatpmp(bytes: Uint8Array, now: number): PortMapAction[] {
    const r = parseNatpmpResponse(bytes);
    const p = pending;
    if (!r || p?.kind !== 'natpmp') {
      counters.dropped++;
      return [];
    }
    if (r.resultCode !== NATPMP_RESULT.SUCCESS) {
      if (purpose === 'delete') return finishStop();
      const why = natpmpResultName(r.resultCode);
      return purpose === 'renew' ? renewFailed(why, now) : protocolFailed(why, now);
    }
    if (r.op === 'external-address') {
      if (!p.extBytes || p.ext !== undefined) return (counters.dropped++, []);
      if (r.externalAddress === '0.0.0.0') return protocolFailed('the gateway has no external address yet', now);
      p.ext = r.externalAddress;
    } else {
      if (r.internalPort !== internalPort || p.map) return (counters.dropped++, []);
      if (purpose === 'delete') return finishStop();
      if (r.lifetimeS === 0 || r.externalPort === 0) return purpose === 'renew' ? renewFailed('bad map answer', now) : protocolFailed('the answer carried no usable mapping', now);
      p.map = { externalPort: r.externalPort, lifetimeS: r.lifetimeS };
    }
    checkEpoch(r.epochS, now); // a renewal's answer re-creates the mapping, so a reset needs nothing more here
    const extAddress = p.ext ?? (p.extBytes ? undefined : held?.externalAddress);
    if (extAddress === undefined || !p.map) return [];
    return granted(extAddress, p.map.externalPort, p.map.lifetimeS, now);
  }

  function renewFailed(why: string, now: number): PortMapAction[] {
    pending = undefined;
    if (!held) return beginProbing(now);
    errors[held.protocol] = `renewal refused: ${why}`;
    return lost(`renewal refused: ${why}`, now);
  }

  function onSsdp(from: UdpEndpoint, bytes: Uint8Array, now: number): PortMapAction[] {
    const p = pending;
    if (p?.kind !== 'ssdp' || !upnp) return [];
    // Only our default gateway can map a port for us; other devices' answers are not for us.
    const answer = from.address === gateway ? parseSsdpResponse(bytes, from.address) : undefined;
    if (!answer) {
      counters.dropped++;
      return [];
    }
    upnp.location = answer.location;
    return http('describe', answer.location.href, undefined, now);
  }

  function onHttp(id: number, result: { status: number; body: string } | { error: string }, now: number): PortMapAction[] {
    const p = pending;
    if (p?.kind !== 'http' || p.id !== id || !upnp) return [];
    pending = undefined;
    if (p.step === 'delete') return finishStop();
    if ('error' in result) return p.step === 'add' && purpose === 'renew' ? retryRenewLater(result.error, now) : protocolFailed(`${p.step}: ${result.error}`, now);
    switch (p.step) {
      case 'describe': {
        const svc = result.status === 200 ? parseDeviceDescription(result.body, upnp.location!) : undefined;
        if (!svc) return protocolFailed(result.status === 200 ? 'no WANIPConnection/WANPPPConnection service in the description' : `description: HTTP ${result.status}`, now);
        upnp.serviceType = svc.serviceType;
        upnp.controlUrl = svc.controlUrl.href;
        return http('external-ip', upnp.controlUrl, getExternalIpRequest(svc.serviceType), now);
      }
      case 'external-ip': {
        const r = parseSoapResponse(result.status, result.body, 'GetExternalIPAddress');
        const ip = r.ok ? r.values.NewExternalIPAddress ?? '' : '';
        if (!r.ok) return protocolFailed(`GetExternalIPAddress: ${r.errorCode ?? ''} ${r.description ?? ''}`.trim(), now);
        if (!isIPv4(ip) || ip === '0.0.0.0') return protocolFailed(`GetExternalIPAddress: no usable address (${JSON.stringify(ip.slice(0, 40))})`, now);
        upnp.externalAddress = ip;
        return addMapping(now);
      }
      case 'add': {
        const r = parseSoapResponse(result.status, result.body, 'AddPortMapping');
        if (r.ok) return granted(upnp.externalAddress!, upnp.externalPort, upnp.leaseS === 0 ? lifetimeS : upnp.leaseS, now);
        if (purpose === 'renew') return renewFailed(`AddPortMapping ${r.errorCode ?? ''} ${r.description ?? ''}`.trim(), now);
        if (r.errorCode === UPNP_ERROR.ONLY_PERMANENT_LEASES_SUPPORTED && upnp.leaseS !== 0) {
          upnp.leaseS = 0; // renewed at half our lifetime anyway, and deleted on stop
          return addMapping(now);
        }
        if (r.errorCode === UPNP_ERROR.CONFLICT_IN_MAPPING_ENTRY && upnp.conflicts < UPNP_CONFLICT_TRIES) {
          upnp.conflicts++;
          upnp.externalPort = randomPort();
          return addMapping(now);
        }
        return protocolFailed(`AddPortMapping: ${r.errorCode ?? ''} ${r.description ?? ''}`.trim(), now);
      }
    }
  }

  function addMapping(now: number): PortMapAction[] {
    return http('add', upnp!.controlUrl!, addPortMappingRequest(upnp!.serviceType!, {
      externalPort: upnp!.externalPort, internalPort, internalClient: localAddress!, leaseS: upnp!.leaseS, description,
    }), now);
  }

  /** A renewal that got no answer: try again in a while, until the mapping expires. */
  function retryRenewLater(why: string, now: number): PortMapAction[] {
    pending = undefined;
    purpose = 'map';
    if (!held) return beginProbing(now);
    const left = held.expiresAt - now;
    if (left <= 0) return lost(`renewal unanswered (${why})`, now);
    held.renewAt = now + Math.max(MIN_RENEW_INTERVAL_MS, Math.min(left / 2, 10_000));
    return [log('debug', 'port mapping renewal unanswered; retrying', { why, leftMs: left })];
  }

  function randomPort(): number {
    const b = random(2);
    return 1024 + (((b[0]! << 8) | b[1]!) % (65536 - 1024));
  }

  function startStop(now: number): PortMapAction[] {
    retryAt = undefined;
    verify = undefined;
    const out: PortMapAction[] = [];
    if (verified) out.push({ type: 'candidate', mapping: undefined });
    verified = false;
    const h = held;
    const inFlight = pending && purpose === 'map' && !h ? pending.kind : undefined;
    // A PCP or NAT-PMP request in flight may have created a mapping we never heard of: delete it too.
    const proto = h?.protocol ?? (inFlight === 'pcp' ? 'pcp' : inFlight === 'natpmp' ? 'natpmp' : undefined);
    pending = undefined;
    if (!proto || !gateway || (proto === 'upnp' && !upnp?.controlUrl)) return [...out, ...finishStop()];
    phase = 'stopping';
    purpose = 'delete';
    stopDeadline = now + PORTMAP_STOP_TIMEOUT_MS;
    out.push(log('info', 'port mapping: deleting', { protocol: proto, gateway }));
    switch (proto) {
      case 'pcp': return [...out, ...startPcp(0, 0, now)];
      case 'natpmp': return [...out, ...startNatpmp(0, 0, false, now)];
      case 'upnp': return [...out, ...http('delete', upnp!.controlUrl!, deletePortMappingRequest(upnp!.serviceType!, h!.externalPort), now)];
    }
  }

  function finishStop(): PortMapAction[] {
    phase = 'stopped';
    pending = undefined;
    held = undefined;
    verify = undefined;
    stopDeadline = undefined;
    return [{ type: 'stopped' }];
  }

  function onTick(now: number): PortMapAction[] {
    const out: PortMapAction[] = [];
    if (phase === 'stopping') {
      if (stopDeadline !== undefined && now >= stopDeadline) return finishStop();
      return sendDue(now);
    }
    if (verify) {
      if (now >= verify.startedAt + timeoutMs) out.push(...verifyFailed('no echo came back through the mapping (the gateway filters it, or a second NAT is in front)'));
      else out.push(...verifySendDue(now));
    }
    if (phase === 'waiting' && retryAt !== undefined && now >= retryAt) return [...out, ...beginProbing(now)];
    const p = pending;
    if (p) {
      const limit = p.kind === 'http' ? PORTMAP_HTTP_TIMEOUT_MS : timeoutMs;
      if (now >= p.startedAt + limit) {
        if (purpose === 'renew') return [...out, ...retryRenewLater('timeout', now)];
        const why = p.kind === 'ssdp' ? 'no SSDP answer from the gateway' : p.kind === 'http' ? `${p.step}: timeout` : 'no answer';
        return [...out, ...protocolFailed(why, now)];
      }
      return [...out, ...sendDue(now)];
    }
    if (held && phase === 'mapped') {
      if (now >= held.expiresAt) return [...out, ...lost('expired', now)];
      if (now >= held.renewAt) return [...out, ...renewNow(now)];
    }
    return out;
  }

  return {
    counters,
    handle(event, now) {
      if (phase === 'stopped') return [];
      switch (event.type) {
        case 'start':
          gateway = event.gateway;
          localAddress = event.localAddress;
          internalPort = event.internalPort;
          retryStreak = 0;
          return beginProbing(now);
        case 'network-changed': {
          if (phase === 'stopping') return [];
          const same = event.gateway === gateway && event.localAddress === localAddress;
          if (same && held) return renewNow(now); // same gateway: check our mapping is still there, at once
          if (same && phase === 'probing') return [];
          const out: PortMapAction[] = verified ? [{ type: 'candidate', mapping: undefined }] : [];
          gateway = event.gateway;
          localAddress = event.localAddress;
          retryStreak = 0;
          return [...out, ...beginProbing(now)];
        }
        case 'observers': {
          observers = [...event.servers];
          return held && !verified && !verify && phase === 'mapped' ? startVerify(now) : [];
        }
        case 'udp': return onUdp(event.from, event.bytes, now);
        case 'ssdp': return onSsdp(event.from, event.bytes, now);
        case 'tunnel-stun': return onStun(event.bytes, event.from, true);
        case 'http-response': return onHttp(event.id, { status: event.status, body: event.body }, now);
        case 'http-error': return onHttp(event.id, { error: event.error }, now);
        case 'tick': return onTick(now);
        case 'stop': return phase === 'stopping' ? [] : startStop(now);
      }
    },
    nextWakeup() {
      if (phase === 'stopped') return undefined;
      let at = Infinity;
      const p = pending;
      if (p) {
        at = p.startedAt + (p.kind === 'http' ? PORTMAP_HTTP_TIMEOUT_MS : timeoutMs);
        if (p.kind !== 'http' && p.sends < schedule.length) at = Math.min(at, p.startedAt + schedule[p.sends]!);
      }
      if (phase === 'stopping' && stopDeadline !== undefined) at = Math.min(at, stopDeadline);
      if (verify) {
        at = Math.min(at, verify.startedAt + timeoutMs);
        if (verify.sends < schedule.length) at = Math.min(at, verify.startedAt + schedule[verify.sends]!);
      }
      if (phase === 'waiting' && retryAt !== undefined) at = Math.min(at, retryAt);
      if (held && phase === 'mapped' && !p) at = Math.min(at, held.renewAt, held.expiresAt);
      return at === Infinity ? undefined : at;
    },
    status() {
      return {
        phase, gateway, protocol: held?.protocol ?? (phase === 'probing' ? protocol() : undefined),
        ...(held ? { mapping: mappingOf(held) } : {}), verified, detail, errors: { ...errors },
      };
    },
  };
}

function hex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
