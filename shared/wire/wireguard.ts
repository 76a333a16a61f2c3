/**
 * Just enough of WireGuard's wire format (the WireGuard paper, §5.4) to tell,
 * from a handshake initiation WireGuard sent, which peer it is for — without
 * any secret. Used by the shared-mode waker: WireGuard's traffic to a peer
 * without a path is what asks for on-demand punching.
 *
 *   initiation (type 1, 148 bytes):
 *   type(1) | reserved(3) | sender(4) | ephemeral(32) | static(48) | timestamp(28) | mac1(16) | mac2(16)
 *
 *   mac1 = BLAKE2s-128(key = BLAKE2s-256("mac1----" || responder public key), bytes[0..116))
 */
import { blake2s } from '@noble/hashes/blake2.js';

export const WG_INITIATION_TYPE = 1;
export const WG_INITIATION_LEN = 148;
const MAC1_OFFSET = 116;
const MAC1_LEN = 16;
const LABEL_MAC1 = new TextEncoder().encode('mac1----');

/** The key WireGuard uses for mac1 on messages to `responderPublic` (cache it per peer). */
export function mac1Key(responderPublic: Uint8Array): Uint8Array {
  const input = new Uint8Array(LABEL_MAC1.length + responderPublic.length);
  input.set(LABEL_MAC1);
  input.set(responderPublic, LABEL_MAC1.length);
  return blake2s(input);
}

export function isHandshakeInitiation(b: Uint8Array): boolean {
  return b.length === WG_INITIATION_LEN && b[0] === WG_INITIATION_TYPE && b[1] === 0 && b[2] === 0 && b[3] === 0;
}

/** Whether this initiation's mac1 was made for the responder whose mac1 key is given. */
export function initiationIsFor(b: Uint8Array, key: Uint8Array): boolean {
  if (!isHandshakeInitiation(b)) return false;
  const want = blake2s(b.subarray(0, MAC1_OFFSET), { key, dkLen: MAC1_LEN });
  const got = b.subarray(MAC1_OFFSET, MAC1_OFFSET + MAC1_LEN);
  for (let i = 0; i < MAC1_LEN; i++) if (want[i] !== got[i]) return false;
  return true;
}

/** Builds mac1 for a message body (tests; and documents the construction). */
export function computeMac1(body116: Uint8Array, key: Uint8Array): Uint8Array {
  return blake2s(body116, { key, dkLen: MAC1_LEN });
}
