/**
 * The coordinator benchmark at a small size: real processes on loopback (the
 * coordinator, one load generator), so this is an integration test of the
 * bench's plumbing and of the coordinator's fan-out — the shape of the JSON,
 * every client on the map, every change delivered to every peer. No timing is
 * asserted: speed is the benchmark's job (`npm run bench`), not the tests'.
 * The same for two replicas on a throwaway PostgreSQL server (skipped, and
 * said so, where PostgreSQL isn't installed): every change reaches every agent
 * on both replicas, and both end at the same version.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runBenchCli } from '../../../sim/bench/cli.js';
import { benchCoordinator, benchReplicas } from '../../../sim/bench/coordinator-bench.js';
import { coordinatorBudgets, coordinatorSizes, replicaBudgets } from '../../../sim/bench/coordinator-budgets.js';
import { postgresUnavailable } from '../../../sim/bench/postgres-server.js';
import { KnitError } from '../../../shared/errors.js';
import { registerSecret, saveTestLog } from '../../security/log-secrets.js';

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

test('coordinator bench with 2 replicas at 40 agents: every change reaches every agent on both replicas, which end at one version', { timeout: 120_000 }, async (t) => {
  const missing = postgresUnavailable();
  if (missing) return t.skip(`skipped: ${missing}`);
  const r = await benchReplicas({
    replicas: 2, agents: 40, changes: 4, idleWindowMs: 200,
    postgres: { onSecret: (s) => registerSecret(s), onLog: (log) => saveTestLog('postgres-replica-bench', log) },
  });
  assert.ok(!('skipped' in r), 'PostgreSQL is installed, so the run is not skipped');
  for (const key of ['joinPerSec', 'connectPerSec', 'fanoutP50Ms', 'fanoutP99Ms', 'sameReplicaFanoutP50Ms', 'crossReplicaFanoutP50Ms', 'crossReplicaFanoutP99Ms', 'perChangeMs', 'reconnectStormMs'] as const) {
    assert.equal(typeof r[key], 'number', key);
    assert.ok(Number.isFinite(r[key]), `${key} is a finite number (${r[key]})`);
  }
  assert.equal(r.replicas, 2);
  assert.equal(r.agents, 40);
  assert.deepEqual(r.agentsPerReplica, [20, 20], 'agents are dealt out round-robin');
  assert.equal(r.connected, 40, 'every client holds a map');
  assert.deepEqual(r.problems, {}, `no protocol problems: ${r.problemSamples.join('; ')}`);
  assert.equal(r.fanoutDeliveries, 4 * 39, 'each change reached each of the 39 other agents, on either replica');
  assert.equal(r.fanoutMissed, 0);
  assert.equal(r.replicaRssMB.length, 2);
  assert.equal(r.idleCpuPct.length, 2);
  assert.equal(r.reconnectStormHeld, 40, 'after the storm every client is on the current version');
  assert.equal(r.versions.length, 2);
  assert.ok(r.versionsAgree && r.versions[0] === r.versions[1], `both replicas end at one version (${r.versions.join(', ')})`);

  const budgets = replicaBudgets([r]);
  assert.ok(budgets.length > 0 && budgets.every((b) => b.ok && b.name.startsWith('coordinator 2 replicas × 40:')), JSON.stringify(budgets.filter((b) => !b.ok)));
});

test('knit bench --replicas: 2 to 8, and only with `coordinator`', async () => {
  for (const argv of [['bench', 'agent', '--replicas', '2'], ['bench', 'coordinator', '--replicas', '1'], ['bench', 'coordinator', '--replicas', '9'], ['bench', 'coordinator', '--replicas', 'x']]) {
    assert.equal(await runBenchCli(argv), 2, argv.join(' '));
  }
});

test('coordinator bench sizes: one or a list, bounded; nonsense is a usage error', () => {
  assert.deepEqual(coordinatorSizes(undefined), [1000, 10_000]);
  assert.deepEqual(coordinatorSizes('1000,10000'), [1000, 10_000]);
  assert.deepEqual(coordinatorSizes('50'), [50]);
  for (const bad of ['0', '1', '20001', 'x', '5,,6', '1,2,3,4,5']) {
    assert.throws(() => coordinatorSizes(bad), (e: unknown) => e instanceof KnitError && e.code === 'KNIT_ERR_USAGE', bad);
  }
});
