import assert from 'node:assert/strict';
import { test } from 'node:test';
import { healthSummary, worstLevel, type HealthCheck } from '../../agent/health.js';

const checks: HealthCheck[] = [
  { check: 'engine', level: 'ok', detail: 'applied' },
  { check: 'ipv6', level: 'warn', detail: 'IPv6 is disabled on this host; the tunnel carries IPv4 only' },
  { check: 'firewall', level: 'fail', detail: 'the input policy drops the tunnel port', fix: 'open udp/41641' },
];

test('worstLevel: fail over warn over ok; none is ok', () => {
  assert.equal(worstLevel([]), 'ok');
  assert.equal(worstLevel(checks.slice(0, 1)), 'ok');
  assert.equal(worstLevel(checks.slice(0, 2)), 'warn');
  assert.equal(worstLevel(checks), 'fail');
});

test('healthSummary: nothing when all is ok; else the worst level and every check that is not ok', () => {
  assert.equal(healthSummary(checks.slice(0, 1)), undefined);
  const line = healthSummary(checks)!;
  assert.match(line, /^health fail: /);
  assert.match(line, /ipv6: IPv6 is disabled/);
  assert.match(line, /firewall: the input policy/);
  assert.doesNotMatch(line, /engine:/);
});
