// SourceBudget: a token bucket per packet source.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SourceBudget } from '../../shared/source-budget.js';

describe('SourceBudget', () => {
  it('allows a burst of perSecond, then refills at perSecond', () => {
    const b = new SourceBudget(4);
    const burst = Array.from({ length: 6 }, () => b.allow('198.18.0.1', 0));
    assert.deepEqual(burst, [true, true, true, true, false, false]);
    assert.equal(b.allow('198.18.0.1', 250), true, 'a quarter second later: one token back');
    assert.equal(b.allow('198.18.0.1', 250), false);
    assert.equal([0, 1, 2, 3, 4].filter(() => b.allow('198.18.0.1', 60_000)).length, 4, 'never more than the burst, however long idle');
  });

  it('keeps one bucket per source', () => {
    const b = new SourceBudget(1);
    assert.equal(b.allow('198.18.0.1', 0), true);
    assert.equal(b.allow('198.18.0.1', 0), false);
    assert.equal(b.allow('198.18.0.2', 0), true, 'another source is not charged');
  });

  it('forgets the least recently seen source beyond maxSources (a fresh bucket, never a fuller one)', () => {
    const b = new SourceBudget(1, 2);
    b.allow('a', 0);
    b.allow('b', 0);
    b.allow('c', 0); // a is forgotten
    assert.equal(b.allow('a', 0), true);
    assert.equal(b.allow('c', 0), false, 'c is still remembered, and empty');
  });
});
