import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StunProbe, type DiscoveryAction } from '../../../agent/discovery/stun-probe.js';
import { encodeBindingResponse, parseBindingRequest } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';

// The agent runtime's adapter: each call must reach the core as the right event.
const S1 = { address: '198.18.0.1', port: 3478 };
const answer = (a: DiscoveryAction, mapped: { address: string; port: number }) => {
  assert.equal(a.type, 'send');
  return encodeBindingResponse(parseBindingRequest((a as { bytes: Uint8Array }).bytes)!.txid, mapped);
};

test('StunProbe: configure + trigger start a round; packet, tick and nextWakeup reach the core', () => {
  let port = 41641;
  const p = new StunProbe(() => port, seededBytes(3));
  assert.deepEqual(p.trigger(0), [], 'nothing configured, nothing sent');
  p.configure([S1], ['10.0.0.2']);
  const [send] = p.trigger(0);
  assert.equal(p.nextWakeup(), 250);
  assert.equal(p.tick(250).length, 1, 'retransmit');
  const done = p.packet(S1, answer(send!, { address: '198.18.9.9', port: 41641 }), 300);
  assert.equal(done.length, 1);
  assert.equal(p.last?.reason, 'start');
  assert.deepEqual(p.last?.candidates, ['198.18.9.9:41641', '10.0.0.2:41641']);

  // The same observers with new addresses is a roam; the tunnel port is read at each trigger.
  port = 50000;
  p.configure([S1], ['10.9.0.1']);
  const [again] = p.trigger(1000);
  p.packet(S1, answer(again!, { address: '198.18.9.9', port: 50000 }), 1010);
  assert.equal(p.last?.reason, 'interfaces-changed');
  assert.equal(p.last?.localPort, 50000);
  assert.equal(p.last?.portPreserved, true);
});
