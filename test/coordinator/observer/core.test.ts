import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createObserverCore, type ObserverVerdict } from '../../../coordinator/observer/core.js';
import { crc32, encodeBindingRequest, encodeBindingResponse, parseBindingResponse, STUN_FINGERPRINT_XOR, STUN_KNIT_REQUEST_LEN } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';

const random = seededBytes(7);
const knitRequest = () => encodeBindingRequest(random(12), { padTo: STUN_KNIT_REQUEST_LEN });
const plainRequest = () => encodeBindingRequest(random(12)); // 28 bytes: what a standard client sends
/** The same message with another type, FINGERPRINT recomputed. */
function withType(msg: Uint8Array, type: number): Uint8Array {
  const b = msg.slice();
  const view = new DataView(b.buffer);
  view.setUint16(0, type);
  view.setUint32(b.length - 4, (crc32(b.subarray(0, b.length - 8)) ^ STUN_FINGERPRINT_XOR) >>> 0);
  return b;
}
const kind = (v: ObserverVerdict) => ('answer' in v ? 'answer' : v.drop);

test('a Binding request is answered with the source address it came from (v4 and v6), never larger than a Knit request', () => {
  const core = createObserverCore();
  for (const from of [{ address: '198.18.4.2', port: 41641 }, { address: '2001:db8::42', port: 1 }]) {
    const req = knitRequest();
    const v = core.handle(req, from, 0);
    assert.ok('answer' in v);
    const res = parseBindingResponse(v.answer);
    assert.deepEqual(res?.mapped, from);
    assert.deepEqual(res?.txid, req.subarray(8, 20));
    assert.ok(v.answer.length <= req.length, 'no amplification');
  }
});

test('drops: malformed, not a request (responses are never answered: no reflector ping-pong)', () => {
  const core = createObserverCore();
  const from = { address: '198.18.4.2', port: 5 };
  const rows = [
    { name: 'garbage', bytes: new TextEncoder().encode('not stun at all, not at all'), want: 'malformed' },
    { name: 'bad fingerprint', bytes: (() => { const b = knitRequest(); b[b.length - 1]! ^= 0xff; return b; })(), want: 'malformed' },
    { name: 'a response', bytes: encodeBindingResponse(random(12), from), want: 'not-a-request' },
    { name: 'a Binding indication', bytes: withType(plainRequest(), 0x0011), want: 'not-a-request' },
    { name: 'an Allocate request (TURN)', bytes: withType(plainRequest(), 0x0003), want: 'not-a-request' },
  ];
  for (const r of rows) assert.equal(kind(core.handle(r.bytes, from, 0)), r.want, r.name);
});

test('standard clients are answered: the RFC 5769 sample request (ICE attributes, MESSAGE-INTEGRITY) gets its mapped address', () => {
  const sample = Uint8Array.from(Buffer.from(
    '000100582112a442b7e7a701bc34d686fa87dfae80220010' + '5354554e20746573' + '7420636c69656e74' + '002400046e0001ff' +
    '80290008932ff9b151263b3600060009' + '6576746a3a68367659202020' + '000800149aeaa70cbfd8cb56781ef2b5' + 'b2d3f249c1b571a280280004e57a3bcf', 'hex'));
  const v = createObserverCore().handle(sample, { address: '198.18.7.7', port: 50000 }, 0);
  assert.ok('answer' in v);
  assert.deepEqual(parseBindingResponse(v.answer)?.mapped, { address: '198.18.7.7', port: 50000 });
});

test('Knit padded requests are never rate-limited, even a thousand at once from one address', () => {
  const core = createObserverCore({ rateLimitPerSec: 1, globalRateLimitPerSec: 1 });
  for (let i = 0; i < 1000; i++) assert.equal(kind(core.handle(knitRequest(), { address: '198.18.0.9', port: 1000 + i }, 0)), 'answer');
  assert.equal(core.trackedSources(), 0, 'unamplified answers cost no table entry');
});

test('small requests: per-source token bucket on virtual time (step table)', () => {
  const core = createObserverCore({ rateLimitPerSec: 20 });
  const A = { address: '198.18.0.1', port: 3000 };
  const B = { address: '198.18.0.2', port: 3000 };
  const steps: { at: number; from: typeof A; count: number; answered: number; note: string }[] = [
    { at: 0, from: A, count: 25, answered: 20, note: 'a burst of one second worth, then refused' },
    { at: 0, from: B, count: 5, answered: 5, note: 'another source has its own budget' },
    { at: 49, from: A, count: 1, answered: 0, note: 'less than one token refilled' },
    { at: 50, from: A, count: 2, answered: 1, note: '20/s = one token per 50 ms' },
    { at: 1050, from: A, count: 30, answered: 20, note: 'full again after a second, never more' },
  ];
  for (const s of steps) {
    let answered = 0;
    for (let i = 0; i < s.count; i++) if (kind(core.handle(plainRequest(), s.from, s.at)) === 'answer') answered++;
    assert.equal(answered, s.answered, `at ${s.at}: ${s.note}`);
  }
});

test('IPv6 sources share a budget per /64', () => {
  const core = createObserverCore({ rateLimitPerSec: 4 });
  const answered = (address: string, n: number) => {
    let k = 0;
    for (let i = 0; i < n; i++) if (kind(core.handle(plainRequest(), { address, port: 9 }, 0)) === 'answer') k++;
    return k;
  };
  assert.equal(answered('2001:db8:0:0::1', 3), 3);
  assert.equal(answered('2001:db8:0:0:ffff::7', 3), 1, 'same /64');
  assert.equal(answered('2001:db8:0:1::1', 3), 3, 'another /64');
});

test('a global budget caps unpadded answers across all sources (spoofed-source floods)', () => {
  const core = createObserverCore({ rateLimitPerSec: 20, globalRateLimitPerSec: 50 });
  let answered = 0;
  for (let i = 0; i < 500; i++) if (kind(core.handle(plainRequest(), { address: `198.18.1.${i % 250}`, port: 9 }, 0)) === 'answer') answered++;
  assert.equal(answered, 50);
  let later = 0;
  for (let i = 0; i < 500; i++) if (kind(core.handle(plainRequest(), { address: `198.18.2.${i % 250}`, port: 9 }, 100)) === 'answer') later++;
  assert.equal(later, 5, '50/s refills 5 in 100 ms');
});

test('the source table is bounded and forgets idle sources on the caller\'s clock', () => {
  const core = createObserverCore({ maxSources: 100 });
  for (let i = 0; i < 1000; i++) core.handle(plainRequest(), { address: `198.18.${i >> 8}.${i & 255}`, port: 9 }, 1_000);
  assert.equal(core.trackedSources(), 100);
  core.handle(plainRequest(), { address: '198.18.200.1', port: 9 }, 3_500);
  assert.equal(core.trackedSources(), 1, 'entries idle for 2 s are gone (their buckets would be full anyway)');
});

test('bad options are programmer errors', () => {
  assert.throws(() => createObserverCore({ rateLimitPerSec: 0 }), RangeError);
  assert.throws(() => createObserverCore({ maxSources: Number.NaN }), RangeError);
});
