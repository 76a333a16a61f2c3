import assert from 'node:assert/strict';
import { test } from 'node:test';
import { publicKeyOf } from '../../shared/crypto/keys.js';
import { isDiscoPacket } from '../../shared/wire/disco.js';
import { isStunPacket } from '../../shared/wire/stun.js';
import {
  decodeRelayPlaintext, decodeWsData, encodeRelayPlaintext, encodeWsData, isRelayPacket, isWireguardShaped, openRelay, relaySender, relaySharedKey, sealRelay,
  RELAY_HEADER_LEN, type RelayMessage,
} from '../../shared/wire/relay.js';
import { seededBytes } from '../helpers/manual-clock.js';

const NODE_PRIV = new Uint8Array(32).fill(1);
const RELAY_PRIV = new Uint8Array(32).fill(2);
const NODE_PUB = publicKeyOf(NODE_PRIV);
const RELAY_PUB = publicKeyOf(RELAY_PRIV);
const TXID = Uint8Array.from({ length: 12 }, (_, i) => i);
const NONCE = new Uint8Array(24).fill(7);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('relay plaintext: golden bytes and round trip for every message', () => {
  const rows: { m: RelayMessage; hex: string }[] = [
    { m: { type: 'alloc', txid: TXID, peer: new Uint8Array(32).fill(0xab) }, hex: '0101' + hex(TXID) + 'ab'.repeat(32) },
    { m: { type: 'alloc-ok', txid: TXID, port: 41641 }, hex: '0201' + hex(TXID) + 'a2a9' },
    { m: { type: 'bind', txid: TXID, port: 3480, counter: 1_700_000_000_123 }, hex: '0301' + hex(TXID) + '0d98' + '0000018bcfe5687b' },
    { m: { type: 'bind-ok', txid: TXID, observedPort: 41641 }, hex: '0401' + hex(TXID) + 'a2a9' },
    { m: { type: 'error', txid: TXID, code: 4 }, hex: '0501' + hex(TXID) + '04' },
    { m: { type: 'ws-hello', challenge: new Uint8Array(32).fill(0x11) }, hex: '0601' + '11'.repeat(32) },
    { m: { type: 'ws-ok' }, hex: '0701' },
  ];
  for (const r of rows) {
    const bytes = encodeRelayPlaintext(r.m);
    assert.equal(hex(bytes), r.hex, r.m.type);
    assert.deepEqual(decodeRelayPlaintext(bytes), r.m, `${r.m.type} round trip`);
    // Lenient on trailing bytes from newer versions.
    assert.deepEqual(decodeRelayPlaintext(Uint8Array.from([...bytes, 0, 1, 2])), r.m, `${r.m.type} with trailing bytes`);
  }
});

test('bind-ok from an older relay carries no observed port, and decodes without one', () => {
  const bytes = Uint8Array.from(Buffer.from('0401' + hex(TXID), 'hex'));
  assert.deepEqual(decodeRelayPlaintext(bytes), { type: 'bind-ok', txid: TXID });
  assert.equal(hex(encodeRelayPlaintext({ type: 'bind-ok', txid: TXID })), '0401' + hex(TXID));
  assert.throws(() => encodeRelayPlaintext({ type: 'bind-ok', txid: TXID, observedPort: 70_000 }), RangeError);
});

test('relay plaintext: bad input decodes to undefined, bad fields throw on encode', () => {
  for (const h of ['', '01', '0100' + '00'.repeat(44), '0101' + '00'.repeat(43), '0201' + hex(TXID) + '0000', '0501' + hex(TXID) + '09', '0901', '0301' + hex(TXID) + '0001ffffffffffffffff']) {
    assert.equal(decodeRelayPlaintext(Buffer.from(h, 'hex')), undefined, h);
  }
  assert.throws(() => encodeRelayPlaintext({ type: 'alloc-ok', txid: TXID, port: 0 }), RangeError);
  assert.throws(() => encodeRelayPlaintext({ type: 'bind', txid: new Uint8Array(3), port: 1, counter: 1 }), RangeError);
  assert.throws(() => encodeRelayPlaintext({ type: 'alloc', txid: TXID, peer: new Uint8Array(31) }), RangeError);
});

test('sealed relay packet: header, magic steered like disco but told apart, opens only with the right key', () => {
  const kNode = relaySharedKey(NODE_PRIV, RELAY_PUB)!;
  const kRelay = relaySharedKey(RELAY_PRIV, NODE_PUB)!;
  assert.equal(hex(kNode), hex(kRelay));
  const m: RelayMessage = { type: 'alloc', txid: TXID, peer: RELAY_PUB };
  const pkt = sealRelay(m, NODE_PUB, kNode, NONCE);
  assert.equal(hex(pkt.subarray(0, 6)), '4b4e4954f0b0');
  assert.equal(hex(pkt.subarray(0, 4)), '4b4e4954', 'the shared-port rule matches "KNIT", so relay answers reach the agent');
  assert.equal(hex(pkt.subarray(6, 38)), hex(NODE_PUB));
  assert.equal(hex(pkt.subarray(38, RELAY_HEADER_LEN)), hex(NONCE));
  assert.ok(isRelayPacket(pkt));
  assert.equal(isDiscoPacket(pkt), false);
  assert.equal(isStunPacket(pkt), false);
  assert.equal(isWireguardShaped(pkt), false);
  assert.equal(hex(relaySender(pkt)!), hex(NODE_PUB));
  assert.deepEqual(openRelay(pkt, kRelay), m);
  assert.equal(hex(sealRelay(m, NODE_PUB, kNode, NONCE)), hex(pkt), 'deterministic given the nonce');
  const other = relaySharedKey(new Uint8Array(32).fill(3), RELAY_PUB)!;
  assert.equal(openRelay(pkt, other), undefined);
  for (let i = 0; i < pkt.length; i += 7) {
    const bad = pkt.slice();
    bad[i]! ^= 1;
    assert.equal(openRelay(bad, kRelay), undefined, `bit flipped at ${i}`);
  }
  assert.equal(openRelay(pkt.subarray(0, pkt.length - 1), kRelay), undefined);
});

test('every answer is smaller than the request it answers (no amplification)', () => {
  const k = relaySharedKey(NODE_PRIV, RELAY_PUB)!;
  const alloc = sealRelay({ type: 'alloc', txid: TXID, peer: RELAY_PUB }, NODE_PUB, k, NONCE);
  const bind = sealRelay({ type: 'bind', txid: TXID, port: 1, counter: 1 }, NODE_PUB, k, NONCE);
  for (const answer of [{ type: 'alloc-ok', txid: TXID, port: 1 }, { type: 'error', txid: TXID, code: 1 }] as RelayMessage[]) {
    assert.ok(sealRelay(answer, RELAY_PUB, k, NONCE).length < alloc.length, answer.type);
  }
  for (const answer of [{ type: 'bind-ok', txid: TXID, observedPort: 65535 }, { type: 'error', txid: TXID, code: 5 }] as RelayMessage[]) {
    assert.ok(sealRelay(answer, RELAY_PUB, k, NONCE).length < bind.length, answer.type);
  }
});

test('WireGuard shape and WebSocket data frames', () => {
  const wg = new Uint8Array(148);
  wg[0] = 1;
  assert.ok(isWireguardShaped(wg));
  assert.equal(isWireguardShaped(Uint8Array.from([5, 0, 0, 0, ...new Uint8Array(40)])), false);
  assert.equal(isWireguardShaped(Uint8Array.from([4, 0, 0, 1, ...new Uint8Array(40)])), false);
  assert.equal(isWireguardShaped(Uint8Array.from([4, 0, 0, 0])), false, 'shorter than a keepalive');
  const frame = encodeWsData(NODE_PUB, wg);
  const d = decodeWsData(frame)!;
  assert.equal(hex(d.peer), hex(NODE_PUB));
  assert.equal(hex(d.packet), hex(wg));
  assert.equal(decodeWsData(frame.subarray(0, 40)), undefined);
  assert.equal(decodeWsData(encodeWsData(NODE_PUB, new Uint8Array(64))), undefined, 'not WireGuard');
});

test('fuzz: random bytes never throw and never open', () => {
  const rnd = seededBytes(5);
  const k = relaySharedKey(RELAY_PRIV, NODE_PUB)!;
  for (let i = 0; i < 2000; i++) {
    const b = rnd(1 + (rnd(1)[0]! % 200));
    if (i % 3 === 0) b.set([0x4b, 0x4e, 0x49, 0x54, 0xf0, 0xb0].slice(0, Math.min(6, b.length)));
    assert.doesNotThrow(() => { decodeRelayPlaintext(b); openRelay(b, k); relaySender(b); decodeWsData(b); });
    assert.equal(openRelay(b, k), undefined);
  }
});
