// BoundedMap: a least-recently-used map that allocates only what it holds.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedMap } from '../../shared/bounded-map.js';

describe('BoundedMap', () => {
  it('keeps at most max entries, dropping the least recently used', () => {
    const m = new BoundedMap<string, number>(3);
    m.set('a', 1).set('b', 2).set('c', 3);
    assert.equal(m.get('a'), 1); // a is now the most recent: b is the oldest
    m.set('d', 4);
    assert.equal(m.size, 3);
    assert.equal(m.has('b'), false);
    assert.deepEqual(['a', 'c', 'd'].map((k) => m.get(k)), [1, 3, 4]);
  });

  it('setting an existing key refreshes it instead of growing', () => {
    const m = new BoundedMap<string, number>(2);
    m.set('a', 1).set('b', 2).set('a', 10).set('c', 3);
    assert.equal(m.get('a'), 10);
    assert.equal(m.has('b'), false);
    assert.equal(m.size, 2);
  });

  it('has() does not refresh, delete() removes', () => {
    const m = new BoundedMap<string, number>(2);
    m.set('a', 1).set('b', 2);
    assert.equal(m.has('a'), true);
    m.set('c', 3);
    assert.equal(m.has('a'), false, 'has() left a the oldest');
    assert.equal(m.delete('b'), true);
    assert.equal(m.size, 1);
  });

  it('refuses a size that is not a positive integer', () => {
    for (const max of [0, -1, 1.5, Number.NaN]) assert.throws(() => new BoundedMap(max), RangeError);
  });
});
