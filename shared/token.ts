/**
 * Join and admin tokens: one self-contained string a user pastes.
 *
 *   knit_<base64url( ver | kind | id[8] | secret[32] | coordKey[32] | url… )>
 *
 *   ver      1 byte  TOKEN_VERSION
 *   kind     1 byte  'j' join, 'a' admin
 *   id       8 bytes public lookup id (stored in clear, indexes the row)
 *   secret  32 bytes 256 bits; only sha256(secret) is stored, compared in constant time
 *   coordKey 32 bytes the coordinator's X25519 public key, pinned by the agent
 *   url      UTF-8   the coordinator's public base URL (http[s]://host[:port])
 *
 * Admin tokens carry the same fields so one parser serves both.
 */
import { encodeKey, KEY_LEN } from './crypto/keys.js';

export const TOKEN_PREFIX = 'knit_';
export const TOKEN_VERSION = 1;
export const TOKEN_ID_LEN = 8;
export const TOKEN_SECRET_LEN = 32;
const TOKEN_FIXED_LEN = 2 + TOKEN_ID_LEN + TOKEN_SECRET_LEN + KEY_LEN;
const TOKEN_URL_MAX = 512;
export const TOKEN_TEXT_MAX = TOKEN_PREFIX.length + Math.ceil(((TOKEN_FIXED_LEN + TOKEN_URL_MAX) * 4) / 3);

export type TokenKind = 'join' | 'admin';

export interface ParsedToken {
  kind: TokenKind;
  id: string; // hex
  secret: Uint8Array;
  coordinatorKey: string; // base64, as keys are written everywhere
  url: string;
}

export function encodeToken(t: { kind: TokenKind; id: Uint8Array; secret: Uint8Array; coordinatorKey: Uint8Array; url: string }): string {
  if (t.id.length !== TOKEN_ID_LEN || t.secret.length !== TOKEN_SECRET_LEN || t.coordinatorKey.length !== KEY_LEN) {
    throw new RangeError('token field of wrong length');
  }
  const url = Buffer.from(t.url, 'utf8');
  if (url.length > TOKEN_URL_MAX) throw new RangeError('coordinator URL too long for a token');
  const buf = Buffer.concat([
    Buffer.from([TOKEN_VERSION, t.kind === 'join' ? 0x6a : 0x61]),
    t.id, t.secret, t.coordinatorKey, url,
  ]);
  return TOKEN_PREFIX + buf.toString('base64url');
}

/** Parses a token string; undefined on anything malformed (the caller reports KNIT_ERR_TOKEN_INVALID). */
export function parseToken(text: unknown): ParsedToken | undefined {
  if (typeof text !== 'string' || !text.startsWith(TOKEN_PREFIX) || text.length > TOKEN_TEXT_MAX) return undefined;
  const body = text.slice(TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) return undefined;
  const buf = Buffer.from(body, 'base64url');
  if (buf.length <= TOKEN_FIXED_LEN || buf[0] !== TOKEN_VERSION) return undefined;
  const kindByte = buf[1];
  if (kindByte !== 0x6a && kindByte !== 0x61) return undefined;
  let o = 2;
  const id = buf.subarray(o, (o += TOKEN_ID_LEN));
  const secret = new Uint8Array(buf.subarray(o, (o += TOKEN_SECRET_LEN)));
  const key = new Uint8Array(buf.subarray(o, (o += KEY_LEN)));
  // Canonical base64url only: one token has one spelling (no trailing bits to play with).
  if (buf.toString('base64url') !== body) return undefined;
  const url = tokenUrl(buf.subarray(o));
  if (!url) return undefined;
  return { kind: kindByte === 0x6a ? 'join' : 'admin', id: id.toString('hex'), secret, coordinatorKey: encodeKey(key), url };
}

/**
 * The coordinator URL of a token: valid UTF-8 without whitespace or control
 * characters, http(s)://host[:port] and nothing else (no credentials, path,
 * query or fragment), or undefined. The agent connects to it, so bytes a damaged
 * or crafted token smuggles in are refused here.
 */
export function tokenUrl(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  // eslint-disable-next-line no-control-regex
  if (!/^https?:\/\/[^\s/?#@\u0000-\u001f\u007f-\u009f]+\/?$/u.test(text)) return undefined;
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return undefined;
  }
  if (u.username || u.password || u.pathname !== '/' || u.search || u.hash || !u.hostname) return undefined;
  return text.replace(/\/$/, '');
}
