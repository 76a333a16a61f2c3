/**
 * STUN Binding (RFC 8489): the one STUN exchange Knit speaks. The coordinator's
 * observer answers Binding requests with the source address it saw; agents send
 * them from the tunnel's port to learn the NAT mapping the tunnel uses. No
 * authentication (MESSAGE-INTEGRITY is walked past, never checked), no TURN.
 *
 * Message (RFC 8489 §5):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |0 0|     STUN Message Type     |         Message Length        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                  Magic Cookie = 0x2112A442                    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                  Transaction ID (96 bits)                     |
 *   |                                                               |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |     Attribute Type            |    Attribute Length (value)   |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |       Value, padded with 0-3 bytes to a multiple of 4  ...    |
 *
 * Message Length counts the bytes after the 20-byte header. Attributes used:
 *
 *   XOR-MAPPED-ADDRESS 0x0020 (§14.2): 0x00 | family (1 = v4, 2 = v6) |
 *       port ^ 0x2112 | address ^ (cookie ‖ transaction id)
 *   MAPPED-ADDRESS     0x0001 (§14.1): the same, not XORed (old servers only)
 *   SOFTWARE           0x8022 (§14.14): UTF-8, fewer than 128 characters
 *   PADDING            0x0026 (RFC 5780 §7.6): any bytes; Knit pads its requests
 *       so the observer's answer is never larger than the question
 *   RESPONSE-PORT      0x0027 (RFC 5780 §7.5): port (16 bits) | 16 bits of padding;
 *       in a request, asks the server to answer to the request's source address
 *       but this port (the port-mapping echo check, docs/port-mapping.md)
 *   FINGERPRINT        0x8028 (§14.7): CRC-32 of everything before it,
 *       XOR 0x5354554e; always the last attribute
 *
 * Decoders take untrusted bytes: they return undefined on anything malformed
 * and never throw. Encoders throw RangeError on programmer errors only.
 */
import { isIPv4 } from 'node:net';
import { bytesToIp, ipToBytes } from '../net/ip-bytes.js';
import type { UdpEndpoint } from '../udp.js';

export const STUN_HEADER_LEN = 20;
export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_TXID_LEN = 12;
/** Message types: method Binding (0x001) in class request / success response (§5, §18.2). */
export const STUN_BINDING_REQUEST = 0x0001;
export const STUN_BINDING_SUCCESS = 0x0101;
export const STUN_ATTR_MAPPED_ADDRESS = 0x0001;
export const STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020;
export const STUN_ATTR_PADDING = 0x0026;
export const STUN_ATTR_RESPONSE_PORT = 0x0027;
export const STUN_ATTR_SOFTWARE = 0x8022;
export const STUN_ATTR_FINGERPRINT = 0x8028;
export const STUN_FINGERPRINT_XOR = 0x5354554e;
/** FINGERPRINT attribute on the wire: 4-byte TLV header + CRC-32. */
export const STUN_FINGERPRINT_ATTR_LEN = 8;
/**
 * The largest answer the observer sends: header + XOR-MAPPED-ADDRESS for IPv6
 * (4 + 20) + FINGERPRINT = 52 bytes.
 */
export const STUN_MAX_RESPONSE_LEN = STUN_HEADER_LEN + 24 + STUN_FINGERPRINT_ATTR_LEN;
/**
 * Knit pads its Binding requests to this size, so an answer is never larger
 * than its request (no amplification). 72 = the 52-byte largest answer plus
 * room for a 16-byte SOFTWARE attribute should the observer ever add one.
 */
export const STUN_KNIT_REQUEST_LEN = 72;
/**
 * Longest message we parse (one unfragmented IPv6 minimum-MTU datagram). A
 * Binding exchange never needs more; bigger input is dropped before any work.
 */
export const STUN_MAX_LEN = 1280;
/** §14.14: SOFTWARE holds fewer than 128 characters (at most 763 bytes of UTF-8). */
export const STUN_SOFTWARE_MAX_CHARS = 127;

const FAMILY_V4 = 0x01;
const FAMILY_V6 = 0x02;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO-HDLC, the one zlib and Ethernet use), as FINGERPRINT requires. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Cheap demultiplexing test for the shared tunnel port (RFC 7983 §7 style):
 * the first two bits are zero and the magic cookie sits at offset 4. WireGuard
 * messages start with a type byte 1-4 and three zero bytes, so never match.
 */
export function isStunPacket(b: Uint8Array): boolean {
  return b.length >= STUN_HEADER_LEN && (b[0]! & 0xc0) === 0 &&
    b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42;
}

const pad4 = (n: number) => (n + 3) & ~3;

/** Lays out header, attributes and a trailing FINGERPRINT in one exactly-sized buffer. */
function writeMessage(type: number, txid: Uint8Array, attrs: readonly (readonly [number, Uint8Array])[]): Uint8Array {
  if (!(txid instanceof Uint8Array) || txid.length !== STUN_TXID_LEN) throw new RangeError('a STUN transaction id is 12 bytes');
  let len = STUN_HEADER_LEN + STUN_FINGERPRINT_ATTR_LEN;
  for (const [, value] of attrs) len += 4 + pad4(value.length);
  if (len > STUN_MAX_LEN) throw new RangeError(`a STUN message of ${len} bytes is longer than ${STUN_MAX_LEN}`);
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  view.setUint16(0, type);
  view.setUint16(2, len - STUN_HEADER_LEN); // §14.7: the length already counts FINGERPRINT when its CRC is taken
  view.setUint32(4, STUN_MAGIC_COOKIE);
  out.set(txid, 8);
  let o = STUN_HEADER_LEN;
  for (const [attrType, value] of attrs) {
    view.setUint16(o, attrType);
    view.setUint16(o + 2, value.length);
    out.set(value, o + 4);
    o += 4 + pad4(value.length); // padding stays zero
  }
  view.setUint16(o, STUN_ATTR_FINGERPRINT);
  view.setUint16(o + 2, 4);
  view.setUint32(o + 4, (crc32(out.subarray(0, o)) ^ STUN_FINGERPRINT_XOR) >>> 0);
  return out;
}

function softwareValue(software: string | boolean | undefined): Uint8Array | undefined {
  if (!software) return undefined;
  const text = software === true ? 'knit' : software;
  if ([...text].length > STUN_SOFTWARE_MAX_CHARS) throw new RangeError('SOFTWARE is fewer than 128 characters');
  return new TextEncoder().encode(text);
}

export interface BindingRequestOptions {
  /** SOFTWARE attribute: `true` writes "knit". Off by default: it only costs bytes. */
  software?: string | boolean;
  /** Pads the request (PADDING attribute) to at least this many bytes; Knit uses STUN_KNIT_REQUEST_LEN. */
  padTo?: number;
  /** RESPONSE-PORT (RFC 5780 §7.5): the answer should go to the source address at this port (1-65535). */
  responsePort?: number;
}

/**
 * A Binding request with the caller's transaction id (12 random bytes: the
 * caller owns randomness), optional SOFTWARE and PADDING, and FINGERPRINT.
 */
export function encodeBindingRequest(txid: Uint8Array, options: BindingRequestOptions = {}): Uint8Array {
  const attrs: [number, Uint8Array][] = [];
  const software = softwareValue(options.software);
  if (software) attrs.push([STUN_ATTR_SOFTWARE, software]);
  if (options.responsePort !== undefined) {
    const p = options.responsePort;
    if (!Number.isInteger(p) || p < 1 || p > 0xffff) throw new RangeError('responsePort must be an integer in 1..65535');
    attrs.push([STUN_ATTR_RESPONSE_PORT, Uint8Array.of(p >>> 8, p & 0xff, 0, 0)]);
  }
  const padTo = options.padTo ?? 0;
  if (!Number.isInteger(padTo) || padTo < 0 || padTo > STUN_MAX_LEN) throw new RangeError(`padTo must be an integer in 0..${STUN_MAX_LEN}`);
  let unpadded = STUN_HEADER_LEN + STUN_FINGERPRINT_ATTR_LEN;
  for (const [, value] of attrs) unpadded += 4 + pad4(value.length);
  if (padTo > unpadded) attrs.push([STUN_ATTR_PADDING, new Uint8Array(pad4(Math.max(0, padTo - unpadded - 4)))]);
  return writeMessage(STUN_BINDING_REQUEST, txid, attrs);
}

/** The 16-byte XOR mask of §14.2: the magic cookie, then the transaction id (IPv6 uses all of it). */
function xorMask(txid: Uint8Array): Uint8Array {
  const mask = new Uint8Array(16);
  new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE);
  mask.set(txid, 4);
  return mask;
}

/**
 * A Binding success response telling the client its `mapped` address
 * (XOR-MAPPED-ADDRESS), with FINGERPRINT. 40 bytes for IPv4, 52 for IPv6.
 */
export function encodeBindingResponse(txid: Uint8Array, mapped: UdpEndpoint, options: { software?: string | boolean } = {}): Uint8Array {
  if (!Number.isInteger(mapped.port) || mapped.port < 0 || mapped.port > 0xffff) throw new RangeError('port out of range');
  const ip = ipToBytes(mapped.address);
  const mask = xorMask(txid);
  const value = new Uint8Array(4 + ip.length);
  value[1] = ip.length === 4 ? FAMILY_V4 : FAMILY_V6;
  const xport = mapped.port ^ (STUN_MAGIC_COOKIE >>> 16);
  value[2] = xport >>> 8;
  value[3] = xport & 0xff;
  for (let i = 0; i < ip.length; i++) value[4 + i] = ip[i]! ^ mask[i]!;
  const attrs: [number, Uint8Array][] = [[STUN_ATTR_XOR_MAPPED_ADDRESS, value]];
  const software = softwareValue(options.software);
  if (software) attrs.push([STUN_ATTR_SOFTWARE, software]);
  return writeMessage(STUN_BINDING_SUCCESS, txid, attrs);
}

/** The size encodeBindingResponse gives for this mapped address (no SOFTWARE): 40 for IPv4, 52 for IPv6. */
export function bindingResponseLength(mappedAddress: string): number {
  return STUN_HEADER_LEN + 4 + 4 + (isIPv4(mappedAddress) ? 4 : 16) + STUN_FINGERPRINT_ATTR_LEN;
}

export interface StunMessage {
  type: number;
  txid: Uint8Array;
  /** From XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS when a server sent only that. */
  mapped?: UdpEndpoint;
  software?: string;
  /** RESPONSE-PORT (RFC 5780 §7.5), when the request carried one. */
  responsePort?: number;
  hasFingerprint: boolean;
}

/**
 * Parses any STUN message. Strict on framing: header, cookie, a length that
 * matches the datagram and is a multiple of 4, attribute TLVs inside it,
 * FINGERPRINT (when present) last and correct, well-formed address attributes.
 * Unknown attributes, MESSAGE-INTEGRITY included, are walked past; padding
 * content is ignored. Returns undefined for anything malformed, never throws,
 * and allocates at most the 12-byte id, one address and 127 characters.
 */
export function parseStun(b: Uint8Array): StunMessage | undefined {
  if (!isStunPacket(b) || b.length > STUN_MAX_LEN) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = view.getUint16(2);
  if (len % 4 !== 0 || STUN_HEADER_LEN + len !== b.length) return undefined;
  const txid = Uint8Array.prototype.slice.call(b, 8, STUN_HEADER_LEN); // a copy, even of a Buffer
  const msg: StunMessage = { type: view.getUint16(0), txid, hasFingerprint: false };
  let xorMapped: UdpEndpoint | undefined;
  let plainMapped: UdpEndpoint | undefined;
  let o = STUN_HEADER_LEN;
  while (o < b.length) {
    if (msg.hasFingerprint) return undefined; // §14.7: FINGERPRINT is last
    if (o + 4 > b.length) return undefined;
    const type = view.getUint16(o);
    const vlen = view.getUint16(o + 2);
    const start = o + 4;
    if (start + vlen > b.length) return undefined;
    const value = b.subarray(start, start + vlen);
    switch (type) {
      case STUN_ATTR_FINGERPRINT:
        if (vlen !== 4 || view.getUint32(start) !== ((crc32(b.subarray(0, o)) ^ STUN_FINGERPRINT_XOR) >>> 0)) return undefined;
        msg.hasFingerprint = true;
        break;
      case STUN_ATTR_XOR_MAPPED_ADDRESS:
        xorMapped = parseAddress(value, txid);
        if (!xorMapped) return undefined;
        break;
      case STUN_ATTR_MAPPED_ADDRESS:
        plainMapped = parseAddress(value, undefined);
        if (!plainMapped) return undefined;
        break;
      case STUN_ATTR_RESPONSE_PORT:
        if (vlen !== 4 || view.getUint16(start) === 0) return undefined;
        msg.responsePort = view.getUint16(start);
        break;
      case STUN_ATTR_SOFTWARE:
        // Informational only: bounded, and undecodable bytes become U+FFFD rather than an error.
        msg.software = [...new TextDecoder().decode(value)].slice(0, STUN_SOFTWARE_MAX_CHARS).join('');
        break;
      default:
        break; // PADDING, MESSAGE-INTEGRITY, ICE attributes, anything newer
    }
    o = start + pad4(vlen);
  }
  const mapped = xorMapped ?? plainMapped;
  if (mapped) msg.mapped = mapped;
  return msg;
}

/** A Binding request, or undefined (malformed, or some other STUN message). */
export function parseBindingRequest(b: Uint8Array): StunMessage | undefined {
  const m = parseStun(b);
  return m?.type === STUN_BINDING_REQUEST ? m : undefined;
}

/** A Binding success response that carries a mapped address, or undefined. */
export function parseBindingResponse(b: Uint8Array): (StunMessage & { mapped: UdpEndpoint }) | undefined {
  const m = parseStun(b);
  return m?.type === STUN_BINDING_SUCCESS && m.mapped ? (m as StunMessage & { mapped: UdpEndpoint }) : undefined;
}

/** (XOR-)MAPPED-ADDRESS value: 0x00 | family | port | 4 or 16 address bytes, exactly. */
function parseAddress(v: Uint8Array, xorTxid: Uint8Array | undefined): UdpEndpoint | undefined {
  if (v.length < 4) return undefined;
  const iplen = v[1] === FAMILY_V4 ? 4 : v[1] === FAMILY_V6 ? 16 : 0;
  if (iplen === 0 || v.length !== 4 + iplen) return undefined;
  let port = (v[2]! << 8) | v[3]!;
  // A copy, since it is XORed in place: on a node Buffer (what dgram delivers) slice() is a view,
  // and un-XORing the datagram itself broke its FINGERPRINT for the next reader.
  const ip = Uint8Array.prototype.slice.call(v, 4);
  if (xorTxid) {
    port ^= STUN_MAGIC_COOKIE >>> 16;
    const mask = xorMask(xorTxid);
    for (let i = 0; i < iplen; i++) ip[i]! ^= mask[i]!;
  }
  return { address: bytesToIp(ip), port };
}
