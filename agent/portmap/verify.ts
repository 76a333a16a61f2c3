/**
 * The verification echo: proof that a mapping carries traffic from outside
 * before it becomes an endpoint candidate. A STUN Binding request goes from
 * the mapper's socket to each of the coordinator's observers with
 * RESPONSE-PORT (RFC 5780 §7.5) set to the mapped external port, so the
 * answer travels to external-ip:external-port, i.e. through the mapping. It
 * proves the mapping only when it arrives on the tunnel port and names the
 * mapped address as our source. The core (core.ts) holds one Verification
 * at a time and decides what an `EchoVerdict` means.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { normalizeIp, sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { encodeBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN, STUN_TXID_LEN } from '../../shared/wire/stun.js';
import { takeDueSend } from './exchange.js';
import type { PortMapAction } from './types.js';

export interface Verification {
  /** Which observer each transaction (hex txid) went to, and the request it sends. */
  txids: Map<string, UdpEndpoint>;
  bytes: Map<string, Uint8Array>;
  sends: number;
  startedAt: number;
}

export type EchoVerdict =
  /** Not an answer to our requests (discovery's answers come the same way): ignored, not counted. */
  | { kind: 'not-ours' }
  /** Our transaction, but not from the observer we asked: counted as dropped. */
  | { kind: 'wrong-source' }
  | { kind: 'failed'; why: string }
  | { kind: 'verified' };

/** One request per observer, each its own transaction, asking for the answer at `externalPort`. */
export function newVerification(observers: readonly UdpEndpoint[], externalPort: number, random: RandomBytes, now: number): Verification {
  const v: Verification = { txids: new Map(), bytes: new Map(), sends: 0, startedAt: now };
  for (const server of observers) {
    const txid = random(STUN_TXID_LEN);
    const key = hex(txid);
    v.txids.set(key, server);
    v.bytes.set(key, encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN, responsePort: externalPort }));
  }
  return v;
}

/** The requests due on the retransmit schedule, to every observer at once. */
export function verificationSends(v: Verification, schedule: readonly number[], now: number): PortMapAction[] {
  if (!takeDueSend(v, schedule, now)) return [];
  const out: PortMapAction[] = [];
  for (const [key, server] of v.txids) out.push({ type: 'send', to: server, bytes: v.bytes.get(key)! });
  return out;
}

/** A STUN answer: on the tunnel port (`viaMapping`) it is the echo; on the mapper's socket the observer ignored RESPONSE-PORT. */
export function judgeEcho(v: Verification, bytes: Uint8Array, from: UdpEndpoint, viaMapping: boolean, externalAddress: string): EchoVerdict {
  const m = parseBindingResponse(bytes);
  const server = m && v.txids.get(hex(m.txid));
  if (!m || !server) return { kind: 'not-ours' };
  if (!sameEndpoint(server, from)) return { kind: 'wrong-source' };
  if (!viaMapping) return { kind: 'failed', why: 'the STUN observer ignored RESPONSE-PORT (an older coordinator?)' };
  if (normalizeIp(m.mapped.address) !== externalAddress) {
    return { kind: 'failed', why: `the observer sees us at ${m.mapped.address}, not at the mapped ${externalAddress} (another NAT in front of the gateway?)` };
  }
  return { kind: 'verified' };
}

function hex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}
