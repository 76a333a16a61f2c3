/**
 * X25519 keys, written as standard base64 of the 32 raw bytes exactly as
 * WireGuard's `wg genkey` / `wg pubkey` write them. The node key is the
 * WireGuard key; the disco and coordinator keys use the same format.
 */
import { x25519 } from '@noble/curves/ed25519.js';
import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';

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

// DER framings of raw X25519 keys (RFC 8410), so node:crypto can take them.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

/**
 * Importing a private key costs ~10× the DH itself (OpenSSL derives its public
 * half), and a process uses few private keys many times (its node and disco
 * keys; the simulator's agents), so imports are cached, bounded.
 */
const PRIVATE_KEY_CACHE_MAX = 4096;
const privateKeyCache = new Map<string, KeyObject>();

function privateKeyObject(raw: Uint8Array): KeyObject {
  const id = Buffer.from(raw).toString('base64');
  let k = privateKeyCache.get(id);
  if (!k) {
    k = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
    if (privateKeyCache.size >= PRIVATE_KEY_CACHE_MAX) privateKeyCache.delete(privateKeyCache.keys().next().value!);
    privateKeyCache.set(id, k);
  }
  return k;
}

/**
 * X25519 shared secret; throws on a low-order public key (all-zero result).
 * Computed with node:crypto (OpenSSL) rather than @noble: an agent derives one
 * per peer, and the native scalar multiplication is ~30× faster — it decides
 * how fast a 1,000-node mesh converges. @noble still makes and derives keys.
 */
export function sharedSecret(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_LEN || publicKey.length !== KEY_LEN) throw new RangeError(`X25519 keys are ${KEY_LEN} bytes`);
  let priv: KeyObject;
  let pub: KeyObject;
  try {
    priv = privateKeyObject(privateKey);
    pub = createPublicKey({ key: Buffer.concat([SPKI_X25519, publicKey]), format: 'der', type: 'spki' });
  } catch (err) {
    throw new RangeError('not an X25519 key', { cause: err });
  }
  const secret = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: pub }));
  if (secret.every((b) => b === 0)) throw new RangeError('low-order X25519 public key');
  return secret;
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
