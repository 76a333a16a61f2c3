/**
 * The NAT grid on the simulator, running the real agents and coordinator
 * cores: every cell reaches the path RFC 4787 reasoning expects, within a
 * virtual-time budget, and the same seed gives the same grid.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HARD_NAT_MAX_PROBES_PER_ATTEMPT } from '../../agent/disco/hard-nat.js';
import { formatHardNatReport, GRID_CELL_BUDGET_MS, GRID_TYPES, runGrid, runHardNatSeeds, type GridCell } from '../../sim/scenarios/grid.js';

/** An authenticated path within 3 s of virtual time (the issue's p95 for loopback is 3 s too). */
const PATH_BUDGET_MS = 3000;
/** Seeds for the hard-NAT success rate (KNIT_HARD_NAT_SEEDS raises it for a longer measurement). */
const HARD_NAT_SEEDS = Number(process.env.KNIT_HARD_NAT_SEEDS ?? 50);
/** The issue's bar: hard ↔ easy direct in at least 98% of seeds. */
const HARD_NAT_MIN_RATE = 0.98;

let first: GridCell[] | undefined;

test('every grid cell reaches its expected path, in virtual-time budget', async (t) => {
  first = await runGrid(1);
  assert.equal(first.length, (GRID_TYPES.length * (GRID_TYPES.length + 1)) / 2 + 1);
  for (const c of first) {
    assert.equal(c.path, c.expected, `${c.a} ↔ ${c.b}`);
    // Hard-NAT cells: the relay is up within the budget (no user packet waits), direct follows after probing.
    const t = c.hardNat ? c.firstPathMs : c.timeMs;
    if (c.path !== 'none') assert.ok(t !== undefined && t <= PATH_BUDGET_MS, `${c.a} ↔ ${c.b} took ${t} ms`);
  }
  const hardHard = first.find((c) => c.a === 'hard' && c.b === 'hard')!;
  assert.equal(hardHard.path, 'relay', 'hard ↔ hard stays relayed');
  assert.equal(hardHard.hardNatProbes, undefined, 'and spends no hard-NAT probes');
  const lan = first.find((c) => c.a === 'same-lan')!;
  assert.equal(lan.path, 'lan');
  const none = first.filter((c) => c.path === 'none');
  t.diagnostic(`pairs without a path: ${none.map((c) => `${c.a}↔${c.b}`).join(', ') || 'none'}`);
  // A pair with an easy side that is not port-restricted toward a hard NAT is always direct.
  for (const c of first.filter((x) => x.a !== 'hard' && x.b !== 'hard')) assert.notEqual(c.path, 'none', `${c.a} ↔ ${c.b}`);
});

test('deterministic: the same seed gives the same grid, another seed other timings', async () => {
  const again = await runGrid(1);
  assert.deepEqual(again, first);
  const other = await runGrid(2);
  assert.deepEqual(other.map((c) => c.path), again.map((c) => c.path), 'paths do not depend on the seed');
  assert.notDeepEqual(other.map((c) => c.timeMs), again.map((c) => c.timeMs), 'timings do (jitter, txids)');
});

test(`hard ↔ easy is direct in ≥ 98% of ${HARD_NAT_SEEDS} seeds, within the probe budget; the relay carries traffic meanwhile`, async (t) => {
  const seeds = Array.from({ length: HARD_NAT_SEEDS }, (_, i) => 7000 + i);
  const r = await runHardNatSeeds('hard', 'easy', seeds);
  t.diagnostic(formatHardNatReport(r));
  assert.ok(r.rate >= HARD_NAT_MIN_RATE, formatHardNatReport(r));
  assert.equal(r.relayLate, 0, 'the relay path came first in every seed');
  // Attempts are ≥ 20 s apart and the cell lasts 45 s: at most 3 attempts per side.
  assert.ok(r.probesMax <= HARD_NAT_MAX_PROBES_PER_ATTEMPT * Math.ceil(GRID_CELL_BUDGET_MS / 20_000), `probes ${r.probesMax}`);
});

test('hard-seq ↔ easy: port prediction makes it direct in nearly every seed, with few probes', async (t) => {
  const seeds = Array.from({ length: 20 }, (_, i) => 8000 + i);
  const r = await runHardNatSeeds('hard-seq', 'easy', seeds);
  t.diagnostic(formatHardNatReport(r));
  assert.ok(r.rate >= HARD_NAT_MIN_RATE, formatHardNatReport(r));
  assert.ok(r.probesMean < 200, `prediction should need few probes, used ${r.probesMean} on average`);
});
