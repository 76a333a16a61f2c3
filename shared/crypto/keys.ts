/**
 * X25519 keys, written as standard base64 of the 32 raw bytes exactly as
 * WireGuard's `wg genkey` / `wg pubkey` write them. The node key is the
 * WireGuard key; the disco and coordinator keys use the same format.
 */
import { x25519 } from '@noble/curves/ed25519.js';

export const KEY_LEN = 32;

export interface KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  const privateKey = x25519.utils.randomSecretKey();
  return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
}

export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  return x25519.getPublicKey(privateKey);
}

/** X25519 shared secret; throws on a low-order public key (all-zero result). */
export function sharedSecret(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return x25519.getSharedSecret(privateKey, publicKey);
}

export function encodeKey(key: Uint8Array): string {
  if (key.length !== KEY_LEN) throw new RangeError(`key must be ${KEY_LEN} bytes`);
  return Buffer.from(key).toString('base64');
}

const KEY_B64 = /^[A-Za-z0-9+/]{43}=$/;

/** Parses a base64 key; returns undefined on anything but 32 bytes of canonical base64. */
export function decodeKey(text: unknown): Uint8Array | undefined {
  if (typeof text !== 'string' || !KEY_B64.test(text)) return undefined;
  const bytes = new Uint8Array(Buffer.from(text, 'base64'));
  // Reject non-canonical encodings (stray low bits in the last character).
  return bytes.length === KEY_LEN && encodeKey(bytes) === text ? bytes : undefined;
}

export function isKeyText(text: unknown): text is string {
  return decodeKey(text) !== undefined;
}

/** A short, non-secret fingerprint of a public key for logs, TXT records and names. */
export function keyFingerprint(publicKeyText: string): string {
  return publicKeyText.slice(0, 8).replace(/[+/]/g, '_');
}

export function keyToHex(key: Uint8Array): string {
  return Buffer.from(key).toString('hex');
}
