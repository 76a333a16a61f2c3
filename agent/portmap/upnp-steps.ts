/**
 * The UPnP-IGD conversation, step by step: the gateway's SSDP answer names
 * its description, the description names the WAN connection service, then
 * GetExternalIPAddress and AddPortMapping on it; a renewal is AddPortMapping
 * again, a delete DeletePortMapping. Each answer comes to a `Verdict`: the
 * next HTTP step, the mapping, or why UPnP does not work here. The session
 * keeps what the steps learned, for renewal and delete. The text codecs are
 * upnp.ts; the core (core.ts) makes the requests.
 */
import { isIPv4 } from 'node:net';
import type { RandomBytes } from '../../shared/clock.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { HttpStep, Purpose, UpnpStep, Verdict } from './exchange.js';
import {
  addPortMappingRequest, deletePortMappingRequest, getExternalIpRequest, parseDeviceDescription, parseSoapResponse, parseSsdpResponse, UPNP_ERROR,
} from './upnp.js';

/** Other external ports tried after ConflictInMappingEntry on the tunnel port. */
const UPNP_CONFLICT_TRIES = 3;

export interface UpnpSession {
  location?: URL;
  serviceType?: string;
  controlUrl?: string;
  externalAddress?: string;
  externalPort: number;
  /** 0 once the IGD said it only grants permanent leases. */
  leaseS: number;
  conflicts: number;
}

/** What a mapping request says about us. */
export interface UpnpClient { internalPort: number; localAddress: string; lifetimeS: number; description: string; random: RandomBytes }

export type HttpResult = { status: number; body: string } | { error: string };

/** A session asks for the tunnel port itself first, for our lifetime. */
export function newUpnpSession(internalPort: number, lifetimeS: number): UpnpSession {
  return { externalPort: internalPort, leaseS: lifetimeS, conflicts: 0 };
}

/** An SSDP answer: only our default gateway can map a port for us, so other devices' answers are dropped. */
export function judgeSsdpAnswer(s: UpnpSession, from: UdpEndpoint, bytes: Uint8Array, gateway: string | undefined): Verdict {
  const answer = from.address === gateway ? parseSsdpResponse(bytes, from.address) : undefined;
  if (!answer) return { kind: 'drop' };
  s.location = answer.location;
  return { kind: 'http', next: { step: 'describe', url: answer.location.href } };
}

/** The answer (or transport failure) of HTTP step `step`. */
export function judgeUpnpAnswer(s: UpnpSession, step: UpnpStep, result: HttpResult, purpose: Purpose, client: UpnpClient): Verdict {
  if (step === 'delete') return { kind: 'deleted' };
  if ('error' in result) return step === 'add' && purpose === 'renew' ? { kind: 'renew-unanswered', why: result.error } : { kind: 'protocol-failed', why: `${step}: ${result.error}` };
  switch (step) {
    case 'describe': {
      const svc = result.status === 200 ? parseDeviceDescription(result.body, s.location!) : undefined;
      if (!svc) return { kind: 'protocol-failed', why: result.status === 200 ? 'no WANIPConnection/WANPPPConnection service in the description' : `description: HTTP ${result.status}` };
      s.serviceType = svc.serviceType;
      s.controlUrl = svc.controlUrl.href;
      return { kind: 'http', next: { step: 'external-ip', url: s.controlUrl, soap: getExternalIpRequest(svc.serviceType) } };
    }
    case 'external-ip': {
      const r = parseSoapResponse(result.status, result.body, 'GetExternalIPAddress');
      const ip = r.ok ? r.values.NewExternalIPAddress ?? '' : '';
      if (!r.ok) return { kind: 'protocol-failed', why: `GetExternalIPAddress: ${r.errorCode ?? ''} ${r.description ?? ''}`.trim() };
      if (!isIPv4(ip) || ip === '0.0.0.0') return { kind: 'protocol-failed', why: `GetExternalIPAddress: no usable address (${JSON.stringify(ip.slice(0, 40))})` };
      s.externalAddress = ip;
      return { kind: 'http', next: addMappingStep(s, s.externalPort, client) };
    }
    case 'add': {
      const r = parseSoapResponse(result.status, result.body, 'AddPortMapping');
      if (r.ok) return { kind: 'granted', externalAddress: s.externalAddress!, externalPort: s.externalPort, lifetimeS: s.leaseS === 0 ? client.lifetimeS : s.leaseS };
      if (purpose === 'renew') return { kind: 'renew-failed', why: `AddPortMapping ${r.errorCode ?? ''} ${r.description ?? ''}`.trim() };
      if (r.errorCode === UPNP_ERROR.ONLY_PERMANENT_LEASES_SUPPORTED && s.leaseS !== 0) {
        s.leaseS = 0; // renewed at half our lifetime anyway, and deleted on stop
        return { kind: 'http', next: addMappingStep(s, s.externalPort, client) };
      }
      if (r.errorCode === UPNP_ERROR.CONFLICT_IN_MAPPING_ENTRY && s.conflicts < UPNP_CONFLICT_TRIES) {
        s.conflicts++;
        s.externalPort = randomPort(client.random);
        return { kind: 'http', next: addMappingStep(s, s.externalPort, client) };
      }
      return { kind: 'protocol-failed', why: `AddPortMapping: ${r.errorCode ?? ''} ${r.description ?? ''}`.trim() };
    }
  }
}

/** AddPortMapping of `externalPort` to our tunnel port: the mapping, and each renewal of it. */
export function addMappingStep(s: UpnpSession, externalPort: number, client: UpnpClient): HttpStep {
  return {
    step: 'add', url: s.controlUrl!,
    soap: addPortMappingRequest(s.serviceType!, { externalPort, internalPort: client.internalPort, internalClient: client.localAddress, leaseS: s.leaseS, description: client.description }),
  };
}

export function deleteMappingStep(s: UpnpSession, externalPort: number): HttpStep {
  return { step: 'delete', url: s.controlUrl!, soap: deletePortMappingRequest(s.serviceType!, externalPort) };
}

function randomPort(random: RandomBytes): number {
  const b = random(2);
  return 1024 + (((b[0]! << 8) | b[1]!) % (65536 - 1024));
}
