/**
 * STUN Binding (RFC 8489) — just what an endpoint observer and its clients need.
 *
 *    0                   1                   2                   3
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |0 0|     STUN Message Type     |         Message Length        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                  Magic Cookie = 0x2112A442                    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                 Transaction ID (96 bits)                      |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   | attributes: type (16) | length (16) | value, padded to 4 bytes |
 *
 * Attributes used: XOR-MAPPED-ADDRESS (0x0020, §14.2), SOFTWARE (0x8022),
 * FINGERPRINT (0x8028, CRC-32 of the message up to it XOR 0x5354554e, §14.7),
 * PADDING (0x0026, RFC 5780 §7.6): Knit pads its requests so that a response is
 * never larger than the request that caused it (no amplification).
 */
import { bytesToIp, ipToBytes } from '../net/ip-bytes.js';
import type { UdpEndpoint } from '../udp.js';

export const STUN_HEADER_LEN = 20;
export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_TXID_LEN = 12;
export const STUN_BINDING_REQUEST = 0x0001;
export const STUN_BINDING_SUCCESS = 0x0101;
export const STUN_ATTR_MAPPED_ADDRESS = 0x0001;
export const STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020;
export const STUN_ATTR_PADDING = 0x0026;
export const STUN_ATTR_SOFTWARE = 0x8022;
export const STUN_ATTR_FINGERPRINT = 0x8028;
export const STUN_FINGERPRINT_XOR = 0x5354554e;
/** A response with an IPv6 XOR-MAPPED-ADDRESS, SOFTWARE "knit" and FINGERPRINT is 64 bytes; requests are padded to this. */
export const STUN_KNIT_REQUEST_LEN = 72;
/** Longest STUN message we parse; anything bigger is not a binding exchange. */
export const STUN_MAX_LEN = 1280;

const SOFTWARE = new TextEncoder().encode('knit');

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Cheap demultiplexing test for a shared port: first two bits zero and the magic cookie. */
export function isStunPacket(b: Uint8Array): boolean {
  return b.length >= STUN_HEADER_LEN && (b[0]! & 0xc0) === 0 &&
    b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42;
}

class Writer {
  private parts: number[] = [];
  u8(v: number) { this.parts.push(v & 0xff); }
  u16(v: number) { this.u8(v >>> 8); this.u8(v); }
  u32(v: number) { this.u16(v >>> 16); this.u16(v & 0xffff); }
  bytes(b: Uint8Array) { for (const x of b) this.parts.push(x); }
  attr(type: number, value: Uint8Array) {
    this.u16(type); this.u16(value.length); this.bytes(value);
    while (this.parts.length % 4) this.u8(0);
  }
  get length() { return this.parts.length; }
  done(): Uint8Array { return Uint8Array.from(this.parts); }
}

function finish(type: number, txid: Uint8Array, attrs: (w: Writer) => void): Uint8Array {
  if (txid.length !== STUN_TXID_LEN) throw new RangeError('STUN transaction id must be 12 bytes');
  const w = new Writer();
  w.u16(type); w.u16(0); w.u32(STUN_MAGIC_COOKIE); w.bytes(txid);
  attrs(w);
  const body = w.done();
  const out = new Uint8Array(body.length + 8);
  out.set(body);
  const view = new DataView(out.buffer);
  view.setUint16(2, out.length - STUN_HEADER_LEN); // length includes the FINGERPRINT attribute
  view.setUint16(body.length, STUN_ATTR_FINGERPRINT);
  view.setUint16(body.length + 2, 4);
  view.setUint32(body.length + 4, (crc32(out.subarray(0, body.length)) ^ STUN_FINGERPRINT_XOR) >>> 0);
  return out;
}

/** A binding request; `padTo` pads it (PADDING attribute) to at least that many bytes. */
export function encodeBindingRequest(txid: Uint8Array, options: { software?: boolean; padTo?: number } = {}): Uint8Array {
  return finish(STUN_BINDING_REQUEST, txid, (w) => {
    if (options.software) w.attr(STUN_ATTR_SOFTWARE, SOFTWARE);
    const pad = (options.padTo ?? 0) - (w.length + 8 + 4);
    if (pad > 0) w.attr(STUN_ATTR_PADDING, new Uint8Array(Math.ceil(pad / 4) * 4));
  });
}

/** A binding success response carrying XOR-MAPPED-ADDRESS of `mapped`. */
export function encodeBindingResponse(txid: Uint8Array, mapped: UdpEndpoint, options: { software?: boolean } = {}): Uint8Array {
  const ip = ipToBytes(mapped.address);
  const value = new Uint8Array(4 + ip.length);
  value[1] = ip.length === 4 ? 0x01 : 0x02;
  const xport = mapped.port ^ (STUN_MAGIC_COOKIE >>> 16);
  value[2] = xport >>> 8; value[3] = xport & 0xff;
  const mask = new Uint8Array(16);
  new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE);
  mask.set(txid, 4);
  for (let i = 0; i < ip.length; i++) value[4 + i] = ip[i]! ^ mask[i]!;
  return finish(STUN_BINDING_SUCCESS, txid, (w) => {
    w.attr(STUN_ATTR_XOR_MAPPED_ADDRESS, value);
    if (options.software) w.attr(STUN_ATTR_SOFTWARE, SOFTWARE);
  });
}

export interface StunMessage {
  type: number;
  txid: Uint8Array;
  mapped?: UdpEndpoint; // from XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from old servers)
  software?: string;
  hasFingerprint: boolean;
}

/**
 * Parses a STUN message. Strict on framing (header, cookie, lengths, TLV
 * bounds, FINGERPRINT when present); unknown attributes are walked past.
 * Returns undefined for anything malformed — never throws.
 */
export function parseStun(b: Uint8Array): StunMessage | undefined {
  if (!isStunPacket(b) || b.length > STUN_MAX_LEN) return undefined;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = view.getUint16(0);
  const len = view.getUint16(2);
  if (len % 4 !== 0 || STUN_HEADER_LEN + len !== b.length) return undefined;
  const txid = b.slice(8, 20);
  const msg: StunMessage = { type, txid, hasFingerprint: false };
  let o = STUN_HEADER_LEN;
  while (o < b.length) {
    if (o + 4 > b.length) return undefined;
    const at = view.getUint16(o);
    const alen = view.getUint16(o + 2);
    const vstart = o + 4;
    if (vstart + alen > b.length) return undefined;
    const value = b.subarray(vstart, vstart + alen);
    if (msg.hasFingerprint) return undefined; // FINGERPRINT must be last
    if (at === STUN_ATTR_FINGERPRINT) {
      if (alen !== 4) return undefined;
      const want = (crc32(b.subarray(0, o)) ^ STUN_FINGERPRINT_XOR) >>> 0;
      if (view.getUint32(vstart) !== want) return undefined;
      msg.hasFingerprint = true;
    } else if (at === STUN_ATTR_XOR_MAPPED_ADDRESS || (at === STUN_ATTR_MAPPED_ADDRESS && !msg.mapped)) {
      const ep = parseAddress(value, at === STUN_ATTR_XOR_MAPPED_ADDRESS ? txid : undefined);
      if (!ep) return undefined;
      msg.mapped = ep;
    } else if (at === STUN_ATTR_SOFTWARE) {
      msg.software = new TextDecoder().decode(value).slice(0, 128);
    }
    o = vstart + Math.ceil(alen / 4) * 4;
  }
  return msg;
}

function parseAddress(v: Uint8Array, xorTxid: Uint8Array | undefined): UdpEndpoint | undefined {
  if (v.length < 4) return undefined;
  const family = v[1];
  const iplen = family === 0x01 ? 4 : family === 0x02 ? 16 : 0;
  if (!iplen || v.length !== 4 + iplen) return undefined;
  let port = (v[2]! << 8) | v[3]!;
  const ip = v.slice(4);
  if (xorTxid) {
    port ^= STUN_MAGIC_COOKIE >>> 16;
    const mask = new Uint8Array(16);
    new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE);
    mask.set(xorTxid, 4);
    for (let i = 0; i < iplen; i++) ip[i]! ^= mask[i]!;
  }
  return { address: bytesToIp(ip), port };
}
