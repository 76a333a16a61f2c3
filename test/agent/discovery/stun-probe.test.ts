import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeBindingResponse, parseStun } from '../../../shared/wire/stun.js';
import { candidateEndpoints, REDISCOVER_MS, StunProbe, STUN_ROUND_TIMEOUT_MS, type DiscoveryAction } from '../../../agent/discovery/stun-probe.js';
import { seededBytes } from '../../helpers/manual-clock.js';

const S1 = { address: '198.18.0.1', port: 3478 };
const S2 = { address: '198.18.0.1', port: 3479 };

function answer(a: DiscoveryAction, mapped: { address: string; port: number }) {
  assert.equal(a.type, 'send');
  const req = parseStun((a as { bytes: Uint8Array }).bytes)!;
  return encodeBindingResponse(req.txid, mapped);
}

test('two observers see the same mapping → endpoint-independent; different → endpoint-dependent', () => {
  const rows = [
    { name: 'EIM', m1: { address: '198.18.9.9', port: 41641 }, m2: { address: '198.18.9.9', port: 41641 }, want: 'endpoint-independent', preserved: true },
    { name: 'EDM', m1: { address: '198.18.9.9', port: 1024 }, m2: { address: '198.18.9.9', port: 1025 }, want: 'endpoint-dependent', preserved: false },
    { name: 'no NAT', m1: { address: '10.0.0.2', port: 41641 }, m2: { address: '10.0.0.2', port: 41641 }, want: 'none', preserved: true },
  ];
  for (const r of rows) {
    const p = new StunProbe(() => 41641, seededBytes(1));
    p.configure([S1, S2], ['10.0.0.2']);
    const sends = p.trigger(0);
    assert.equal(sends.length, 2);
    assert.deepEqual(p.packet(S1, answer(sends[0]!, r.m1), 5), []);
    const done = p.packet(S2, answer(sends[1]!, r.m2), 6);
    assert.equal(done.length, 1, r.name);
    const res = (done[0] as { result: { natType: string; portPreserved?: boolean; reflexive: unknown[] } }).result;
    assert.equal(res.natType, r.want, r.name);
    assert.equal(res.portPreserved, r.preserved, r.name);
  }
});

test('one observer: unknown mapping; no answers: retransmits on schedule, then blocked', () => {
  const p = new StunProbe(() => 41641, seededBytes(2));
  p.configure([S1], ['10.0.0.2']);
  const steps: { at: number; sends: number }[] = [{ at: 0, sends: 1 }, { at: 249, sends: 0 }, { at: 250, sends: 1 }, { at: 750, sends: 1 }, { at: 1500, sends: 0 }];
  let first: DiscoveryAction | undefined;
  for (const s of steps) {
    const out = s.at === 0 ? p.trigger(0) : p.tick(s.at);
    first ??= out[0];
    assert.equal(out.filter((a) => a.type === 'send').length, s.sends, `at ${s.at}`);
  }
  const end = p.tick(STUN_ROUND_TIMEOUT_MS);
  assert.equal((end[0] as { result: { natType: string } }).result.natType, 'blocked');
  assert.equal(p.nextWakeup(), STUN_ROUND_TIMEOUT_MS + REDISCOVER_MS, 'the next round is scheduled');
  const again = p.tick(STUN_ROUND_TIMEOUT_MS + REDISCOVER_MS);
  assert.equal(again.length, 1, 'periodic re-discovery');
  const ok = p.packet(S1, answer(again[0]!, { address: '198.18.9.9', port: 5 }), STUN_ROUND_TIMEOUT_MS + REDISCOVER_MS + 3);
  assert.equal((ok[0] as { result: { natType: string } }).result.natType, 'unknown');
});

test('answers are accepted only for an outstanding transaction from the server asked', () => {
  const p = new StunProbe(() => 41641, seededBytes(3));
  p.configure([S1], []);
  const [send] = p.trigger(0);
  const res = answer(send!, { address: '198.18.9.9', port: 7 });
  assert.deepEqual(p.packet({ address: '198.18.0.66', port: 3478 }, res, 1), [], 'from another address');
  assert.deepEqual(p.packet(S1, encodeBindingResponse(new Uint8Array(12), { address: '1.2.3.4', port: 1 }), 1), [], 'unknown txid');
  assert.deepEqual(p.packet(S1, new Uint8Array([1, 2, 3]), 1), [], 'garbage');
  assert.equal(p.packet(S1, res, 2).length, 1);
});

test('candidates: reflexive first, then local addresses with the tunnel port, deduplicated and capped', () => {
  assert.deepEqual(
    candidateEndpoints(['10.0.0.2', 'fd00::2'], 41641, [{ address: '198.18.9.9', port: 41641 }, { address: '198.18.9.9', port: 41641 }]),
    ['198.18.9.9:41641', '10.0.0.2:41641', '[fd00::2]:41641'],
  );
  assert.equal(candidateEndpoints(Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}`), 1, []).length, 16);
});
