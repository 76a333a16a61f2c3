/**
 * Seeded randomness: the same seed gives the same stream, other seeds other
 * streams, and the draws cover their ranges. The golden values pin the
 * generator: every recorded sim run depends on it, so changing it must be a
 * deliberate act that updates this table.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../sim/random.js';

test('golden: the first outputs of seed 1 and seed 2', () => {
  const a = new SeededRandom(1);
  const b = new SeededRandom(2);
  const first = (r: SeededRandom) => Array.from({ length: 4 }, () => r.next().toString(16).padStart(8, '0'));
  assert.deepEqual(first(a), GOLDEN_SEED_1);
  assert.deepEqual(first(b), GOLDEN_SEED_2);
});

// Checked against the widely used reference JS sfc32 (bryc/code, PRNGs.md) given the same
// seeded state: words from the splitmix-style mixer, counter 1, 15 warm-up rounds.
const GOLDEN_SEED_1 = ['449b7e4f', '76a3ace2', '1040b53d', '503c87a1'];
const GOLDEN_SEED_2 = ['e52ff1cb', '22be5e19', '2481ca92', '51a4c9bc'];

test('same seed, same stream; another seed, another stream; forks are independent of later parent draws', () => {
  const draw = (r: SeededRandom) => [r.next(), r.float(), r.int(1, 6), ...r.bytes(7)];
  assert.deepEqual(draw(new SeededRandom(42)), draw(new SeededRandom(42)));
  assert.notDeepEqual(draw(new SeededRandom(42)), draw(new SeededRandom(43)));
  const p1 = new SeededRandom(9);
  const p2 = new SeededRandom(9);
  const f1 = p1.fork();
  const f2 = p2.fork();
  p2.next(); // the parent moving on does not move the child
  assert.deepEqual(draw(f1), draw(f2));
  assert.notDeepEqual(draw(p1.fork()), draw(new SeededRandom(9)));
});

test('ranges: float in [0,1), int inclusive bounds hit both ends, bytes of the asked length; chance(0) never, chance(1) always', () => {
  const r = new SeededRandom(3);
  const seen = new Set<number>();
  let min = 1;
  let max = 0;
  for (let i = 0; i < 5000; i++) {
    const f = r.float();
    assert.ok(f >= 0 && f < 1);
    min = Math.min(min, f);
    max = Math.max(max, f);
    const k = r.int(-2, 2);
    assert.ok(Number.isInteger(k) && k >= -2 && k <= 2);
    seen.add(k);
  }
  assert.deepEqual([...seen].sort((x, y) => x - y), [-2, -1, 0, 1, 2]);
  assert.ok(min < 0.01 && max > 0.99, `spread ${min}..${max}`);
  for (const n of [0, 1, 3, 4, 5, 33]) assert.equal(r.bytes(n).length, n);
  assert.equal(Array.from({ length: 100 }, () => r.chance(0)).filter(Boolean).length, 0);
  assert.equal(Array.from({ length: 100 }, () => r.chance(1)).filter(Boolean).length, 100);
  // Roughly uniform bytes: each bit value appears about half the time.
  const bytes = r.bytes(4096);
  const ones = bytes.reduce((acc, b) => acc + (b & 1), 0);
  assert.ok(ones > 1800 && ones < 2300, `${ones} odd bytes of 4096`);
});

test('bad arguments are programmer errors', () => {
  assert.throws(() => new SeededRandom(1.5), RangeError);
  const r = new SeededRandom(1);
  assert.throws(() => r.int(5, 4), RangeError);
  assert.throws(() => r.int(0, 1.5), RangeError);
  assert.throws(() => r.bytes(-1), RangeError);
});
