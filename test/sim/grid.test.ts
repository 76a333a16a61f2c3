/**
 * The NAT grid on the simulator, running the real agents and coordinator
 * cores: every cell reaches the path RFC 4787 reasoning expects, within a
 * virtual-time budget, and the same seed gives the same grid.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GRID_TYPES, runGrid, type GridCell } from '../../sim/scenarios/grid.js';

/** An authenticated path within 3 s of virtual time (the issue's p95 for loopback is 3 s too). */
const PATH_BUDGET_MS = 3000;

let first: GridCell[] | undefined;

test('every grid cell reaches its expected path, in virtual-time budget', async (t) => {
  first = await runGrid(1);
  assert.equal(first.length, (GRID_TYPES.length * (GRID_TYPES.length + 1)) / 2 + 1);
  for (const c of first) {
    assert.equal(c.path, c.expected, `${c.a} ↔ ${c.b}`);
    if (c.path !== 'none') assert.ok(c.timeMs !== undefined && c.timeMs <= PATH_BUDGET_MS, `${c.a} ↔ ${c.b} took ${c.timeMs} ms`);
  }
  const lan = first.find((c) => c.a === 'same-lan')!;
  assert.equal(lan.path, 'lan');
  const none = first.filter((c) => c.path === 'none');
  t.diagnostic(`pairs without a path today (relay / port prediction are issue 7): ${none.map((c) => `${c.a}↔${c.b}`).join(', ')}`);
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
