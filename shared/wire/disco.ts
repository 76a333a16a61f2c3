/**
 * Disco: Knit's path-discovery packets, sent on the tunnel's UDP port beside
 * WireGuard and STUN.
 *
 *   0      6                        38                       62
 *   +------+------------------------+------------------------+---------------------+
 *   | magic| sender disco key (32)  | nonce (24)             | sealed box          |
 *   +------+------------------------+------------------------+---------------------+
 *   magic = "KNIT" 0xF0 0x9F. It can't be mistaken for WireGuard (type byte 1–4,
 *   then three zero bytes) nor STUN (first two bits 00, cookie at offset 4).
 *
 *   sealed box = XChaCha20-Poly1305 under deriveSharedKey(own disco key, peer disco
 *   key, "disco"), nonce as above, the 38-byte header as associated data:
 *     type (1) | version (1) | body
 *       ping          1: txid (12) | sender node key (32) | padding (zeros; a path MTU probe)
 *       pong          2: txid (12) | observed source (16-byte IP + 2-byte port) | padding
 *       call-me-maybe 3: up to DISCO_MAX_ENDPOINTS × (16-byte IP + 2-byte port)
 *
 *       disco-key     4: the sender's current disco key (32) | its epoch (8, big-endian ms)
 *                        — later keys have later epochs, so a replayed older announcement is refused
 *
 * Node-sealed packets: magic "KNIT" 0xF0 0xA0, the sender's NODE key in the key
 * field, sealed under HKDF(X25519(sender node, receiver node), "disco-node"). Only
 * `disco-key` travels this way: it tells a peer our new disco key after a restart
 * when the coordinator can't (it is down), and only the holder of the node key
 * can make it. Node keys don't change across restarts, so this always opens.
 *
 * A pong (DISCO_PONG_LEN = 110 bytes on the wire) is always smaller than the
 * ping it answers (DISCO_MIN_PING_LEN = 124 bytes or more: the decoder refuses
 * a shorter ping body), so answering can never amplify. A padded ping is a path
 * MTU probe (agent/disco/path-mtu.ts): its pong is padded to the ping's length
 * on the wire (discoPongPadding), never beyond, so the pair proves that packets
 * of that size cross in both directions. Padding is zeros; receivers ignore
 * trailing bytes, so an older peer answers a probe with a short pong, which the
 * prober refuses as proof. Decoders never throw: malformed or unauthenticated
 * input returns undefined.
 */
import { KEY_LEN } from '../crypto/keys.js';
import { deriveSharedKey, openWithKey, SEAL_NONCE_LEN, SEAL_TAG_LEN, sealWithKey } from '../crypto/seal.js';
import { bytesToEndpoint, endpointToBytes, ENDPOINT_BYTES_LEN } from '../net/ip-bytes.js';
import type { UdpEndpoint } from '../udp.js';

export const DISCO_MAGIC = Uint8Array.from([0x4b, 0x4e, 0x49, 0x54, 0xf0, 0x9f]);
export const DISCO_MAGIC_LEN = 6;
export const DISCO_HEADER_LEN = DISCO_MAGIC_LEN + KEY_LEN + SEAL_NONCE_LEN; // 62
export const DISCO_VERSION = 1;
export const DISCO_TXID_LEN = 12;
export const DISCO_MAX_ENDPOINTS = 16;
/** The magic of node-sealed packets (see above). */
export const DISCO_MAGIC_NODE = Uint8Array.from([0x4b, 0x4e, 0x49, 0x54, 0xf0, 0xa0]);
/**
 * Largest disco packet accepted: the biggest path MTU probe, a whole 1500-byte IPv4 packet less
 * its IP (20) and UDP (8) headers. A full call-me-maybe (368 bytes) fits with room to spare.
 */
export const DISCO_MAX_LEN = 1472;

/** A sealed pong on the wire: header + type/version + txid + observed endpoint + tag. */
export const DISCO_PONG_LEN = DISCO_HEADER_LEN + 2 + DISCO_TXID_LEN + ENDPOINT_BYTES_LEN + SEAL_TAG_LEN; // 110
/** The shortest sealed ping the decoder accepts: header + type/version + txid + node key + tag. */
export const DISCO_MIN_PING_LEN = DISCO_HEADER_LEN + 2 + DISCO_TXID_LEN + KEY_LEN + SEAL_TAG_LEN; // 124
// The no-amplification rule as an invariant of the format: a change that breaks it fails at load.
if (DISCO_PONG_LEN > DISCO_MIN_PING_LEN) throw new Error('disco: a pong must never be larger than a ping');

/** The padding that makes a ping `wireLen` bytes long on the wire (a path MTU probe of that size). */
export function discoPingPadding(wireLen: number): number {
  if (!Number.isInteger(wireLen) || wireLen < DISCO_MIN_PING_LEN || wireLen > DISCO_MAX_LEN) throw new RangeError('probe length out of range');
  return wireLen - DISCO_MIN_PING_LEN;
}

/**
 * The padding of the pong that answers a ping of `pingLen` bytes on the wire: a padded ping (a
 * path MTU probe) gets a pong of exactly its length, an unpadded one the plain DISCO_PONG_LEN.
 */
export function discoPongPadding(pingLen: number): number {
  return pingLen > DISCO_MIN_PING_LEN && pingLen <= DISCO_MAX_LEN ? pingLen - DISCO_PONG_LEN : 0;
}

export const DISCO_TYPE_PING = 1;
export const DISCO_TYPE_PONG = 2;
export const DISCO_TYPE_CALL_ME_MAYBE = 3;
export const DISCO_TYPE_DISCO_KEY = 4;

export type DiscoMessage =
  | { type: 'ping'; txid: Uint8Array; nodeKey: Uint8Array; padding?: number }
  | { type: 'disco-key'; discoKey: Uint8Array; epoch: number }
  | { type: 'pong'; txid: Uint8Array; src: UdpEndpoint; padding?: number }
  | { type: 'call-me-maybe'; endpoints: UdpEndpoint[] };

/** Which kind of disco packet this is by its magic: sealed with disco keys, with node keys, or not disco. */
export function discoPacketKind(b: Uint8Array): 'disco' | 'node' | undefined {
  if (b.length < DISCO_HEADER_LEN + 2 + SEAL_TAG_LEN) return undefined;
  for (let i = 0; i < DISCO_MAGIC_LEN - 1; i++) if (b[i] !== DISCO_MAGIC[i]) return undefined;
  const last = b[DISCO_MAGIC_LEN - 1];
  return last === DISCO_MAGIC[DISCO_MAGIC_LEN - 1] ? 'disco' : last === DISCO_MAGIC_NODE[DISCO_MAGIC_LEN - 1] ? 'node' : undefined;
}

export function isDiscoPacket(b: Uint8Array): boolean {
  return discoPacketKind(b) !== undefined;
}

/** The plaintext (type | version | body) of a message. */
export function encodeDiscoPlaintext(m: DiscoMessage): Uint8Array {
  switch (m.type) {
    case 'ping': {
      if (m.txid.length !== DISCO_TXID_LEN || m.nodeKey.length !== KEY_LEN) throw new RangeError('bad ping fields');
      const out = new Uint8Array(2 + DISCO_TXID_LEN + KEY_LEN + (m.padding ?? 0));
      out[0] = DISCO_TYPE_PING; out[1] = DISCO_VERSION;
      out.set(m.txid, 2);
      out.set(m.nodeKey, 2 + DISCO_TXID_LEN);
      return out;
    }
    case 'disco-key': {
      if (m.discoKey.length !== KEY_LEN) throw new RangeError('bad disco key');
      if (!Number.isSafeInteger(m.epoch) || m.epoch < 0) throw new RangeError('bad disco key epoch');
      const out = new Uint8Array(2 + KEY_LEN + 8);
      out[0] = DISCO_TYPE_DISCO_KEY; out[1] = DISCO_VERSION;
      out.set(m.discoKey, 2);
      new DataView(out.buffer).setBigUint64(2 + KEY_LEN, BigInt(m.epoch));
      return out;
    }
    case 'pong': {
      if (m.txid.length !== DISCO_TXID_LEN) throw new RangeError('bad pong txid');
      const out = new Uint8Array(2 + DISCO_TXID_LEN + ENDPOINT_BYTES_LEN + (m.padding ?? 0));
      out[0] = DISCO_TYPE_PONG; out[1] = DISCO_VERSION;
      out.set(m.txid, 2);
      out.set(endpointToBytes(m.src), 2 + DISCO_TXID_LEN);
      return out;
    }
    case 'call-me-maybe': {
      if (m.endpoints.length > DISCO_MAX_ENDPOINTS) throw new RangeError('too many endpoints');
      const out = new Uint8Array(2 + ENDPOINT_BYTES_LEN * m.endpoints.length);
      out[0] = DISCO_TYPE_CALL_ME_MAYBE; out[1] = DISCO_VERSION;
      m.endpoints.forEach((ep, i) => out.set(endpointToBytes(ep), 2 + i * ENDPOINT_BYTES_LEN));
      return out;
    }
  }
}

/** Parses a plaintext; strict on lengths of known fields, lenient on trailing bytes (newer versions). */
export function decodeDiscoPlaintext(p: Uint8Array): DiscoMessage | undefined {
  if (p.length < 2 || p[1]! < 1) return undefined;
  const body = p.subarray(2);
  switch (p[0]) {
    case DISCO_TYPE_PING:
      if (body.length < DISCO_TXID_LEN + KEY_LEN) return undefined;
      return { type: 'ping', txid: body.slice(0, DISCO_TXID_LEN), nodeKey: body.slice(DISCO_TXID_LEN, DISCO_TXID_LEN + KEY_LEN) };
    case DISCO_TYPE_DISCO_KEY:
    {
      if (body.length < KEY_LEN + 8) return undefined;
      const epoch = new DataView(body.buffer, body.byteOffset + KEY_LEN, 8).getBigUint64(0);
      if (epoch > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
      return { type: 'disco-key', discoKey: body.slice(0, KEY_LEN), epoch: Number(epoch) };
    }
    case DISCO_TYPE_PONG: {
      if (body.length < DISCO_TXID_LEN + ENDPOINT_BYTES_LEN) return undefined;
      const src = bytesToEndpoint(body.subarray(DISCO_TXID_LEN, DISCO_TXID_LEN + ENDPOINT_BYTES_LEN));
      return src && { type: 'pong', txid: body.slice(0, DISCO_TXID_LEN), src };
    }
    case DISCO_TYPE_CALL_ME_MAYBE: {
      if (body.length % ENDPOINT_BYTES_LEN !== 0 || body.length / ENDPOINT_BYTES_LEN > DISCO_MAX_ENDPOINTS) return undefined;
      const endpoints: UdpEndpoint[] = [];
      for (let o = 0; o < body.length; o += ENDPOINT_BYTES_LEN) {
        const ep = bytesToEndpoint(body.subarray(o, o + ENDPOINT_BYTES_LEN));
        if (!ep) return undefined;
        endpoints.push(ep);
      }
      return { type: 'call-me-maybe', endpoints };
    }
    default:
      return undefined;
  }
}

/** The key two node-key holders share for node-sealed packets. */
export function discoNodeKey(ownNodePrivate: Uint8Array, peerNodePublic: Uint8Array): Uint8Array | undefined {
  try {
    return deriveSharedKey(ownNodePrivate, peerNodePublic, 'disco-node');
  } catch {
    return undefined;
  }
}

/** The key two disco key holders share; the core caches it per peer (an X25519 per packet is the cost). */
export function discoSharedKey(ownPrivate: Uint8Array, peerPublic: Uint8Array): Uint8Array | undefined {
  try {
    return deriveSharedKey(ownPrivate, peerPublic, 'disco');
  } catch {
    return undefined; // low-order key
  }
}

/** Seals a message; `magic` DISCO_MAGIC_NODE makes a node-sealed packet (senderPublic is then the node key). */
export function sealDisco(m: DiscoMessage, senderPublic: Uint8Array, sharedKey: Uint8Array, nonce: Uint8Array, magic = DISCO_MAGIC): Uint8Array {
  if (senderPublic.length !== KEY_LEN || nonce.length !== SEAL_NONCE_LEN) throw new RangeError('bad disco header fields');
  const header = new Uint8Array(DISCO_HEADER_LEN);
  header.set(magic, 0);
  header.set(senderPublic, DISCO_MAGIC_LEN);
  header.set(nonce, DISCO_MAGIC_LEN + KEY_LEN);
  const sealed = sealWithKey(sharedKey, nonce, encodeDiscoPlaintext(m), header);
  const out = new Uint8Array(DISCO_HEADER_LEN + sealed.length);
  out.set(header);
  out.set(sealed, DISCO_HEADER_LEN);
  return out;
}

/** The sender's disco key, read before authentication so the receiver can pick the shared key. */
export function discoSender(b: Uint8Array): Uint8Array | undefined {
  if (!isDiscoPacket(b) || b.length > DISCO_MAX_LEN) return undefined;
  return b.slice(DISCO_MAGIC_LEN, DISCO_MAGIC_LEN + KEY_LEN);
}

export function openDisco(b: Uint8Array, sharedKey: Uint8Array): DiscoMessage | undefined {
  if (!isDiscoPacket(b) || b.length > DISCO_MAX_LEN) return undefined;
  const header = b.subarray(0, DISCO_HEADER_LEN);
  const nonce = b.subarray(DISCO_MAGIC_LEN + KEY_LEN, DISCO_HEADER_LEN);
  const plain = openWithKey(sharedKey, nonce, b.subarray(DISCO_HEADER_LEN), header);
  return plain && decodeDiscoPlaintext(plain);
}
