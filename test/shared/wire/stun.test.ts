import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bindingResponseLength, crc32, encodeBindingRequest, encodeBindingResponse, isStunPacket, parseBindingRequest, parseBindingResponse, parseStun,
  STUN_BINDING_REQUEST, STUN_BINDING_SUCCESS, STUN_KNIT_REQUEST_LEN, STUN_MAX_LEN, STUN_MAX_RESPONSE_LEN, STUN_SOFTWARE_MAX_CHARS,
} from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';
import { fuzzIterations } from '../../fuzz/budget.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// RFC 5769 test vectors (transaction id b7e7a701 bc34d686 fa87dfae in all three).
// They carry MESSAGE-INTEGRITY, PRIORITY, ICE-CONTROLLED and USERNAME, which the
// codec does not interpret: it must walk past them and still verify FINGERPRINT.
const RFC5769_TXID = hex('b7e7a701bc34d686fa87dfae');

/** §2.1 sample request: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME (padded with spaces), M-I, FINGERPRINT. */
const RFC5769_REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);

/** §2.2 sample IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853. */
const RFC5769_IPV4_RESPONSE = hex(`
  01010 03c 2112a442 b7e7a701 bc34d686 fa87dfae
  80220 00b 74657374 20766563 746f7220
  00200 008 0001a147 e112a643
  00080 014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280 004 c07d4c96`);

/** §2.3 sample IPv6 response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853. */
const RFC5769_IPV6_RESPONSE = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);

test('RFC 5769 §2.1 sample request parses: unknown attributes walked past, FINGERPRINT verified', () => {
  const m = parseBindingRequest(RFC5769_REQUEST);
  assert.ok(m);
  assert.equal(m.type, STUN_BINDING_REQUEST);
  assert.deepEqual(m.txid, RFC5769_TXID);
  assert.equal(m.software, 'STUN test client');
  assert.equal(m.hasFingerprint, true);
  assert.equal(m.mapped, undefined);
  assert.equal(parseBindingResponse(RFC5769_REQUEST), undefined, 'a request is not a response');
});

test('RFC 5769 §2.2 and §2.3 sample responses decode to their mapped addresses', () => {
  const rows = [
    { name: 'IPv4', bytes: RFC5769_IPV4_RESPONSE, want: { address: '192.0.2.1', port: 32853 } },
    { name: 'IPv6', bytes: RFC5769_IPV6_RESPONSE, want: { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 } },
  ];
  for (const r of rows) {
    const m = parseBindingResponse(r.bytes);
    assert.ok(m, r.name);
    assert.equal(m.type, STUN_BINDING_SUCCESS, r.name);
    assert.deepEqual(m.txid, RFC5769_TXID, r.name);
    assert.deepEqual(m.mapped, r.want, r.name);
    assert.equal(m.software, 'test vector', r.name);
    assert.equal(m.hasFingerprint, true, r.name);
    assert.equal(parseBindingRequest(r.bytes), undefined, `${r.name}: a response is not a request`);
  }
});

test('a response held in a node Buffer (as dgram delivers it) parses the same twice and is left unchanged', () => {
  for (const bytes of [RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE]) {
    const datagram = Buffer.from(bytes);
    const first = parseBindingResponse(datagram);
    assert.ok(first);
    assert.deepEqual(Uint8Array.from(datagram), Uint8Array.from(bytes), 'the datagram is untouched');
    assert.deepEqual(parseBindingResponse(datagram)?.mapped, first.mapped, 'a second reader gets the same answer');
  }
});

test('CRC-32 matches the standard check value', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('encoder golden bytes (same transaction id as RFC 5769)', () => {
  const rows = [
    { name: 'bare request', bytes: encodeBindingRequest(RFC5769_TXID),
      want: '00010008 2112a442 b7e7a701bc34d686fa87dfae 80280004 fdf6ae02' },
    { name: 'request with SOFTWARE "knit"', bytes: encodeBindingRequest(RFC5769_TXID, { software: true }),
      want: '00010010 2112a442 b7e7a701bc34d686fa87dfae 80220004 6b6e6974 80280004 7242ee21' },
    { name: 'Knit request padded to 72 bytes', bytes: encodeBindingRequest(RFC5769_TXID, { padTo: STUN_KNIT_REQUEST_LEN }),
      want: `00010034 2112a442 b7e7a701bc34d686fa87dfae 00260028 ${'00'.repeat(40)} 80280004 6fbbdf3f` },
    // The XOR-MAPPED-ADDRESS values equal RFC 5769's for the same address and id.
    { name: 'IPv4 response', bytes: encodeBindingResponse(RFC5769_TXID, { address: '192.0.2.1', port: 32853 }),
      want: '01010014 2112a442 b7e7a701bc34d686fa87dfae 00200008 0001a147 e112a643 80280004 7d281f59' },
    { name: 'IPv6 response', bytes: encodeBindingResponse(RFC5769_TXID, { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 }),
      want: '01010020 2112a442 b7e7a701bc34d686fa87dfae 00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 80280004 68d5c950' },
  ];
  for (const r of rows) assert.equal(toHex(r.bytes), r.want.replace(/\s+/g, ''), r.name);
});

test('round trips: requests and responses decode to what was encoded', () => {
  const txid = seededBytes(9)(12);
  const req = parseBindingRequest(encodeBindingRequest(txid, { software: 'knit/1.0 ünïcode', padTo: 100 }));
  assert.deepEqual(req?.txid, txid);
  assert.equal(req?.software, 'knit/1.0 ünïcode');
  for (const mapped of [
    { address: '198.18.0.7', port: 41641 }, { address: '10.0.0.1', port: 0 }, { address: '255.255.255.255', port: 65535 },
    { address: '::1', port: 1 }, { address: 'fd7a:115c:a1e0::1', port: 3478 }, { address: '2001:db8::1234:5678', port: 65535 },
  ]) {
    const res = parseBindingResponse(encodeBindingResponse(txid, mapped));
    assert.deepEqual(res?.mapped, mapped);
    assert.deepEqual(res?.txid, txid);
  }
});

test('padding: requests grow to padTo (rounded to 4), never shrink', () => {
  const txid = new Uint8Array(12);
  const rows = [[0, 28], [28, 28], [29, 32], [32, 32], [33, 36], [52, 52], [72, 72], [73, 76], [STUN_MAX_LEN, STUN_MAX_LEN]] as const;
  for (const [padTo, want] of rows) {
    const b = encodeBindingRequest(txid, { padTo });
    assert.equal(b.length, want, `padTo ${padTo}`);
    assert.ok(parseBindingRequest(b), `padTo ${padTo} parses`);
  }
});

test('no amplification: every answer fits in a padded Knit request', () => {
  const txid = seededBytes(3)(12);
  const req = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN });
  assert.equal(req.length, STUN_KNIT_REQUEST_LEN);
  for (const mapped of [{ address: '198.18.0.7', port: 41641 }, { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 }]) {
    const res = encodeBindingResponse(txid, mapped);
    assert.ok(res.length <= STUN_MAX_RESPONSE_LEN && res.length <= req.length, `${res.length} > ${req.length}`);
    assert.equal(bindingResponseLength(mapped.address), res.length, 'the size is known before encoding');
  }
});

test('MAPPED-ADDRESS from old servers is used when XOR-MAPPED-ADDRESS is absent, and loses when both are present', () => {
  const head = (len: number) => `01010${len.toString(16).padStart(3, '0')} 2112a442 b7e7a701bc34d686fa87dfae`;
  const plainOnly = hex(`${head(12)} 00010008 0001 1f90 c6120005`); // 198.18.0.5:8080, no FINGERPRINT
  assert.deepEqual(parseBindingResponse(plainOnly)?.mapped, { address: '198.18.0.5', port: 8080 });
  assert.equal(parseBindingResponse(plainOnly)?.hasFingerprint, false);
  const both = hex(`${head(24)} 00010008 0001 1f90 c6120005 00200008 0001a147 e112a643`);
  assert.deepEqual(parseBindingResponse(both)?.mapped, { address: '192.0.2.1', port: 32853 });
});

test('SOFTWARE is bounded on decode and checked on encode', () => {
  const long = 'x'.repeat(700);
  const value = new TextEncoder().encode(long);
  // Hand-built: a 700-byte SOFTWARE attribute is legal framing; the decoder keeps 127 characters.
  const b = new Uint8Array(20 + 4 + 700);
  b.set(hex(`000102c0 2112a442 ${'00'.repeat(12)} 802202bc`));
  b.set(value, 24);
  assert.equal(parseStun(b)?.software?.length, STUN_SOFTWARE_MAX_CHARS);
  assert.throws(() => encodeBindingRequest(new Uint8Array(12), { software: 'y'.repeat(128) }), RangeError);
});

test('programmer errors throw RangeError from encoders', () => {
  assert.throws(() => encodeBindingRequest(new Uint8Array(11)), RangeError);
  assert.throws(() => encodeBindingRequest(new Uint8Array(12), { padTo: STUN_MAX_LEN + 1 }), RangeError);
  assert.throws(() => encodeBindingRequest(new Uint8Array(12), { padTo: 1.5 }), RangeError);
  assert.throws(() => encodeBindingResponse(new Uint8Array(12), { address: '1.2.3.4', port: 65536 }), RangeError);
});

test('malformed packets are rejected, never thrown on', () => {
  const good = encodeBindingResponse(hex('000102030405060708090a0b'), { address: '1.2.3.4', port: 5 });
  const edit = (f: (b: Uint8Array) => void) => { const b = good.slice(); f(b); return b; };
  const rows: { name: string; bytes: Uint8Array }[] = [
    { name: 'empty', bytes: new Uint8Array(0) },
    { name: 'short header', bytes: good.subarray(0, 19) },
    { name: 'truncated', bytes: good.subarray(0, good.length - 1) },
    { name: 'trailing byte', bytes: Uint8Array.from([...good, 0]) },
    { name: 'bad cookie', bytes: edit((b) => { b[4] = 0; }) },
    { name: 'first two bits set', bytes: edit((b) => { b[0] = 0xc1; }) },
    { name: 'length too long', bytes: edit((b) => { b[3] = 0xff; }) },
    { name: 'length not a multiple of 4', bytes: edit((b) => { b[3]! -= 1; }) },
    { name: 'attribute runs past the end', bytes: edit((b) => { b[22] = 0x01; }) },
    { name: 'fingerprint wrong', bytes: edit((b) => { b[b.length - 1]! ^= 1; }) },
    { name: 'fingerprint length 5', bytes: edit((b) => { b[b.length - 5] = 5; }) },
    { name: 'unknown address family', bytes: hex('01010008 2112a442 000102030405060708090a0b 00200008 0003a147 e112a643') },
    { name: 'IPv4 address with an IPv6 length', bytes: hex('0101000c 2112a442 000102030405060708090a0b 0020000c 0001a147 e112a643 00000000') },
    { name: 'attribute after FINGERPRINT', bytes: (() => {
      // A correct FINGERPRINT over a header that also counts a SOFTWARE attribute placed after it.
      const body = hex('01010018 2112a442 000102030405060708090a0b 00200008 0001a147 e112a643');
      const fp = (crc32(body) ^ 0x5354554e) >>> 0;
      return Uint8Array.from([...body, 0x80, 0x28, 0, 4, fp >>> 24, (fp >>> 16) & 0xff, (fp >>> 8) & 0xff, fp & 0xff, 0x80, 0x22, 0, 0]);
    })() },
    { name: 'too long to be a binding exchange', bytes: (() => {
      const b = new Uint8Array(STUN_MAX_LEN + 4);
      b.set(hex(`00010504 2112a442 ${'00'.repeat(12)}`));
      return b;
    })() },
  ];
  for (const r of rows) assert.equal(parseStun(r.bytes), undefined, r.name);
});

test('isStunPacket demultiplexes STUN from WireGuard and disco on the shared port', () => {
  assert.equal(isStunPacket(encodeBindingRequest(new Uint8Array(12))), true);
  assert.equal(isStunPacket(RFC5769_IPV6_RESPONSE), true);
  const wgInitiation = new Uint8Array(148);
  wgInitiation[0] = 1;
  assert.equal(isStunPacket(wgInitiation), false);
  assert.equal(isStunPacket(new Uint8Array([1, 0, 0, 0])), false);
  assert.equal(isStunPacket(hex(`c0010000 2112a442 ${'00'.repeat(12)}`)), false, 'first two bits must be zero');
});

test('fuzz: random and mutated packets never throw, and what parses stays bounded', () => {
  const rnd = seededBytes(42);
  const seeds = [
    RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE,
    encodeBindingRequest(rnd(12), { padTo: STUN_KNIT_REQUEST_LEN, software: true }),
    encodeBindingResponse(rnd(12), { address: '198.18.1.2', port: 9 }),
  ];
  let parsed = 0;
  for (let i = 0; i < fuzzIterations(20_000); i++) {
    const r = rnd(4);
    let b: Uint8Array;
    if (r[0]! % 3 !== 0) {
      // Mutate a valid message: flip bytes, maybe cut or extend it.
      b = seeds[r[1]! % seeds.length]!.slice();
      const flips = 1 + (r[2]! % 4);
      for (let k = 0; k < flips; k++) { const at = rnd(1)[0]! % b.length; b[at] = rnd(1)[0]!; }
      if (r[3]! % 5 === 0) b = b.subarray(0, rnd(1)[0]! % (b.length + 1));
      if (r[3]! % 7 === 0) b = Uint8Array.from([...b, ...rnd(r[3]! % 16)]);
    } else {
      // Random bytes with a valid STUN header prefix, so the attribute walker gets exercised.
      b = rnd(r[1]! * 4 % 1400);
      if (b.length >= 20) {
        b[0]! &= 0x3f; b[4] = 0x21; b[5] = 0x12; b[6] = 0xa4; b[7] = 0x42;
        const len = b.length - 20; b[2] = len >>> 8; b[3] = len & 0xff;
      }
    }
    const m = parseStun(b); // must not throw
    if (m) {
      parsed++;
      assert.equal(m.txid.length, 12);
      assert.ok((m.software?.length ?? 0) <= STUN_SOFTWARE_MAX_CHARS * 2); // UTF-16 units of ≤127 code points
      assert.ok(b.length <= STUN_MAX_LEN);
    }
  }
  assert.ok(parsed > 0, 'some mutations stay valid (the walker was exercised past the header)');
});
