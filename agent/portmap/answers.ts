/**
 * The gateway's answers on port 5351, PCP (RFC 6887) and NAT-PMP (RFC 6886),
 * judged against what is outstanding: the opcode, the PCP mapping nonce, the
 * internal port, the Epoch. Anything that does not answer our request is a
 * `drop`; the core (core.ts) acts on the verdict. The only state touched is
 * the Epoch (through the context) and the NAT-PMP exchange's halves.
 */
import { isIPv4 } from 'node:net';
import { type AnswerContext, refused, type Verdict } from './exchange.js';
import { NATPMP_RESULT, natpmpResultName, parseNatpmpResponse } from './natpmp.js';
import { IPPROTO_UDP, parsePcpResponse, PCP_OPCODE_ANNOUNCE, PCP_RESULT, pcpResultName } from './pcp.js';

/** A PCP answer to the MAP request carrying `nonce`, or an unsolicited ANNOUNCE. */
export function judgePcpAnswer(bytes: Uint8Array, nonce: Uint8Array | undefined, ctx: AnswerContext): Verdict {
  const r = parsePcpResponse(bytes);
  if (!r) return { kind: 'drop' };
  if (r.opcode === 'natpmp-only') {
    if (ctx.pending?.kind !== 'pcp' || ctx.purpose !== 'map') return { kind: 'drop' };
    return { kind: 'protocol-failed', why: 'the gateway speaks NAT-PMP only (UNSUPP_VERSION)' };
  }
  if (r.opcode === PCP_OPCODE_ANNOUNCE) {
    // An ANNOUNCE says "I may have restarted": with a bad Epoch, our mapping is gone; map again now (§14.1.3).
    if (ctx.held && !ctx.checkEpoch(r.epochS) && ctx.purpose !== 'delete') return { kind: 'restarted' };
    return { kind: 'none' };
  }
  if (ctx.pending?.kind !== 'pcp' || !nonce || !equalBytes(r.nonce, nonce) || r.protocol !== IPPROTO_UDP || r.internalPort !== ctx.internalPort) {
    return { kind: 'drop' };
  }
  if (ctx.purpose === 'delete') return { kind: 'deleted' };
  ctx.checkEpoch(r.epochS); // tracked for ANNOUNCE; a renewal's answer is itself the fresh mapping
  if (r.resultCode !== PCP_RESULT.SUCCESS) return refused(ctx.purpose, pcpResultName(r.resultCode));
  if (r.lifetimeS === 0 || r.externalPort === 0 || !isIPv4(r.externalAddress) || r.externalAddress === '0.0.0.0') {
    return ctx.purpose === 'renew'
      ? { kind: 'renew-failed', why: 'bad MAP answer', malformed: true }
      : { kind: 'protocol-failed', why: 'the answer carried no usable mapping', malformed: true };
  }
  return { kind: 'granted', externalAddress: r.externalAddress, externalPort: r.externalPort, lifetimeS: r.lifetimeS };
}

/** A NAT-PMP answer: the external address or the mapping, each half of the exchange; granted once both are in. */
export function judgeNatpmpAnswer(bytes: Uint8Array, ctx: AnswerContext): Verdict {
  const r = parseNatpmpResponse(bytes);
  const p = ctx.pending;
  if (!r || p?.kind !== 'natpmp') return { kind: 'drop' };
  if (r.resultCode !== NATPMP_RESULT.SUCCESS) {
    if (ctx.purpose === 'delete') return { kind: 'deleted' };
    return refused(ctx.purpose, natpmpResultName(r.resultCode));
  }
  if (r.op === 'external-address') {
    if (!p.extBytes || p.ext !== undefined) return { kind: 'drop' };
    if (r.externalAddress === '0.0.0.0') return { kind: 'protocol-failed', why: 'the gateway has no external address yet' };
    p.ext = r.externalAddress;
  } else {
    if (r.internalPort !== ctx.internalPort || p.map) return { kind: 'drop' };
    if (ctx.purpose === 'delete') return { kind: 'deleted' };
    if (r.lifetimeS === 0 || r.externalPort === 0) {
      return ctx.purpose === 'renew' ? { kind: 'renew-failed', why: 'bad map answer' } : { kind: 'protocol-failed', why: 'the answer carried no usable mapping' };
    }
    p.map = { externalPort: r.externalPort, lifetimeS: r.lifetimeS };
  }
  ctx.checkEpoch(r.epochS); // a renewal's answer re-creates the mapping, so a reset needs nothing more here
  // A renewal asks for the mapping only: the address is the one we hold.
  const extAddress = p.ext ?? (p.extBytes ? undefined : ctx.held?.externalAddress);
  if (extAddress === undefined || !p.map) return { kind: 'none' };
  return { kind: 'granted', externalAddress: extAddress, externalPort: p.map.externalPort, lifetimeS: p.map.lifetimeS };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
