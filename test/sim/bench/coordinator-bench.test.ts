/**
 * The coordinator benchmark at a small size: real processes on loopback (the
 * coordinator, one load generator), so this is an integration test of the
 * bench's plumbing and of the coordinator's fan-out — the shape of the JSON,
 * every client on the map, every change delivered to every peer. No timing is
 * asserted: speed is the benchmark's job (`npm run bench`), not the tests'.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchCoordinator, coordinatorBudgets, coordinatorSizes } from '../../../sim/bench/coordinator-bench.js';
import { KnitError } from '../../../shared/errors.js';

test('coordinator bench at 50 agents: every client joins, connects, gets every change and rides out the storm', { timeout: 120_000 }, async () => {
  const r = await benchCoordinator({ agents: 50, changes: 3, idleWindowMs: 200 });
  for (const key of ['agents', 'joinPerSec', 'connectPerSec', 'bytesPerAgent', 'heapBytesPerAgent', 'idleCpuPct', 'fanoutP50Ms', 'fanoutP99Ms', 'perChangeMs', 'reconnectStormMs'] as const) {
    assert.equal(typeof r[key], 'number', key);
    assert.ok(Number.isFinite(r[key]), `${key} is a finite number (${r[key]})`);
  }
  assert.equal(r.agents, 50);
  assert.equal(r.connected, 50, 'every client holds a map');
  assert.deepEqual(r.problems, {}, `no protocol problems: ${r.problemSamples.join('; ')}`);
  assert.equal(r.fanoutDeliveries, 3 * 49, 'each change reached each of the 49 peers');
  assert.equal(r.fanoutMissed, 0);
  assert.ok(r.deltaBytesPerEndpointChange > 0 && r.deltaBytesPerEndpointChange <= 200, `an endpoint change is one small delta (${r.deltaBytesPerEndpointChange} bytes)`);
  assert.equal(r.reconnectStormHeld, 50, 'after the storm every client is on the current version');
  assert.ok(r.snapshotsEncoded < r.snapshotsSent, 'snapshots are shared, not encoded per client');

  const budgets = coordinatorBudgets([r], false);
  assert.ok(budgets.length > 0 && budgets.every((b) => typeof b.ok === 'boolean' && b.name.startsWith('coordinator 50:')));
});

test('coordinator bench sizes: one or a list, bounded; nonsense is a usage error', () => {
  assert.deepEqual(coordinatorSizes(undefined), [1000, 10_000]);
  assert.deepEqual(coordinatorSizes('1000,10000'), [1000, 10_000]);
  assert.deepEqual(coordinatorSizes('50'), [50]);
  for (const bad of ['0', '1', '20001', 'x', '5,,6', '1,2,3,4,5']) {
    assert.throws(() => coordinatorSizes(bad), (e: unknown) => e instanceof KnitError && e.code === 'KNIT_ERR_USAGE', bad);
  }
});
