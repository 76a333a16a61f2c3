/**
 * Property/fuzz tests for the parsers that take control-plane input: WebSocket
 * frames both ways, the join body, and tokens. Random and mutated inputs must
 * never throw, and anything accepted must be well-formed by construction.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { encodeToken, parseToken } from '../../shared/token.js';
import { decodeClientMessage, decodeServerMessage, validateJoinRequest } from '../../shared/wire/control.js';
import { seededBytes } from '../helpers/manual-clock.js';
import { fuzzIterations } from './budget.js';

const key = encodeKey(generateKeyPair().publicKey);
const SEEDS = [
  JSON.stringify({ type: 'hello', v: 1, nodeKey: key, discoKey: key, clientNonce: 'AAAA', proof: 'BBBB', lastVersion: 3 }),
  JSON.stringify({ type: 'endpoints', endpoints: ['198.18.0.1:41641', '[fd00::1]:1'], natType: 'endpoint-independent' }),
  JSON.stringify({ type: 'call-me-maybe', to: key, endpoints: ['198.18.0.1:41641'] }),
  JSON.stringify({ type: 'snapshot', version: 2, peers: [{ id: 1, name: 'a', nodeKey: key, discoKey: '', addresses: ['100.64.0.1/32'], endpoints: [], natType: 'unknown', online: true, lastSeen: 0, tags: [] }] }),
  JSON.stringify({ type: 'delta', from: 1, version: 2, changes: [{ op: 'remove', id: 3 }, { op: 'online', id: 1, online: false, lastSeen: 5 }] }),
  JSON.stringify({ type: 'welcome', node: { id: 1, name: 'a', addresses: [] }, serverProof: 'AAAA', stun: [3478] }),
];

function mutate(text: string, rnd: (n: number) => Uint8Array): string {
  const chars = [...text];
  const r = rnd(4);
  switch (r[0]! % 5) {
    case 0: chars[r[1]! % chars.length] = String.fromCharCode(32 + (r[2]! % 95)); break; // flip a character
    case 1: chars.splice(r[1]! % chars.length, 1 + (r[2]! % 8)); break; // delete a run
    case 2: chars.splice(r[1]! % chars.length, 0, ...'{"x":[1,{}]}'.slice(0, 1 + (r[2]! % 12))); break; // insert structure
    case 3: return text.replace(/\d+/, String((r[1]! << 24) * 1e9)); // absurd numbers
    default: return text.replace(/"[a-zA-Z]+"/, JSON.stringify('x'.repeat(r[1]! * 40))); // long strings
  }
  return chars.join('');
}

test('control frames: mutated and random input never throws; accepted frames keep their invariants', () => {
  const rnd = seededBytes(99);
  const n = fuzzIterations(4000);
  let accepted = 0;
  for (let i = 0; i < n; i++) {
    const base = SEEDS[i % SEEDS.length]!;
    const input = i % 10 === 0 ? Buffer.from(rnd(rnd(1)[0]!)).toString('latin1') : mutate(base, rnd);
    const c = decodeClientMessage(input);
    const s = decodeServerMessage(input);
    if (c.ok) {
      accepted++;
      if (c.value.type === 'endpoints') assert.ok(c.value.endpoints.length <= 16);
    }
    if (s.ok && s.value.type === 'delta') assert.ok(s.value.version >= s.value.from);
    validateJoinRequest((() => { try { return JSON.parse(input); } catch { return input; } })());
  }
  assert.ok(accepted > 0, 'the seeds themselves are accepted, so mutations explore near valid input');
});

test('tokens: random and mutated strings never throw; a parsed token has its fixed-size fields', () => {
  const rnd = seededBytes(7);
  const good = encodeToken({ kind: 'join', id: rnd(8), secret: rnd(32), coordinatorKey: generateKeyPair().publicKey, url: 'http://198.18.0.1:8080' });
  assert.equal(parseToken(good)?.kind, 'join');
  for (let i = 0; i < fuzzIterations(4000); i++) {
    const t = i % 3 === 0 ? 'knit_' + Buffer.from(rnd(rnd(1)[0]!)).toString('base64url') : mutate(good, rnd);
    const p = parseToken(t);
    if (p) {
      assert.equal(p.secret.length, 32);
      assert.equal(p.id.length, 16);
      assert.match(p.url, /^https?:\/\//);
    }
  }
});
