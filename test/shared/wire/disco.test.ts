import assert from 'node:assert/strict';
import { test } from 'node:test';
import { publicKeyOf } from '../../../shared/crypto/keys.js';
import {
  decodeDiscoPlaintext, discoSender, discoSharedKey, encodeDiscoPlaintext, isDiscoPacket, openDisco, sealDisco,
  DISCO_HEADER_LEN, type DiscoMessage,
} from '../../../shared/wire/disco.js';
import { isStunPacket } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';
import { fuzzIterations } from '../../fuzz/budget.js';

const A_PRIV = new Uint8Array(32).fill(1);
const B_PRIV = new Uint8Array(32).fill(2);
const A_PUB = publicKeyOf(A_PRIV);
const B_PUB = publicKeyOf(B_PRIV);
const NONCE = new Uint8Array(24).fill(9);
const TXID = Uint8Array.from({ length: 12 }, (_, i) => i);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('plaintext golden bytes for each message', () => {
  const rows: { name: string; m: DiscoMessage; hex: string }[] = [
    { name: 'ping', m: { type: 'ping', txid: TXID, nodeKey: new Uint8Array(32).fill(0xab) }, hex: '0101' + hex(TXID) + 'ab'.repeat(32) },
    { name: 'pong v4', m: { type: 'pong', txid: TXID, src: { address: '198.18.0.5', port: 41641 } }, hex: '0201' + hex(TXID) + '00000000000000000000ffffc6120005a2a9' },
    { name: 'call-me-maybe', m: { type: 'call-me-maybe', endpoints: [{ address: '2001:db8::1', port: 1 }] }, hex: '0301' + '20010db8000000000000000000000001' + '0001' },
  ];
  for (const r of rows) {
    const bytes = encodeDiscoPlaintext(r.m);
    assert.equal(hex(bytes), r.hex, r.name);
    assert.deepEqual(decodeDiscoPlaintext(bytes), r.m, `${r.name} round trip`);
  }
});

test('sealed packet: header layout, magic cannot be WireGuard or STUN, round trip opens with the peer key', () => {
  const kAB = discoSharedKey(A_PRIV, B_PUB)!;
  const kBA = discoSharedKey(B_PRIV, A_PUB)!;
  assert.equal(hex(kAB), hex(kBA));
  const m: DiscoMessage = { type: 'ping', txid: TXID, nodeKey: A_PUB };
  const pkt = sealDisco(m, A_PUB, kAB, NONCE);
  assert.equal(hex(pkt.subarray(0, 6)), '4b4e4954f09f');
  assert.equal(hex(pkt.subarray(6, 38)), hex(A_PUB));
  assert.equal(hex(pkt.subarray(38, 62)), hex(NONCE));
  assert.ok(isDiscoPacket(pkt));
  assert.equal(isStunPacket(pkt), false);
  assert.ok(!(pkt[0]! >= 1 && pkt[0]! <= 4 && pkt[1] === 0 && pkt[2] === 0 && pkt[3] === 0), 'not a WireGuard message');
  assert.equal(hex(discoSender(pkt)!), hex(A_PUB));
  assert.deepEqual(openDisco(pkt, kBA), m);
  // Same inputs, same bytes (deterministic given the nonce): a golden check of the whole packet.
  assert.equal(hex(sealDisco(m, A_PUB, kAB, NONCE)), hex(pkt));
});

test('a pong is never larger than the ping it answers', () => {
  const k = discoSharedKey(A_PRIV, B_PUB)!;
  const ping = sealDisco({ type: 'ping', txid: TXID, nodeKey: A_PUB }, A_PUB, k, NONCE);
  const pong = sealDisco({ type: 'pong', txid: TXID, src: { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 } }, B_PUB, k, NONCE);
  assert.ok(pong.length <= ping.length, `${pong.length} > ${ping.length}`);
});

test('authentication: a flipped bit anywhere, a wrong key or a truncated packet fails to open', () => {
  const k = discoSharedKey(A_PRIV, B_PUB)!;
  const other = discoSharedKey(A_PRIV, publicKeyOf(new Uint8Array(32).fill(3)))!;
  const pkt = sealDisco({ type: 'call-me-maybe', endpoints: [{ address: '198.18.0.1', port: 2 }] }, A_PUB, k, NONCE);
  assert.equal(openDisco(pkt, other), undefined);
  for (let i = 6; i < pkt.length; i++) {
    const b = pkt.slice();
    b[i]! ^= 0x01;
    assert.equal(openDisco(b, k), undefined, `bit flip at ${i}`);
  }
  assert.equal(openDisco(pkt.subarray(0, DISCO_HEADER_LEN + 10), k), undefined);
});

test('decoder rejects malformed plaintexts and is lenient on trailing bytes', () => {
  for (const bad of [[], [1], [9, 1], [1, 1, 0, 0], [2, 1, ...new Array(20).fill(0)], [3, 1, 1, 2, 3]]) {
    assert.equal(decodeDiscoPlaintext(Uint8Array.from(bad)), undefined, JSON.stringify(bad));
  }
  const ping = encodeDiscoPlaintext({ type: 'ping', txid: TXID, nodeKey: A_PUB });
  const longer = new Uint8Array(ping.length + 40);
  longer.set(ping);
  assert.equal(decodeDiscoPlaintext(longer)?.type, 'ping');
});

test('fuzz: random and mutated packets never throw (bounded budget)', () => {
  const rnd = seededBytes(7);
  const k = discoSharedKey(A_PRIV, B_PUB)!;
  const base = sealDisco({ type: 'pong', txid: TXID, src: { address: '198.18.0.1', port: 9 } }, A_PUB, k, NONCE);
  for (let i = 0; i < fuzzIterations(5000); i++) {
    const r = rnd(2);
    const b = r[0]! % 2 ? base.slice() : rnd(r[1]! * 4);
    for (let f = 0; f < 1 + (r[1]! % 3); f++) if (b.length) b[rnd(1)[0]! % b.length] = rnd(1)[0]!;
    discoSender(b);
    openDisco(b, k);
    decodeDiscoPlaintext(b);
  }
});

test('node-sealed disco-key announcement: its own magic, opens only under the node-to-node key', async () => {
  const { discoNodeKey, discoPacketKind, DISCO_MAGIC_NODE } = await import('../../../shared/wire/disco.js');
  const nodeA = new Uint8Array(32).fill(4);
  const nodeB = new Uint8Array(32).fill(5);
  const kAB = discoNodeKey(nodeA, publicKeyOf(nodeB))!;
  assert.equal(hex(kAB), hex(discoNodeKey(nodeB, publicKeyOf(nodeA))!));
  assert.notEqual(hex(kAB), hex(discoSharedKey(nodeA, publicKeyOf(nodeB))!), 'a different purpose, a different key');
  const m = { type: 'disco-key' as const, discoKey: B_PUB, epoch: 1_764_556_800_123 };
  assert.equal(hex(encodeDiscoPlaintext(m)), '0401' + hex(B_PUB) + '0000019ad7c8007b', 'key, then its epoch as a big-endian uint64');
  const pkt = sealDisco(m, publicKeyOf(nodeA), kAB, NONCE, DISCO_MAGIC_NODE);
  assert.equal(hex(pkt.subarray(0, 6)), '4b4e4954f0a0');
  assert.equal(discoPacketKind(pkt), 'node');
  assert.equal(discoPacketKind(sealDisco(m, A_PUB, kAB, NONCE)), 'disco');
  assert.deepEqual(openDisco(pkt, kAB), m);
  const wrong = discoNodeKey(new Uint8Array(32).fill(6), publicKeyOf(nodeB))!;
  assert.equal(openDisco(pkt, wrong), undefined);
  const flipped = pkt.slice();
  flipped[5] = 0x9f; // re-labelled as a disco-sealed packet: the magic is authenticated
  assert.equal(openDisco(flipped, kAB), undefined);
});

test('path MTU probe: a padded ping of each size is answered by a pong of exactly its length, never longer', async () => {
  const { discoPingPadding, discoPongPadding, DISCO_MAX_LEN, DISCO_MIN_PING_LEN, DISCO_PONG_LEN } = await import('../../../shared/wire/disco.js');
  const k = discoSharedKey(A_PRIV, B_PUB)!;
  const src = { address: '198.18.0.5', port: 41641 };
  const rows: { ping: number; pong: number }[] = [
    { ping: DISCO_MIN_PING_LEN, pong: DISCO_PONG_LEN }, // an ordinary ping: the short pong
    { ping: DISCO_MIN_PING_LEN + 1, pong: DISCO_MIN_PING_LEN + 1 },
    { ping: 1252, pong: 1252 }, // a 1280-byte IPv4 path
    { ping: 1472, pong: 1472 }, // a 1500-byte IPv4 path, the largest
  ];
  for (const r of rows) {
    const ping = sealDisco({ type: 'ping', txid: TXID, nodeKey: A_PUB, padding: discoPingPadding(r.ping) }, A_PUB, k, NONCE);
    assert.equal(ping.length, r.ping);
    assert.deepEqual(openDisco(ping, k), { type: 'ping', txid: TXID, nodeKey: A_PUB }, 'padding is not a field');
    const pong = sealDisco({ type: 'pong', txid: TXID, src, padding: discoPongPadding(ping.length) }, B_PUB, k, NONCE);
    assert.equal(pong.length, r.pong, `pong to a ${r.ping}-byte ping`);
    assert.ok(pong.length <= ping.length);
    assert.deepEqual(openDisco(pong, k), { type: 'pong', txid: TXID, src });
  }
  // Golden: a pong padded by 3 is the plain pong plus three zeros.
  assert.equal(hex(encodeDiscoPlaintext({ type: 'pong', txid: TXID, src, padding: 3 })), '0201' + hex(TXID) + '00000000000000000000ffffc6120005a2a9' + '000000');
  // Framing: a probe can't be asked for beyond the largest packet a receiver accepts, or below a ping.
  assert.throws(() => discoPingPadding(DISCO_MAX_LEN + 1), RangeError);
  assert.throws(() => discoPingPadding(DISCO_MIN_PING_LEN - 1), RangeError);
  assert.equal(discoPongPadding(DISCO_MAX_LEN + 1), 0, 'nothing a receiver would accept is that long');
  const tooLong = sealDisco({ type: 'ping', txid: TXID, nodeKey: A_PUB, padding: discoPingPadding(DISCO_MAX_LEN) + 1 }, A_PUB, k, NONCE);
  assert.equal(openDisco(tooLong, k), undefined, 'longer than DISCO_MAX_LEN: refused');
});

test('fuzz: padded pings and pongs of random sizes round trip, and a pong never outgrows its ping (bounded budget)', async () => {
  const { discoPingPadding, discoPongPadding, DISCO_MAX_LEN, DISCO_MIN_PING_LEN } = await import('../../../shared/wire/disco.js');
  const rnd = seededBytes(11);
  const k = discoSharedKey(A_PRIV, B_PUB)!;
  for (let i = 0; i < fuzzIterations(500); i++) {
    const r = rnd(2);
    const len = DISCO_MIN_PING_LEN + (((r[0]! << 8) | r[1]!) % (DISCO_MAX_LEN - DISCO_MIN_PING_LEN + 1));
    const ping = sealDisco({ type: 'ping', txid: TXID, nodeKey: A_PUB, padding: discoPingPadding(len) }, A_PUB, k, NONCE);
    assert.equal(ping.length, len);
    assert.equal(openDisco(ping, k)?.type, 'ping');
    const pong = sealDisco({ type: 'pong', txid: TXID, src: { address: '2001:db8::1', port: 1 }, padding: discoPongPadding(len) }, B_PUB, k, NONCE);
    assert.ok(pong.length <= ping.length, `${pong.length} > ${ping.length}`);
    assert.equal(openDisco(pong, k)?.type, 'pong');
  }
});
