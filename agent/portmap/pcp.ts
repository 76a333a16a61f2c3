/**
 * PCP (RFC 6887), the part a client mapping one UDP port needs: MAP requests
 * and responses, ANNOUNCE, result codes and the Epoch check. Pure: bytes in,
 * values out. Decoders take untrusted bytes and return undefined (or an
 * error value) on anything malformed; they never throw. Encoders throw
 * RangeError on programmer errors only.
 *
 * Request header (§7.1), 24 bytes, then the opcode's body:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |  Version = 2  |R|   Opcode    |         Reserved              |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                 Requested Lifetime (32 bits)                  |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |            PCP Client's IP Address (128 bits, v4-mapped)      |
 *
 * Response header (§7.2), 24 bytes:
 *
 *   |  Version = 2  |R|   Opcode    |   Reserved    |  Result Code  |
 *   |                      Lifetime (32 bits)                       |
 *   |                     Epoch Time (32 bits)                      |
 *   |                      Reserved (96 bits)                       |
 *
 * MAP body (§11.1 request, §11.2 response), 36 bytes:
 *
 *   |                 Mapping Nonce (96 bits)                       |
 *   |   Protocol    |          Reserved (24 bits)                   |
 *   |        Internal Port          |  Suggested/Assigned Ext Port  |
 *   |   Suggested/Assigned External IP Address (128 bits)           |
 *
 * ANNOUNCE (§14.1) is the header alone. Options (§7.3) may follow a body; we
 * send none and walk past those in responses.
 */
import { bytesToIp, ipToBytes } from '../../shared/net/ip-bytes.js';

export const PCP_VERSION = 2;
/** The server's port (§19.1); unsolicited ANNOUNCEs go to the client's port 5350. */
export const PCP_SERVER_PORT = 5351;
export const PCP_OPCODE_ANNOUNCE = 0;
export const PCP_OPCODE_MAP = 1;
/** The R bit: set in responses. */
export const PCP_RESPONSE_BIT = 0x80;
export const PCP_HEADER_LEN = 24;
export const PCP_MAP_BODY_LEN = 36;
export const PCP_MAP_LEN = PCP_HEADER_LEN + PCP_MAP_BODY_LEN;
/** §7: a PCP message is at most 1100 bytes and a multiple of 4. */
export const PCP_MAX_LEN = 1100;
export const PCP_NONCE_LEN = 12;
export const IPPROTO_UDP = 17;

/** Result codes (§7.4). */
export const PCP_RESULT = {
  SUCCESS: 0,
  UNSUPP_VERSION: 1,
  NOT_AUTHORIZED: 2,
  MALFORMED_REQUEST: 3,
  UNSUPP_OPCODE: 4,
  UNSUPP_OPTION: 5,
  MALFORMED_OPTION: 6,
  NETWORK_FAILURE: 7,
  NO_RESOURCES: 8,
  UNSUPP_PROTOCOL: 9,
  USER_EX_QUOTA: 10,
  CANNOT_PROVIDE_EXTERNAL: 11,
  ADDRESS_MISMATCH: 12,
  EXCESSIVE_REMOTE_PEERS: 13,
} as const;

const RESULT_NAMES = Object.fromEntries(Object.entries(PCP_RESULT).map(([k, v]) => [v, k])) as Record<number, string>;

/** A result code as its RFC name (for logs and status), or "RESULT_<n>". */
export function pcpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `RESULT_${code}`;
}

/** 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d (§5). */
function ip16(address: string): Uint8Array {
  const b = ipToBytes(address);
  if (b.length === 16) return b;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(b, 12);
  return out;
}

/** 16 bytes back to text: a v4-mapped address as plain IPv4. */
function ip16ToText(b: Uint8Array): string {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return bytesToIp(mapped ? b.subarray(12, 16) : b);
}

function header(opcode: number, lifetimeS: number, clientAddress: string, bodyLen: number): { out: Uint8Array; view: DataView } {
  if (!Number.isInteger(lifetimeS) || lifetimeS < 0 || lifetimeS > 0xffffffff) throw new RangeError('lifetime must be a 32-bit unsigned integer');
  const out = new Uint8Array(PCP_HEADER_LEN + bodyLen);
  const view = new DataView(out.buffer);
  out[0] = PCP_VERSION;
  out[1] = opcode;
  view.setUint32(4, lifetimeS);
  out.set(ip16(clientAddress), 8);
  return { out, view };
}

export interface PcpMapRequest {
  nonce: Uint8Array; // 12 random bytes: the caller owns randomness
  /** Requested lifetime in seconds; 0 deletes the mapping (§15). */
  lifetimeS: number;
  /** Our address as the server sees it (the packet's source); a mismatch is ADDRESS_MISMATCH. */
  clientAddress: string;
  internalPort: number;
  /** 0: any. */
  suggestedExternalPort?: number;
  /** Unspecified (all zeros, v4-mapped "0.0.0.0") lets the server choose; the family still says v4 or v6. */
  suggestedExternalAddress?: string;
}

function checkPort(p: number, name: string, allowZero: boolean): void {
  if (!Number.isInteger(p) || p < (allowZero ? 0 : 1) || p > 0xffff) throw new RangeError(`${name} must be an integer in ${allowZero ? 0 : 1}..65535`);
}

/** A MAP request for UDP, 60 bytes. */
export function encodePcpMapRequest(r: PcpMapRequest): Uint8Array {
  if (!(r.nonce instanceof Uint8Array) || r.nonce.length !== PCP_NONCE_LEN) throw new RangeError('a PCP mapping nonce is 12 bytes');
  checkPort(r.internalPort, 'internalPort', false);
  checkPort(r.suggestedExternalPort ?? 0, 'suggestedExternalPort', true);
  const { out, view } = header(PCP_OPCODE_MAP, r.lifetimeS, r.clientAddress, PCP_MAP_BODY_LEN);
  out.set(r.nonce, 24);
  out[36] = IPPROTO_UDP;
  view.setUint16(40, r.internalPort);
  view.setUint16(42, r.suggestedExternalPort ?? 0);
  out.set(ip16(r.suggestedExternalAddress ?? '0.0.0.0'), 44);
  return out;
}

/** An ANNOUNCE request (§14.1): 24 bytes; the answer's Epoch tells whether the server lost its state. */
export function encodePcpAnnounceRequest(clientAddress: string): Uint8Array {
  return header(PCP_OPCODE_ANNOUNCE, 0, clientAddress, 0).out;
}

export interface PcpResponseHeader {
  opcode: number;
  resultCode: number;
  /** Seconds; for an error, how long the error is likely to last (§7.2). */
  lifetimeS: number;
  /** Seconds since the server's state began (§8.5). */
  epochS: number;
}

export interface PcpMapResponse extends PcpResponseHeader {
  opcode: typeof PCP_OPCODE_MAP;
  nonce: Uint8Array;
  protocol: number;
  internalPort: number;
  externalPort: number;
  externalAddress: string;
}

export type PcpResponse =
  | (PcpResponseHeader & { opcode: typeof PCP_OPCODE_ANNOUNCE })
  | PcpMapResponse
  /** A NAT-PMP-only server's answer to our version 2 (RFC 6887 §9): version 0, "unsupported version". */
  | { opcode: 'natpmp-only' };

/**
 * Parses a PCP response (or an unsolicited ANNOUNCE). Strict on framing:
 * 24..1100 bytes, a multiple of 4, version 2, the R bit, a known opcode with
 * its full body. Undefined for anything else. A version-0 datagram of NAT-PMP's
 * shape with result 1 means the server speaks only NAT-PMP.
 */
export function parsePcpResponse(b: Uint8Array): PcpResponse | undefined {
  if (b.length >= 4 && b.length <= 16 && b[0] === 0 && b[2] === 0 && b[3] === 1) return { opcode: 'natpmp-only' };
  if (b.length < PCP_HEADER_LEN || b.length > PCP_MAX_LEN || b.length % 4 !== 0) return undefined;
  if (b[0] !== PCP_VERSION || (b[1]! & PCP_RESPONSE_BIT) === 0) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const opcode = b[1]! & 0x7f;
  const head = { resultCode: b[3]!, lifetimeS: view.getUint32(4), epochS: view.getUint32(8) };
  if (opcode === PCP_OPCODE_ANNOUNCE) return { opcode, ...head };
  if (opcode !== PCP_OPCODE_MAP || b.length < PCP_MAP_LEN) return undefined;
  return {
    opcode,
    ...head,
    nonce: b.slice(24, 36),
    protocol: b[36]!,
    internalPort: view.getUint16(40),
    externalPort: view.getUint16(42),
    externalAddress: ip16ToText(b.subarray(44, 60)),
  };
}

/**
 * The Epoch check (§8.5): did the server keep its state since the previous
 * response? `prev` is the previous response's epoch and our clock then.
 * False means it restarted (or lost its mappings): map again at once.
 */
export function epochIsValid(prev: { epochS: number; atMs: number } | undefined, epochS: number, nowMs: number): boolean {
  if (!prev) return true;
  if (epochS + 1 < prev.epochS) return false; // time went backwards by more than a second
  const client = (nowMs - prev.atMs) / 1000;
  const server = epochS - prev.epochS;
  return !(client + 2 < server - server / 16 || server + 2 < client - client / 16);
}
