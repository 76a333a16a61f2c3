/**
 * Sealing helpers built on @noble: a box between two X25519 keys
 * (XChaCha20-Poly1305 under a key derived with HKDF-SHA256 from the DH
 * result and a purpose label), keyed MACs for proofs of key possession, and
 * hashing / constant-time comparison for secrets kept at rest.
 *
 * Every derived key is bound to a purpose label so a value computed for one
 * protocol (disco, control auth, join proof) can never be replayed in another.
 */
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { randomBytes as nobleRandomBytes } from '@noble/hashes/utils.js';
import { sharedSecret } from './keys.js';
import type { RandomBytes } from '../clock.js';

export const SEAL_NONCE_LEN = 24;
export const SEAL_TAG_LEN = 16;

export const defaultRandomBytes: RandomBytes = (n) => nobleRandomBytes(n);

const utf8 = new TextEncoder();

/** A 32-byte symmetric key for `purpose`, shared by the holders of the two key pairs. */
export function deriveSharedKey(privateKey: Uint8Array, peerPublicKey: Uint8Array, purpose: string): Uint8Array {
  const dh = sharedSecret(privateKey, peerPublicKey);
  return hkdf(sha256, dh, utf8.encode('knit/v1'), utf8.encode(purpose), 32);
}

/** Seals `plaintext` with XChaCha20-Poly1305; returns ciphertext||tag. */
export function sealWithKey(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Uint8Array {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** Opens a sealed box; returns undefined when authentication fails (never throws on bad input). */
export function openWithKey(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Uint8Array | undefined {
  if (nonce.length !== SEAL_NONCE_LEN || sealed.length < SEAL_TAG_LEN) return undefined;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    return undefined;
  }
}

/** HMAC-SHA256 of the concatenated parts (each length-prefixed so parts can't slide). */
export function mac(key: Uint8Array, ...parts: (Uint8Array | string)[]): Uint8Array {
  const h = hmac.create(sha256, key);
  for (const p of parts) {
    const bytes = typeof p === 'string' ? utf8.encode(p) : p;
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, bytes.length);
    h.update(len);
    h.update(bytes);
  }
  return h.digest();
}

export function sha256Hex(data: Uint8Array | string): string {
  return Buffer.from(sha256(typeof data === 'string' ? utf8.encode(data) : data)).toString('hex');
}

/** Constant-time equality (length leaks, content does not). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
