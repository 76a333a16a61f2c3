/**
 * NAT-PMP (RFC 6886): the external address request and the UDP mapping
 * request, their responses and result codes. Pure. Decoders take untrusted
 * bytes and return undefined on anything malformed, never throw.
 *
 * External address request (§3.2), 2 bytes:   | Vers = 0 | OP = 0 |
 * External address response, 12 bytes:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   | Vers = 0      | OP = 128 + 0  | Result Code (16 bits)         |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   | Seconds Since Start of Epoch (32 bits)                        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   | External IPv4 Address (32 bits)                               |
 *
 * Mapping request (§3.3), 12 bytes:
 *
 *   | Vers = 0      | OP = 1 (UDP)  | Reserved (16 bits)            |
 *   | Internal Port                 | Suggested External Port       |
 *   | Requested Port Mapping Lifetime in Seconds (32 bits)          |
 *
 * Mapping response, 16 bytes:
 *
 *   | Vers = 0      | OP = 128 + 1  | Result Code                   |
 *   | Seconds Since Start of Epoch                                  |
 *   | Internal Port                 | Mapped External Port          |
 *   | Port Mapping Lifetime in Seconds                              |
 *
 * A lifetime of 0 with external port 0 deletes the mapping (§3.4).
 */

export const NATPMP_VERSION = 0;
export const NATPMP_SERVER_PORT = 5351;
export const NATPMP_OP_EXTERNAL_ADDRESS = 0;
export const NATPMP_OP_MAP_UDP = 1;
export const NATPMP_RESPONSE_BIT = 0x80;
export const NATPMP_EXTERNAL_ADDRESS_RESPONSE_LEN = 12;
export const NATPMP_MAP_REQUEST_LEN = 12;
export const NATPMP_MAP_RESPONSE_LEN = 16;

/** Result codes (§3.5). */
export const NATPMP_RESULT = {
  SUCCESS: 0,
  UNSUPPORTED_VERSION: 1,
  NOT_AUTHORIZED: 2,
  NETWORK_FAILURE: 3,
  OUT_OF_RESOURCES: 4,
  UNSUPPORTED_OPCODE: 5,
} as const;

const RESULT_NAMES = Object.fromEntries(Object.entries(NATPMP_RESULT).map(([k, v]) => [v, k])) as Record<number, string>;

export function natpmpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `RESULT_${code}`;
}

export function encodeNatpmpExternalAddressRequest(): Uint8Array {
  return Uint8Array.of(NATPMP_VERSION, NATPMP_OP_EXTERNAL_ADDRESS);
}

/** A UDP mapping request; lifetime 0 and suggested port 0 delete it. */
export function encodeNatpmpMapRequest(internalPort: number, suggestedExternalPort: number, lifetimeS: number): Uint8Array {
  if (!Number.isInteger(internalPort) || internalPort < 1 || internalPort > 0xffff) throw new RangeError('internalPort must be an integer in 1..65535');
  if (!Number.isInteger(suggestedExternalPort) || suggestedExternalPort < 0 || suggestedExternalPort > 0xffff) throw new RangeError('suggestedExternalPort must be an integer in 0..65535');
  if (!Number.isInteger(lifetimeS) || lifetimeS < 0 || lifetimeS > 0xffffffff) throw new RangeError('lifetime must be a 32-bit unsigned integer');
  const out = new Uint8Array(NATPMP_MAP_REQUEST_LEN);
  const view = new DataView(out.buffer);
  out[0] = NATPMP_VERSION;
  out[1] = NATPMP_OP_MAP_UDP;
  view.setUint16(4, internalPort);
  view.setUint16(6, suggestedExternalPort);
  view.setUint32(8, lifetimeS);
  return out;
}

export type NatpmpResponse =
  | { op: 'external-address'; resultCode: number; epochS: number; externalAddress: string }
  | { op: 'map-udp'; resultCode: number; epochS: number; internalPort: number; externalPort: number; lifetimeS: number };

/**
 * Parses a NAT-PMP response: version 0, the R bit, a known opcode and at least
 * its full length (longer is tolerated, §3.2 says clients check the opcode and
 * length they need). An error response may be shorter than a success (§3.5):
 * 8 bytes carry the result code and epoch; fields beyond are then zero.
 */
export function parseNatpmpResponse(b: Uint8Array): NatpmpResponse | undefined {
  if (b.length < 8 || b.length > 1100 || b[0] !== NATPMP_VERSION || (b[1]! & NATPMP_RESPONSE_BIT) === 0) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const op = b[1]! & 0x7f;
  const resultCode = view.getUint16(2);
  const epochS = view.getUint32(4);
  if (op === NATPMP_OP_EXTERNAL_ADDRESS) {
    if (b.length < NATPMP_EXTERNAL_ADDRESS_RESPONSE_LEN) {
      return resultCode === NATPMP_RESULT.SUCCESS ? undefined : { op: 'external-address', resultCode, epochS, externalAddress: '0.0.0.0' };
    }
    return { op: 'external-address', resultCode, epochS, externalAddress: Array.from(b.subarray(8, 12)).join('.') };
  }
  if (op === NATPMP_OP_MAP_UDP) {
    if (b.length < NATPMP_MAP_RESPONSE_LEN) {
      return resultCode === NATPMP_RESULT.SUCCESS ? undefined : { op: 'map-udp', resultCode, epochS, internalPort: 0, externalPort: 0, lifetimeS: 0 };
    }
    return { op: 'map-udp', resultCode, epochS, internalPort: view.getUint16(8), externalPort: view.getUint16(10), lifetimeS: view.getUint32(12) };
  }
  return undefined;
}
