/**
 * No hang, no unbounded allocation: every network parser meets inputs far
 * larger and deeper than anything legitimate and must refuse them quickly, with
 * results bounded by their limits rather than by the input. Time limits here
 * are generous ceilings against a hang (seconds, where a refusal takes
 * microseconds), not performance assertions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { parseToken, TOKEN_TEXT_MAX } from '../../shared/token.js';
import { decodeClientMessage, decodeServerMessage, MAX_FRAME_BYTES, validateJoinRequest } from '../../shared/wire/control.js';
import { decodeDiscoPlaintext, DISCO_MAGIC, DISCO_MAX_LEN, discoSender, openDisco } from '../../shared/wire/disco.js';
import { parseStun } from '../../shared/wire/stun.js';
import { parseUapiGet } from '../../agent/engine/uapi.js';
import { parseWgDump } from '../../agent/engine/wg-tool.js';

/** Generous: a hang or a quadratic blow-up takes far longer; a refusal takes microseconds. */
const CEILING_MS = 2000;

function quick<T>(what: string, fn: () => T): T {
  const t0 = performance.now();
  const v = fn();
  const ms = performance.now() - t0;
  assert.ok(ms < CEILING_MS, `${what} took ${ms.toFixed(0)} ms`);
  return v;
}

test('huge and deeply nested control frames are refused without parsing them all', () => {
  const big = '{"type":"endpoints","endpoints":[' + '"198.18.0.1:1",'.repeat(1_000_000) + '"198.18.0.1:2"]}';
  assert.ok(big.length > 10 * MAX_FRAME_BYTES);
  assert.equal(quick('16 MB frame', () => decodeClientMessage(big)).ok, false);
  const deep = '['.repeat(50_000) + ']'.repeat(50_000);
  assert.equal(quick('deep nesting', () => decodeClientMessage(deep)).ok, false);
  const manyKeys = '{"type":"hello",' + Array.from({ length: 5000 }, (_, i) => `"k${i}":${i}`).join(',') + '}';
  assert.equal(quick('many keys', () => decodeClientMessage(manyKeys)).ok, false);
  // The same frames from the server side (agents parse what the coordinator sends).
  assert.equal(quick('deep server frame', () => decodeServerMessage(deep)).ok, false);
  const key = encodeKey(generateKeyPair().publicKey);
  assert.equal(quick('join body with a huge token', () => validateJoinRequest({ token: 'knit_' + 'A'.repeat(5_000_000), nodeKey: key, hostname: 'a' })).ok, false);
});

test('huge tokens and datagrams are refused by their length before any work', () => {
  assert.equal(quick('10 MB token', () => parseToken('knit_' + 'A'.repeat(10_000_000))), undefined);
  assert.equal(quick('just over the token limit', () => parseToken('knit_' + 'A'.repeat(TOKEN_TEXT_MAX))), undefined);
  const huge = new Uint8Array(1 << 20);
  huge.set(DISCO_MAGIC);
  assert.equal(quick('1 MB disco packet', () => discoSender(huge)), undefined);
  assert.equal(quick('1 MB disco open', () => openDisco(huge, new Uint8Array(32))), undefined);
  assert.ok(DISCO_MAX_LEN <= 2048);
  // A plaintext claiming many endpoints is refused by count, not walked.
  const cmm = new Uint8Array(2 + 18 * 100_000);
  cmm[0] = 3; cmm[1] = 1;
  assert.equal(quick('100k-endpoint call-me-maybe', () => decodeDiscoPlaintext(cmm)), undefined);
  // STUN: a 64 KiB datagram of attributes (the largest UDP payload).
  const stun = new Uint8Array(65_507);
  stun[1] = 1; // Binding request
  new DataView(stun.buffer).setUint16(2, (65_507 - 20) & ~3);
  new DataView(stun.buffer).setUint32(4, 0x2112a442);
  for (let o = 20; o + 4 <= stun.length; o += 4) new DataView(stun.buffer).setUint16(o, 0x8000 | (o & 0x7fff)); // unknown optional attributes, length 0
  const parsed = quick('64 KiB STUN', () => parseStun(stun));
  assert.ok(parsed === undefined || Object.keys(parsed).length < 20, 'nothing that grows with the attribute count is kept');
});

test('huge engine replies: parsing stays bounded in time, and output never outgrows the input', () => {
  const peer = (i: number) => `public_key=${i.toString(16).padStart(64, '0')}\nallowed_ip=100.96.${(i >> 8) & 255}.${i & 255}/32\n`;
  const reply = 'private_key=' + 'a'.repeat(64) + '\n' + Array.from({ length: 20_000 }, (_, i) => peer(i)).join('') + 'errno=0\n\n';
  const r = quick('20,000-peer UAPI reply', () => parseUapiGet(reply));
  assert.ok(r.ok && r.value.peers.length === 20_000);
  const noise = 'x='.repeat(2_000_000) + '\n\n';
  quick('4 MB of unknown keys', () => parseUapiGet(noise));
  quick('4 MB wg dump line', () => parseWgDump('a\t'.repeat(2_000_000)));
});
