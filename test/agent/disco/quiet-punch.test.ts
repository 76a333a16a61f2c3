import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  newQuietPunch, QUIET_KEEP_MS, QUIET_RETRY_MS, QUIET_SILENCE_MS, QUIET_SLOW_MS, QUIET_TAIL_MS,
  quietActive, quietDue, quietEligible, quietHoldsBack, quietMayStart, quietNextWakeup, quietOpenerSignalled, startQuiet, stopQuiet,
} from '../../../agent/disco/quiet-punch.js';

const S = QUIET_SILENCE_MS;

describe('quiet punching: a round, step by step', () => {
  it('eligible only between two endpoint-independent NATs', () => {
    assert.equal(quietEligible('endpoint-independent', 'endpoint-independent'), true);
    for (const [a, b] of [['endpoint-dependent', 'endpoint-independent'], ['endpoint-independent', 'unknown'], ['blocked', 'endpoint-independent']] as const) {
      assert.equal(quietEligible(a, b), false, `${a} / ${b}`);
    }
  });

  // Step tables: at (ms after the round started), the steps due then.
  const tables = {
    opener: [
      { at: 0, steps: [] }, { at: S - 1, steps: [] },
      { at: S, steps: ['open'] }, { at: S + 300, steps: ['open'] },
      { at: S + QUIET_KEEP_MS, steps: ['keep'] }, { at: S + 2 * QUIET_KEEP_MS, steps: ['keep'] },
      { at: S + 3 * QUIET_KEEP_MS, steps: ['keep'] }, { at: S + 4 * QUIET_KEEP_MS, steps: ['keep'] },
    ],
    waiter: [
      { at: 0, steps: [] }, { at: S, steps: [] }, { at: S + QUIET_SLOW_MS - 1, steps: [] },
      { at: S + QUIET_SLOW_MS, steps: ['try'] }, { at: S + QUIET_SLOW_MS + 300, steps: ['try'] }, { at: S + QUIET_SLOW_MS + 2500, steps: ['try'] },
    ],
  } as const;
  for (const role of ['opener', 'waiter'] as const) {
    it(`${role}: silent first, then its steps, then the round ends and holds the next back`, () => {
      const q = newQuietPunch();
      startQuiet(q, role, 0);
      assert.equal(quietHoldsBack(q, { kind: 'direct' }), true);
      assert.equal(quietHoldsBack(q, { kind: 'lan' }), false, 'LAN candidates are never held back');
      assert.equal(quietHoldsBack(q, { kind: 'direct', via: 3 }), false, 'nor hard-NAT extra sockets');
      for (const row of tables[role]) assert.deepEqual(quietDue(q, row.at).steps, row.steps, `${role} at ${row.at}`);
      const end = S + QUIET_SLOW_MS + QUIET_TAIL_MS;
      assert.equal(quietNextWakeup(q), end);
      assert.deepEqual(quietDue(q, end), { steps: [], ended: true });
      assert.equal(quietActive(q), false);
      assert.equal(quietMayStart(q, end + QUIET_RETRY_MS - 1), false);
      assert.equal(quietMayStart(q, end + QUIET_RETRY_MS), true);
    });
  }

  it("the opener's call re-anchors the waiter's tries; too early or after a try it changes nothing", () => {
    const q = newQuietPunch();
    startQuiet(q, 'waiter', 0);
    quietOpenerSignalled(q, 1000); // in the first half of the silence: another call, not the opener's
    assert.equal(quietNextWakeup(q), S + QUIET_SLOW_MS);
    quietOpenerSignalled(q, S + 2000); // the opener's clock runs 2 s behind ours
    assert.equal(quietNextWakeup(q), S + 2000 + QUIET_SLOW_MS, 'the try counts from the call');
    assert.deepEqual(quietDue(q, S + 2000 + QUIET_SLOW_MS).steps, ['try']);
    quietOpenerSignalled(q, S + 2000 + QUIET_SLOW_MS + 100);
    assert.equal(quietNextWakeup(q), S + 2000 + QUIET_SLOW_MS + 300, 'a try went out: no second re-anchoring');
  });

  it('a path found ends the round without holding the next back', () => {
    const q = newQuietPunch();
    startQuiet(q, 'opener', 0);
    stopQuiet(q, 5000, false);
    assert.equal(quietActive(q), false);
    assert.equal(quietHoldsBack(q, { kind: 'direct' }), false);
    assert.equal(quietMayStart(q, 5001), true);
    assert.equal(quietNextWakeup(q), undefined);
  });
});
