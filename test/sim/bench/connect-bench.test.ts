/**
 * `knit bench connect` at its smallest: one fresh start of a cone ↔ cone pair and one
 * restart, Knit and Nebula, in the lab — the shape of the JSON and that every start
 * connected. No timing is asserted (budgets are the benchmark's report, not the
 * tests'). Where the lab can't run, the benchmark's own skip path is checked instead.
 * The percentile and budget arithmetic is checked as a table.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchConnect, connectBudgets, summarize, type ConnectBenchResult } from '../../../sim/bench/connect-bench.js';
import { canRunLab } from '../../lab/netlab.js';

test('summarize: nearest-rank percentiles over the starts that got there', () => {
  const cases: Array<{ values: Array<number | undefined>; want: ReturnType<typeof summarize> }> = [
    { values: [], want: { n: 0, ok: 0, p50Ms: null, p95Ms: null, maxMs: null } },
    { values: [undefined], want: { n: 1, ok: 0, p50Ms: null, p95Ms: null, maxMs: null } },
    { values: [300, 100, 200], want: { n: 3, ok: 3, p50Ms: 200, p95Ms: 300, maxMs: 300 } },
    { values: [...Array.from({ length: 19 }, (_, i) => i + 1), 1000], want: { n: 20, ok: 20, p50Ms: 10, p95Ms: 19, maxMs: 1000 } },
    { values: [50, undefined, 60], want: { n: 3, ok: 2, p50Ms: 50, p95Ms: 60, maxMs: 60 } },
  ];
  for (const c of cases) assert.deepEqual(summarize(c.values), c.want, JSON.stringify(c.values));
});

test('connect budgets: a start without a ping or off its best path misses', () => {
  const pair = (paths: Record<string, number>, pings: Array<number | undefined>) => ({
    pair: 'cone-cone' as const, runs: pings.length,
    knit: { firstPing: summarize(pings), firstHandshake: summarize([]), finalPath: summarize([]), finalPaths: paths, directPct: 0, stepsP50Ms: {}, trials: [] },
  });
  const run = (p: ReturnType<typeof pair>): ConnectBenchResult => ({ runs: p.runs, pairs: [p], slowStarts: [], loadAvg: { start: 0, end: 0 } });
  const ok = connectBudgets(run(pair({ direct: 2 }, [400, 900])));
  assert.deepEqual(ok.map((b) => [b.value, b.ok]), [[400, true], [900, true], [0, true]]);
  const missed = connectBudgets(run(pair({ direct: 1, relay: 1 }, [400, undefined])));
  assert.deepEqual(missed.map((b) => [b.value, b.ok]), [[400, true], [Infinity, false], [50, false]]);
});

test('connect bench: one fresh cone ↔ cone start and one restart, Knit and Nebula', { timeout: 240_000 }, async (t) => {
  const r = await benchConnect({ runs: 1, pairs: ['cone-cone'], restarts: 1 });
  const lab = canRunLab();
  if (!lab.ok) {
    assert.equal(r.skipped, lab.reason, 'the bench says why it did not run');
    return t.skip(`skipped: ${lab.reason}`);
  }
  assert.equal(r.skipped, undefined);
  assert.equal(r.pairs.length, 1);
  const p = r.pairs[0]!;
  assert.equal(p.knit.trials.length, 1);
  assert.equal(p.knit.firstPing.ok, 1, `the start got a ping reply: ${JSON.stringify(p.knit.trials[0])}`);
  assert.equal(p.knit.finalPaths.direct, 1, 'and ended direct');
  assert.equal(typeof p.knit.trials[0]!.from.joined, 'number', 'the timeline has the join');
  assert.equal(typeof p.knit.stepsP50Ms.welcome, 'number');
  assert.equal(r.restarts?.knit.ok, 1, 'the restart got a ping reply');
  if (r.nebulaSkipped) t.diagnostic(`nebula not run: ${r.nebulaSkipped}`);
  else {
    assert.equal(p.nebula?.firstPing.ok, 1, 'Nebula got a ping reply');
    assert.equal(typeof p.ratioP50, 'number');
    assert.equal(r.restarts?.nebula?.ok, 1);
  }
  assert.ok(connectBudgets(r).every((b) => typeof b.ok === 'boolean'));
});
