// The port the relay saw our bind come from becomes a candidate on our public address when it
// differs from STUN's (a new flow's NAT port after a clash: agent/self-endpoints.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RELAY_OBSERVED_KEEP_MS, SelfEndpoints } from '../../agent/self-endpoints.js';
import { silentLogger } from '../../shared/log.js';
import { encodeBindingResponse, parseBindingRequest } from '../../shared/wire/stun.js';

test('a relay-observed port other than STUN\'s is reported on the public address, until it goes stale', () => {
  let now = 1000;
  const reports: string[][] = [];
  const sent: { bytes: Uint8Array; to: { address: string; port: number } }[] = [];
  const s = new SelfEndpoints({
    clock: { now: () => now, wallNow: () => now, setTimeout: () => 0, clearTimeout: () => {} } as never,
    random: (n) => new Uint8Array(n).fill(1), logger: silentLogger, udp: { send: (bytes, to) => sent.push({ bytes, to }) },
    localAddresses: () => ['10.1.0.10'], tunnelPort: () => 41641, report: (eps) => reports.push(eps), publicEndpointMoved: () => {}, arm: () => {},
  });
  s.setObservers([{ address: '198.18.1.10', port: 3478 }]);
  s.reconfigure(now);
  // The observer answers each request: we are 198.18.1.13:41641 (the port kept).
  for (const p of sent.splice(0)) {
    const req = parseBindingRequest(p.bytes)!;
    s.packet(p.to, encodeBindingResponse(req.txid, { address: '198.18.1.13', port: 41641 }), now);
  }
  assert.ok(reports.at(-1)!.includes('198.18.1.13:41641'));
  s.relayObservedPort(41641, now);
  assert.ok(!reports.at(-1)!.includes('198.18.1.13:1962'), 'the same port adds nothing');
  s.relayObservedPort(1962, now);
  assert.deepEqual(reports.at(-1)!.filter((e) => e.startsWith('198.18.1.13:')).sort(), ['198.18.1.13:1962', '198.18.1.13:41641']);
  now += RELAY_OBSERVED_KEEP_MS + 1;
  s.report();
  assert.ok(!reports.at(-1)!.includes('198.18.1.13:1962'), 'stale once the relay stops confirming it');
});
