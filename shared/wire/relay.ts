/**
 * Relay control messages: how a node asks a relay for a forwarding port
 * towards a peer (alloc) and ties that port to its tunnel's NAT mapping
 * (bind). WireGuard packets themselves travel to the relay unchanged; only
 * these small sealed messages are Knit's own. See docs/relay.md.
 *
 *   0      6                        38                       62
 *   +------+------------------------+------------------------+---------------------+
 *   | magic| sender key (32)        | nonce (24)             | sealed box          |
 *   +------+------------------------+------------------------+---------------------+
 *   magic = "KNIT" 0xF0 0xB0: the first four bytes are disco's, so the shared-port
 *   nftables rule that steers "KNIT" to the agent steers these too; the last byte
 *   tells them from disco (0x9F, 0xA0). Never WireGuard (type 1–4 + three zero
 *   bytes) nor STUN (first two bits 00).
 *
 *   sender key = the node key (node → relay) or the relay key (relay → node).
 *   sealed box = XChaCha20-Poly1305 under HKDF(X25519(node, relay), "relay"),
 *   the 62-byte header as associated data; plaintext type (1) | version (1) | body:
 *     1 alloc     txid (12) | peer node key (32)          node → relay control port
 *     2 alloc-ok  txid (12) | port (2)                    relay → node
 *     3 bind      txid (12) | port (2) | counter (8)      node → the allocated port
 *     4 bind-ok   txid (12) [| observed port (2)]         relay → node, from that port
 *     5 error     txid (12) | code (1)                    relay → node
 *     6 ws-hello  challenge (32)                          node → relay, first WebSocket frame
 *     7 ws-ok     (empty)                                 relay → node over WebSocket
 *
 * Every answer is smaller than the request it answers (alloc 46 → 16, bind 24 →
 * 16 or 15 plaintext bytes), so a relay can't be used to amplify. bind-ok's observed port
 * is the source port the bind came from: the NAT port a *new* flow from the tunnel port
 * gets, which can differ from what STUN (an old flow) sees — after a clash, Linux
 * masquerade gives every new flow of that source the newest flow's port (docs/disco.md).
 * Older agents ignore it (decoders take trailing bytes from newer versions). A bind's
 * counter must grow (the node's clock in ms), so an old bind replayed from
 * another address can't steal the port.
 *
 * WebSocket data frames (fallback when UDP to the relay fails) are not sealed
 * (WireGuard's ciphertext needs no second layer; the socket was authenticated
 * by ws-hello): peer node key (32) | WireGuard packet.
 *
 * Decoders never throw: malformed or unauthenticated input returns undefined.
 */
import { KEY_LEN } from '../crypto/keys.js';
import { deriveSharedKey, openWithKey, SEAL_NONCE_LEN, SEAL_TAG_LEN, sealWithKey } from '../crypto/seal.js';

export const RELAY_MAGIC = Uint8Array.from([0x4b, 0x4e, 0x49, 0x54, 0xf0, 0xb0]);
export const RELAY_MAGIC_LEN = 6;
export const RELAY_HEADER_LEN = RELAY_MAGIC_LEN + KEY_LEN + SEAL_NONCE_LEN; // 62
export const RELAY_VERSION = 1;
export const RELAY_TXID_LEN = 12;
export const RELAY_WS_CHALLENGE_LEN = 32;
/** Largest control packet accepted: the biggest message plus slack for newer versions' fields. */
export const RELAY_MAX_LEN = 256;

export const RELAY_TYPE_ALLOC = 1;
export const RELAY_TYPE_ALLOC_OK = 2;
export const RELAY_TYPE_BIND = 3;
export const RELAY_TYPE_BIND_OK = 4;
export const RELAY_TYPE_ERROR = 5;
export const RELAY_TYPE_WS_HELLO = 6;
export const RELAY_TYPE_WS_OK = 7;

/** Why a relay refused (the `error` message's code). */
export const RELAY_ERRORS = {
  1: 'not-member', // the sender's node key is not a member of the mesh
  2: 'peer-not-member', // the peer asked for is not a member
  3: 'capacity', // the relay has no port left
  4: 'not-your-port', // bind to a port that is not the sender's
  5: 'stale', // a bind whose counter is not newer than the last one accepted
} as const;
export type RelayErrorCode = keyof typeof RELAY_ERRORS;

export type RelayMessage =
  | { type: 'alloc'; txid: Uint8Array; peer: Uint8Array }
  | { type: 'alloc-ok'; txid: Uint8Array; port: number }
  | { type: 'bind'; txid: Uint8Array; port: number; counter: number }
  | { type: 'bind-ok'; txid: Uint8Array; observedPort?: number }
  | { type: 'error'; txid: Uint8Array; code: RelayErrorCode }
  | { type: 'ws-hello'; challenge: Uint8Array }
  | { type: 'ws-ok' };

export function isRelayPacket(b: Uint8Array): boolean {
  if (b.length < RELAY_HEADER_LEN + 2 + SEAL_TAG_LEN) return false;
  for (let i = 0; i < RELAY_MAGIC_LEN; i++) if (b[i] !== RELAY_MAGIC[i]) return false;
  return true;
}

const isPort = (p: number) => Number.isInteger(p) && p >= 1 && p <= 65535;

export function encodeRelayPlaintext(m: RelayMessage): Uint8Array {
  const head = (type: number, bodyLen: number) => {
    const out = new Uint8Array(2 + bodyLen);
    out[0] = type;
    out[1] = RELAY_VERSION;
    return out;
  };
  const txid = (t: Uint8Array) => {
    if (t.length !== RELAY_TXID_LEN) throw new RangeError(`txid must be ${RELAY_TXID_LEN} bytes`);
    return t;
  };
  switch (m.type) {
    case 'alloc': {
      if (m.peer.length !== KEY_LEN) throw new RangeError('bad peer key');
      const out = head(RELAY_TYPE_ALLOC, RELAY_TXID_LEN + KEY_LEN);
      out.set(txid(m.txid), 2);
      out.set(m.peer, 2 + RELAY_TXID_LEN);
      return out;
    }
    case 'alloc-ok': {
      if (!isPort(m.port)) throw new RangeError('bad port');
      const out = head(RELAY_TYPE_ALLOC_OK, RELAY_TXID_LEN + 2);
      out.set(txid(m.txid), 2);
      new DataView(out.buffer).setUint16(2 + RELAY_TXID_LEN, m.port);
      return out;
    }
    case 'bind': {
      if (!isPort(m.port) || !Number.isSafeInteger(m.counter) || m.counter < 0) throw new RangeError('bad bind fields');
      const out = head(RELAY_TYPE_BIND, RELAY_TXID_LEN + 10);
      out.set(txid(m.txid), 2);
      const v = new DataView(out.buffer);
      v.setUint16(2 + RELAY_TXID_LEN, m.port);
      v.setBigUint64(4 + RELAY_TXID_LEN, BigInt(m.counter));
      return out;
    }
    case 'bind-ok': {
      if (m.observedPort !== undefined && !isPort(m.observedPort)) throw new RangeError('bad observed port');
      const out = head(RELAY_TYPE_BIND_OK, RELAY_TXID_LEN + (m.observedPort === undefined ? 0 : 2));
      out.set(txid(m.txid), 2);
      if (m.observedPort !== undefined) new DataView(out.buffer).setUint16(2 + RELAY_TXID_LEN, m.observedPort);
      return out;
    }
    case 'error': {
      if (!(m.code in RELAY_ERRORS)) throw new RangeError('bad error code');
      const out = head(RELAY_TYPE_ERROR, RELAY_TXID_LEN + 1);
      out.set(txid(m.txid), 2);
      out[2 + RELAY_TXID_LEN] = m.code;
      return out;
    }
    case 'ws-hello': {
      if (m.challenge.length !== RELAY_WS_CHALLENGE_LEN) throw new RangeError('bad challenge');
      const out = head(RELAY_TYPE_WS_HELLO, RELAY_WS_CHALLENGE_LEN);
      out.set(m.challenge, 2);
      return out;
    }
    case 'ws-ok':
      return head(RELAY_TYPE_WS_OK, 0);
  }
}

/** Strict on the lengths of known fields, lenient on trailing bytes (newer versions). */
export function decodeRelayPlaintext(p: Uint8Array): RelayMessage | undefined {
  if (p.length < 2 || p[1]! < 1) return undefined;
  const body = p.subarray(2);
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const txid = () => body.slice(0, RELAY_TXID_LEN);
  switch (p[0]) {
    case RELAY_TYPE_ALLOC:
      if (body.length < RELAY_TXID_LEN + KEY_LEN) return undefined;
      return { type: 'alloc', txid: txid(), peer: body.slice(RELAY_TXID_LEN, RELAY_TXID_LEN + KEY_LEN) };
    case RELAY_TYPE_ALLOC_OK: {
      if (body.length < RELAY_TXID_LEN + 2) return undefined;
      const port = v.getUint16(RELAY_TXID_LEN);
      return isPort(port) ? { type: 'alloc-ok', txid: txid(), port } : undefined;
    }
    case RELAY_TYPE_BIND: {
      if (body.length < RELAY_TXID_LEN + 10) return undefined;
      const port = v.getUint16(RELAY_TXID_LEN);
      const counter = v.getBigUint64(RELAY_TXID_LEN + 2);
      if (!isPort(port) || counter > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
      return { type: 'bind', txid: txid(), port, counter: Number(counter) };
    }
    case RELAY_TYPE_BIND_OK:
      if (body.length < RELAY_TXID_LEN) return undefined;
      if (body.length < RELAY_TXID_LEN + 2) return { type: 'bind-ok', txid: txid() };
      return { type: 'bind-ok', txid: txid(), observedPort: v.getUint16(RELAY_TXID_LEN) };
    case RELAY_TYPE_ERROR: {
      if (body.length < RELAY_TXID_LEN + 1) return undefined;
      const code = body[RELAY_TXID_LEN]!;
      return code in RELAY_ERRORS ? { type: 'error', txid: txid(), code: code as RelayErrorCode } : undefined;
    }
    case RELAY_TYPE_WS_HELLO:
      if (body.length < RELAY_WS_CHALLENGE_LEN) return undefined;
      return { type: 'ws-hello', challenge: body.slice(0, RELAY_WS_CHALLENGE_LEN) };
    case RELAY_TYPE_WS_OK:
      return { type: 'ws-ok' };
    default:
      return undefined;
  }
}

/** The key a node and a relay share (each side computes it from its private key and the other's public key). */
export function relaySharedKey(ownPrivate: Uint8Array, otherPublic: Uint8Array): Uint8Array | undefined {
  try {
    return deriveSharedKey(ownPrivate, otherPublic, 'relay');
  } catch {
    return undefined; // low-order key
  }
}

export function sealRelay(m: RelayMessage, senderPublic: Uint8Array, sharedKey: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (senderPublic.length !== KEY_LEN || nonce.length !== SEAL_NONCE_LEN) throw new RangeError('bad relay header fields');
  const header = new Uint8Array(RELAY_HEADER_LEN);
  header.set(RELAY_MAGIC, 0);
  header.set(senderPublic, RELAY_MAGIC_LEN);
  header.set(nonce, RELAY_MAGIC_LEN + KEY_LEN);
  const sealed = sealWithKey(sharedKey, nonce, encodeRelayPlaintext(m), header);
  const out = new Uint8Array(RELAY_HEADER_LEN + sealed.length);
  out.set(header);
  out.set(sealed, RELAY_HEADER_LEN);
  return out;
}

/** The sender's key, read before authentication so the receiver can pick the shared key. */
export function relaySender(b: Uint8Array): Uint8Array | undefined {
  if (!isRelayPacket(b) || b.length > RELAY_MAX_LEN) return undefined;
  return b.slice(RELAY_MAGIC_LEN, RELAY_MAGIC_LEN + KEY_LEN);
}

export function openRelay(b: Uint8Array, sharedKey: Uint8Array): RelayMessage | undefined {
  if (!isRelayPacket(b) || b.length > RELAY_MAX_LEN) return undefined;
  const header = b.subarray(0, RELAY_HEADER_LEN);
  const nonce = b.subarray(RELAY_MAGIC_LEN + KEY_LEN, RELAY_HEADER_LEN);
  const plain = openWithKey(sharedKey, nonce, b.subarray(RELAY_HEADER_LEN), header);
  return plain && decodeRelayPlaintext(plain);
}

/** Whether a datagram looks like a WireGuard message (type 1–4, three zero bytes, minimum size): the only thing a relay forwards. */
export function isWireguardShaped(b: Uint8Array): boolean {
  // The smallest WireGuard message is a keepalive: 16-byte header + 16-byte tag = 32 bytes.
  return b.length >= 32 && b[0]! >= 1 && b[0]! <= 4 && b[1] === 0 && b[2] === 0 && b[3] === 0;
}

/** A WebSocket data frame: the other end's node key, then the WireGuard packet. */
export function encodeWsData(peer: Uint8Array, packet: Uint8Array): Uint8Array {
  if (peer.length !== KEY_LEN) throw new RangeError('bad peer key');
  const out = new Uint8Array(KEY_LEN + packet.length);
  out.set(peer);
  out.set(packet, KEY_LEN);
  return out;
}

export function decodeWsData(b: Uint8Array): { peer: Uint8Array; packet: Uint8Array } | undefined {
  if (b.length < KEY_LEN + 32 || b.length > KEY_LEN + 65535) return undefined;
  const packet = b.subarray(KEY_LEN);
  return isWireguardShaped(packet) ? { peer: b.subarray(0, KEY_LEN), packet } : undefined;
}
