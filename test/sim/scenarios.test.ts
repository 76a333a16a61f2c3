import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runScenario, runStorm } from '../../sim/scenarios/index.js';

// Virtual-time budgets: recovery after a roam within about one dead-path detection plus a punch.
const BUDGET_MS: Record<string, number> = { roaming: 2_000, renumber: 30_000, expiry: 30_000, outage: 20_000, 'outage-restart': 10_000, lan: 2_000, 'lan-outage': 10_000, loss: 5_000 };

for (const name of Object.keys(BUDGET_MS)) {
  test(`scenario ${name}`, async (t) => {
    const r = await runScenario(name, 3);
    t.diagnostic(JSON.stringify({ timeMs: r.timeMs, wallMs: r.wallMs, details: r.details }));
    assert.ok(r.ok, JSON.stringify(r.details));
    assert.ok(r.timeMs !== undefined && r.timeMs <= BUDGET_MS[name]!, `${name}: ${r.timeMs} ms virtual`);
  });
}

test('storm: 40 agents join at once (every peer punched at once); maps converge, pairs connect', async (t) => {
  const r = await runStorm(40, 5);
  t.diagnostic(JSON.stringify(r));
  assert.ok(r.ok, JSON.stringify(r.details));
});

test('storm: 200 agents join at once (a big mesh: paths on demand); maps converge, pinged pairs connect', async (t) => {
  const r = await runStorm(200, 6);
  t.diagnostic(JSON.stringify(r));
  assert.ok(r.ok, JSON.stringify(r.details));
  assert.equal((r.details as { pingReplies: number }).pingReplies, (r.details as { sampledPairs: number }).sampledPairs);
  assert.ok((r.details as { packets: number }).packets < 20 * 200, 'idle peers are not probed');
});
