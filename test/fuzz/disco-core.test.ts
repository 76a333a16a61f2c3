/**
 * Fuzzing the agent's disco core where packets reach it (the tunnel port):
 * random datagrams and mutations of genuine pings, pongs, call-me-maybes and
 * node-sealed announcements, from random sources. The core never throws, and a
 * packet that doesn't authenticate never makes it send anything to its source.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { formatEndpoint } from '../../shared/net/addr.js';
import { DISCO_MAGIC_NODE, discoNodeKey, discoSharedKey, sealDisco } from '../../shared/wire/disco.js';
import { DiscoCore } from '../../agent/disco/core.js';
import { seededBytes } from '../helpers/manual-clock.js';
import { fuzzIterations } from './budget.js';

test('disco core: hostile datagrams never throw, and unauthenticated ones get no answer', () => {
  const rnd = seededBytes(31337);
  const a = { node: generateKeyPair(), disco: generateKeyPair() };
  const b = { node: generateKeyPair(), disco: generateKeyPair() };
  const core = new DiscoCore({ nodeKey: encodeKey(b.node.publicKey), discoPrivateKey: b.disco.privateKey, discoPublicKey: b.disco.publicKey, random: seededBytes(1), nodePrivateKey: b.node.privateKey });
  core.handle({ type: 'peers-updated', peers: [{ nodeKey: encodeKey(a.node.publicKey), discoKey: encodeKey(a.disco.publicKey), name: 'a', endpoints: ['198.18.0.1:41641'], natType: 'none', online: true }] }, 0);
  const k = discoSharedKey(a.disco.privateKey, b.disco.publicKey)!;
  const nk = discoNodeKey(a.node.privateKey, b.node.publicKey)!;
  const genuine = () => [
    sealDisco({ type: 'ping', txid: rnd(12), nodeKey: a.node.publicKey, padding: rnd(1)[0]! % 64 }, a.disco.publicKey, k, rnd(24)),
    sealDisco({ type: 'pong', txid: rnd(12), src: { address: '198.18.0.2', port: 41641 } }, a.disco.publicKey, k, rnd(24)),
    sealDisco({ type: 'call-me-maybe', endpoints: [{ address: '198.18.0.3', port: 1 }, { address: '2001:db8::1', port: 2 }] }, a.disco.publicKey, k, rnd(24)),
    sealDisco({ type: 'disco-key', discoKey: generateKeyPair().publicKey, epoch: 1 }, a.node.publicKey, nk, rnd(24), DISCO_MAGIC_NODE),
  ];
  let now = 1;
  for (let i = 0; i < fuzzIterations(3000); i++) {
    const from = { address: `198.18.${(i >> 8) & 255}.${i & 255}`, port: 1 + (i % 60000) };
    let bytes: Uint8Array;
    if (i % 4 === 0) bytes = rnd(rnd(1)[0]! * 5);
    else {
      const g = genuine()[i % 4]!;
      bytes = new Uint8Array(g);
      const flips = 1 + (rnd(1)[0]! % 3);
      for (let f = 0; f < flips; f++) bytes[rnd(2).reduce((x, y) => x * 256 + y, 0) % bytes.length]! ^= 1 + (rnd(1)[0]! % 255);
      if (i % 13 === 0) bytes = bytes.subarray(0, rnd(1)[0]! % bytes.length);
    }
    const out = core.handle({ type: 'udp', from, bytes }, (now += 7));
    const toSource = out.filter((x) => x.type === 'send-udp' && formatEndpoint(x.to) === formatEndpoint(from));
    // A mutated packet fails authentication (the flip lands in the sealed header or box), so
    // nothing may go back to where it came from.
    assert.deepEqual(toSource, [], `iteration ${i}`);
  }
});
