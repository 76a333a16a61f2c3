import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  crc32, encodeBindingRequest, encodeBindingResponse, isStunPacket, parseStun,
  STUN_BINDING_REQUEST, STUN_BINDING_SUCCESS, STUN_KNIT_REQUEST_LEN,
} from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';
import { fuzzIterations } from '../../fuzz/budget.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

// RFC 5769 §2.2: sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853, with MESSAGE-INTEGRITY and FINGERPRINT).
const RFC5769_IPV4_RESPONSE = hex(`
  01010 03c 2112a442 b7e7a701 bc34d686 fa87dfae
  80220 00b 74657374 20766563 746f7220
  00200 008 0001a147 e112a643
  00080 014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280 004 c07d4c96`);

test('RFC 5769 §2.2 IPv4 response: golden bytes decode to 192.0.2.1:32853, FINGERPRINT verifies', () => {
  const m = parseStun(RFC5769_IPV4_RESPONSE);
  assert.ok(m);
  assert.equal(m.type, STUN_BINDING_SUCCESS);
  assert.deepEqual(m.mapped, { address: '192.0.2.1', port: 32853 });
  assert.equal(m.software, 'test vector');
  assert.equal(m.hasFingerprint, true);
});

test('CRC-32 matches the standard check value', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('binding request golden bytes and padding', () => {
  const txid = hex('b7e7a701bc34d686fa87dfae');
  const req = encodeBindingRequest(txid);
  assert.equal(Buffer.from(req).toString('hex').slice(0, 48), '000100082112a442b7e7a701bc34d686fa87dfae80280004');
  assert.equal(req.length, 28);
  const m = parseStun(req);
  assert.equal(m?.type, STUN_BINDING_REQUEST);
  assert.equal(m?.hasFingerprint, true);
  const padded = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN });
  assert.ok(padded.length >= STUN_KNIT_REQUEST_LEN);
  assert.ok(parseStun(padded));
});

test('a response to a padded Knit request is never larger than the request (v4 and v6)', () => {
  const txid = seededBytes(3)(12);
  const req = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN });
  for (const mapped of [{ address: '198.18.0.7', port: 41641 }, { address: '2001:db8::1234:5678', port: 65535 }]) {
    const res = encodeBindingResponse(txid, mapped);
    assert.ok(res.length <= req.length, `${res.length} > ${req.length}`);
    assert.deepEqual(parseStun(res)?.mapped, mapped);
  }
});

test('IPv6 XOR-MAPPED-ADDRESS round trip', () => {
  const txid = hex('b7e7a701bc34d686fa87dfae');
  const res = encodeBindingResponse(txid, { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
  assert.deepEqual(parseStun(res)?.mapped, { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
});

test('malformed packets are rejected without throwing', () => {
  const good = encodeBindingResponse(hex('000102030405060708090a0b'), { address: '1.2.3.4', port: 5 });
  const cases: Uint8Array[] = [
    new Uint8Array(0), good.subarray(0, 19), good.subarray(0, good.length - 1),
    (() => { const b = good.slice(); b[4] = 0; return b; })(), // cookie
    (() => { const b = good.slice(); b[3] = 0xff; return b; })(), // length
    (() => { const b = good.slice(); b[b.length - 1]! ^= 1; return b; })(), // fingerprint
    (() => { const b = good.slice(); b[0] = 0xc0; return b; })(), // first bits
  ];
  for (const c of cases) assert.equal(parseStun(c), undefined);
  assert.equal(isStunPacket(new Uint8Array([1, 0, 0, 0])), false);
});

test('fuzz: random and mutated packets never throw (bounded budget)', () => {
  const rnd = seededBytes(42);
  const base = encodeBindingResponse(rnd(12), { address: '198.18.1.2', port: 9 });
  for (let i = 0; i < fuzzIterations(20_000); i++) {
    const r = rnd(3);
    let b: Uint8Array;
    if (r[0]! % 2 === 0) {
      b = base.slice();
      const flips = 1 + (r[1]! % 4);
      for (let k = 0; k < flips; k++) { const at = rnd(1)[0]! % b.length; b[at] = rnd(1)[0]!; }
    } else {
      b = rnd(r[1]! % 128);
      if (b.length >= 8) { b[0]! &= 0x3f; b[4] = 0x21; b[5] = 0x12; b[6] = 0xa4; b[7] = 0x42; }
    }
    parseStun(b); // must not throw
  }
});
