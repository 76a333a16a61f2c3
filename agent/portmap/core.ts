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
 * counted. This file owns that lifecycle; answers are judged in answers.ts
 * (PCP, NAT-PMP) and upnp-steps.ts, the echo in verify.ts.
 */
import { isIPv4 } from 'node:net';
import { formatEndpoint, normalizeIp } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { isStunPacket } from '../../shared/wire/stun.js';
import { judgeNatpmpAnswer, judgePcpAnswer } from './answers.js';
import {
  type AnswerContext, exchangeDatagrams, exchangeDeadline, type HttpStep, nextSendAt, type Pending, type Purpose, takeDueSend, type Verdict,
} from './exchange.js';
import { encodeNatpmpExternalAddressRequest, encodeNatpmpMapRequest } from './natpmp.js';
import { encodePcpMapRequest, epochIsValid, PCP_NONCE_LEN, PCP_SERVER_PORT } from './pcp.js';
import {
  PORTMAP_PROTOCOLS, PORTMAP_STOP_TIMEOUT_MS, type PortMapAction, type PortMapCounters, type PortMapper, type PortMapperOptions, type PortMapPhase,
  type PortMapping, type PortMapProtocol,
} from './types.js';
import {
  addMappingStep, deleteMappingStep, type HttpResult, judgeSsdpAnswer, judgeUpnpAnswer, newUpnpSession, type UpnpClient, type UpnpSession,
} from './upnp-steps.js';
import { judgeEcho, newVerification, type Verification, verificationSends } from './verify.js';

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
/** After every protocol failed: try again this soon, doubling up to PORTMAP_RETRY_MAX_MS (a gateway may enable UPnP later). */
export const PORTMAP_RETRY_MS = 30_000;
export const PORTMAP_RETRY_MAX_MS = 300_000;
/** Lifetimes shorter than this are treated as this for scheduling (no renewal storms on a silly gateway). */
const MIN_RENEW_INTERVAL_MS = 1000;

/** The mapping the gateway granted us, verified or not. */
interface Held { protocol: PortMapProtocol; externalAddress: string; externalPort: number; lifetimeS: number; obtainedAt: number; expiresAt: number; renewAt: number }

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
  let verify: Verification | undefined;
  let detail: string | undefined;
  const errors: Partial<Record<PortMapProtocol, string>> = {};
  let retryAt: number | undefined;
  let retryStreak = 0;
  let stopDeadline: number | undefined;
  let epoch: { epochS: number; atMs: number } | undefined;
  let httpSeq = 0;
  // Per-protocol context that lives across steps and renewals.
  let pcpNonce: Uint8Array | undefined;
  let upnp: UpnpSession | undefined;

  const protocol = () => protocols[protoIndex]!;
  const log = (level: 'info' | 'warn' | 'debug', msg: string, fields?: Record<string, unknown>): PortMapAction => ({ type: 'log', level, msg, fields });
  const upnpClient = (): UpnpClient => ({ internalPort, localAddress: localAddress!, lifetimeS, description, random });

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
        upnp = newUpnpSession(internalPort, lifetimeS);
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

  function http(next: HttpStep, now: number): PortMapAction[] {
    const id = ++httpSeq;
    pending = { kind: 'http', id, step: next.step, startedAt: now };
    counters.requestsSent++;
    return [next.soap
      ? { type: 'http', id, method: 'POST', url: next.url, headers: next.soap.headers, body: next.soap.body }
      : { type: 'http', id, method: 'GET', url: next.url, headers: {} }];
  }

  /** Sends whatever datagrams are due on the retransmit schedule. */
  function sendDue(now: number): PortMapAction[] {
    const p = pending;
    if (!p || p.kind === 'http' || !takeDueSend(p, schedule, now)) return [];
    const out = exchangeDatagrams(p, gateway!);
    counters.requestsSent += out.length;
    return out;
  }

  /** What an answer's verdict means for the mapping. */
  function act(v: Verdict, now: number): PortMapAction[] {
    switch (v.kind) {
      case 'drop': return (counters.dropped++, []);
      case 'none': return [];
      case 'granted': return granted(v.externalAddress, v.externalPort, v.lifetimeS, now);
      case 'protocol-failed':
        if (v.malformed) counters.dropped++;
        return protocolFailed(v.why, now);
      case 'renew-failed':
        if (v.malformed) counters.dropped++;
        return renewFailed(v.why, now);
      case 'renew-unanswered': return retryRenewLater(v.why, now);
      case 'deleted': return finishStop();
      case 'restarted': return [log('info', 'PCP server restarted; mapping again'), ...renewNow(now)];
      case 'http': return http(v.next, now);
    }
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
    verify = newVerification(observers, held.externalPort, random, now);
    detail = 'verifying the mapping from outside';
    return verifySendDue(verify, now);
  }

  function verifySendDue(v: Verification, now: number): PortMapAction[] {
    const out = verificationSends(v, schedule, now);
    counters.requestsSent += out.length;
    return out;
  }

  function verifyFailed(why: string): PortMapAction[] {
    verify = undefined;
    counters.verifyFailed++;
    detail = `not used as a candidate: ${why}`;
    return [log('warn', 'port mapping not verified', { why, external: held && formatEndpoint({ address: held.externalAddress, port: held.externalPort }) })];
  }

  function onStun(bytes: Uint8Array, from: UdpEndpoint, viaMapping: boolean): PortMapAction[] {
    if (!verify || !held) return [];
    const echo = judgeEcho(verify, bytes, from, viaMapping, held.externalAddress);
    switch (echo.kind) {
      case 'not-ours': return [];
      case 'wrong-source': return (counters.dropped++, []);
      case 'failed': return verifyFailed(echo.why);
      case 'verified':
        verify = undefined;
        verified = true;
        counters.verified++;
        detail = undefined;
        return [
          log('info', 'port mapping verified', { protocol: held.protocol, external: formatEndpoint({ address: held.externalAddress, port: held.externalPort }) }),
          { type: 'candidate', mapping: mappingOf(held) },
        ];
    }
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
      case 'upnp': return http(addMappingStep(upnp!, held.externalPort, upnpClient()), now);
    }
  }

  function onUdp(from: UdpEndpoint, bytes: Uint8Array, now: number): PortMapAction[] {
    if (isStunPacket(bytes)) return onStun(bytes, from, false);
    if (!gateway || from.address !== gateway || from.port !== PCP_SERVER_PORT) {
      counters.dropped++;
      return [];
    }
    const kind = held && !pending ? held.protocol : pending?.kind;
    const ctx: AnswerContext = { pending, purpose, internalPort, held, checkEpoch: (epochS) => checkEpoch(epochS, now) };
    if (kind === 'pcp') return act(judgePcpAnswer(bytes, pcpNonce, ctx), now);
    if (kind === 'natpmp') return act(judgeNatpmpAnswer(bytes, ctx), now);
    counters.dropped++;
    return [];
  }

  function renewFailed(why: string, now: number): PortMapAction[] {
    pending = undefined;
    if (!held) return beginProbing(now);
    errors[held.protocol] = `renewal refused: ${why}`;
    return lost(`renewal refused: ${why}`, now);
  }

  function onSsdp(from: UdpEndpoint, bytes: Uint8Array, now: number): PortMapAction[] {
    if (pending?.kind !== 'ssdp' || !upnp) return [];
    return act(judgeSsdpAnswer(upnp, from, bytes, gateway), now);
  }

  function onHttp(id: number, result: HttpResult, now: number): PortMapAction[] {
    const p = pending;
    if (p?.kind !== 'http' || p.id !== id || !upnp) return [];
    pending = undefined;
    return act(judgeUpnpAnswer(upnp, p.step, result, purpose, upnpClient()), now);
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
      case 'upnp': return [...out, ...http(deleteMappingStep(upnp!, h!.externalPort), now)];
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
      else out.push(...verifySendDue(verify, now));
    }
    if (phase === 'waiting' && retryAt !== undefined && now >= retryAt) return [...out, ...beginProbing(now)];
    const p = pending;
    if (p) {
      if (now >= exchangeDeadline(p, timeoutMs)) {
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
        at = exchangeDeadline(p, timeoutMs);
        if (p.kind !== 'http') at = Math.min(at, nextSendAt(p, schedule) ?? Infinity);
      }
      if (phase === 'stopping' && stopDeadline !== undefined) at = Math.min(at, stopDeadline);
      if (verify) at = Math.min(at, verify.startedAt + timeoutMs, nextSendAt(verify, schedule) ?? Infinity);
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
