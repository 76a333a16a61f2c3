/**
 * One exchange with the gateway as the core (core.ts) tracks it: what it is
 * waiting for (`Pending`), why (`Purpose`), when each datagram is (re)sent,
 * when it gives up, and the `Verdict` an answer comes to. The judges
 * (answers.ts for PCP and NAT-PMP, upnp-steps.ts for UPnP) speak in these
 * terms so that the core alone decides what a verdict means for the
 * mapping's lifecycle.
 */
import type { UdpEndpoint } from '../../shared/udp.js';
import { NATPMP_SERVER_PORT } from './natpmp.js';
import { PCP_SERVER_PORT } from './pcp.js';
import { PORTMAP_HTTP_TIMEOUT_MS, type PortMapAction } from './types.js';
import { encodeSsdpSearch, SSDP_MULTICAST_ADDRESS, SSDP_PORT, SSDP_SEARCH_TARGETS, type SoapRequest } from './upnp.js';

export type Purpose = 'map' | 'renew' | 'delete';

export type UpnpStep = 'describe' | 'external-ip' | 'add' | 'delete';

/** A UPnP HTTP request to make: a GET without `soap`, a SOAP POST with it. */
export interface HttpStep { step: UpnpStep; url: string; soap?: SoapRequest }

export type Pending =
  | { kind: 'pcp'; bytes: Uint8Array; sends: number; startedAt: number }
  /** NAT-PMP asks for the external address and the mapping separately; the answers fill `ext` and `map` in either order. */
  | { kind: 'natpmp'; extBytes?: Uint8Array; mapBytes: Uint8Array; sends: number; startedAt: number; ext?: string; map?: { externalPort: number; lifetimeS: number } }
  | { kind: 'ssdp'; sends: number; startedAt: number }
  | { kind: 'http'; id: number; step: UpnpStep; startedAt: number };

/** What a judge needs from the core to place an answer in the conversation. */
export interface AnswerContext {
  pending: Pending | undefined;
  purpose: Purpose;
  internalPort: number;
  held: { externalAddress: string } | undefined;
  /** Records the server's Epoch; false when it shows the server lost its state (and with it our mapping). */
  checkEpoch(epochS: number): boolean;
}

export type Verdict =
  /** Malformed, unexpected, or not an answer to what is outstanding: counted, otherwise ignored. */
  | { kind: 'drop' }
  /** A good answer that asks for nothing (yet). */
  | { kind: 'none' }
  | { kind: 'granted'; externalAddress: string; externalPort: number; lifetimeS: number }
  /** This protocol does not work here; `malformed` answers are counted as dropped too. */
  | { kind: 'protocol-failed'; why: string; malformed?: boolean }
  /** The gateway refused to renew the mapping we hold. */
  | { kind: 'renew-failed'; why: string; malformed?: boolean }
  /** A renewal that got no answer: worth retrying while the mapping lasts. */
  | { kind: 'renew-unanswered'; why: string }
  /** The delete is answered (an error answer leaves nothing to delete either). */
  | { kind: 'deleted' }
  /** A PCP server announced a restart that lost our mapping. */
  | { kind: 'restarted' }
  | { kind: 'http'; next: HttpStep };

/** A refusal, as a failed attempt when mapping and as a failed renewal when renewing. */
export function refused(purpose: Purpose, why: string): Verdict {
  return purpose === 'renew' ? { kind: 'renew-failed', why } : { kind: 'protocol-failed', why };
}

/** Moves `r` past every send its schedule has due by `now`; true when one is. Only the latest due send goes out: a late tick must not burst. */
export function takeDueSend(r: { sends: number; startedAt: number }, schedule: readonly number[], now: number): boolean {
  let due = false;
  while (r.sends < schedule.length && now >= r.startedAt + schedule[r.sends]!) {
    r.sends++;
    due = true;
  }
  return due;
}

/** When `r`'s next (re)send is due; undefined once the schedule is spent. */
export function nextSendAt(r: { sends: number; startedAt: number }, schedule: readonly number[]): number | undefined {
  return r.sends < schedule.length ? r.startedAt + schedule[r.sends]! : undefined;
}

/** When an unanswered exchange counts as failed: HTTP to an IGD is slower than a datagram to the gateway. */
export function exchangeDeadline(p: Pending, requestTimeoutMs: number): number {
  return p.startedAt + (p.kind === 'http' ? PORTMAP_HTTP_TIMEOUT_MS : requestTimeoutMs);
}

/** The datagrams one send of `p` carries; a NAT-PMP half already answered is not asked again. */
export function exchangeDatagrams(p: Exclude<Pending, { kind: 'http' }>, gateway: string): PortMapAction[] {
  const to = (port: number): UdpEndpoint => ({ address: gateway, port });
  switch (p.kind) {
    case 'pcp': return [{ type: 'send', to: to(PCP_SERVER_PORT), bytes: p.bytes }];
    case 'natpmp': {
      const out: PortMapAction[] = [];
      if (p.extBytes && p.ext === undefined) out.push({ type: 'send', to: to(NATPMP_SERVER_PORT), bytes: p.extBytes });
      if (!p.map) out.push({ type: 'send', to: to(NATPMP_SERVER_PORT), bytes: p.mapBytes });
      return out;
    }
    case 'ssdp':
      return SSDP_SEARCH_TARGETS.map((st) => ({ type: 'ssdp-send', to: { address: SSDP_MULTICAST_ADDRESS, port: SSDP_PORT }, bytes: encodeSsdpSearch(st) }));
  }
}
