import assert from 'node:assert/strict';
import { test } from 'node:test';
import { computeMac1, initiationIsFor, isHandshakeInitiation, mac1Key } from '../../../shared/wire/wireguard.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const PUB = Uint8Array.from({ length: 32 }, (_, i) => i);
// Golden values computed independently with Python's hashlib.blake2s.
const KEY = '4fb2527ac956001553dc1ad9b55171b7d9daa3de1cdbcd71451830170c7e6cac';
const MAC1 = '4467ce3f5a5ca963096642460df1550e';

function initiation(): Uint8Array {
  const b = new Uint8Array(148);
  for (let i = 0; i < 116; i++) b[i] = (i * 7) & 255;
  b.set([1, 0, 0, 0], 0);
  return b;
}

test('mac1 key and mac1 match an independent BLAKE2s implementation', () => {
  assert.equal(hex(mac1Key(PUB)), KEY);
  const msg = initiation();
  assert.equal(hex(computeMac1(msg.subarray(0, 116), mac1Key(PUB))), MAC1);
});

test('an initiation is recognised for its responder only', () => {
  const msg = initiation();
  msg.set(Buffer.from(MAC1, 'hex'), 116);
  assert.ok(isHandshakeInitiation(msg));
  assert.ok(initiationIsFor(msg, mac1Key(PUB)));
  assert.equal(initiationIsFor(msg, mac1Key(new Uint8Array(32).fill(9))), false);
  const tampered = msg.slice();
  tampered[20]! ^= 1;
  assert.equal(initiationIsFor(tampered, mac1Key(PUB)), false);
  assert.equal(isHandshakeInitiation(msg.subarray(0, 147)), false);
  const data = msg.slice();
  data[0] = 4;
  assert.equal(isHandshakeInitiation(data), false);
});
