/**
 * The virtual clock: timers fire in (time, creation) order and only when the
 * clock is run; cancelled timers never fire; promise continuations settle
 * between instants; nothing here waits on real time.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SIM_EPOCH_MS, VirtualClock } from '../../sim/clock.js';

test('timers fire in (time, creation) order, only when the clock runs, and the clock lands on the end', async () => {
  const clock = new VirtualClock();
  const order: string[] = [];
  clock.setTimeout(() => order.push('b'), 10);
  clock.setTimeout(() => order.push('a'), 5);
  clock.setTimeout(() => order.push('c'), 10);
  const x = clock.setTimeout(() => order.push('x'), 7);
  clock.clearTimeout(x);
  clock.clearTimeout(x); // twice is harmless
  clock.setTimeout(() => order.push('late'), 11);
  assert.deepEqual(order, []);
  assert.equal(clock.pending, 4);
  await clock.runFor(10);
  assert.deepEqual(order, ['a', 'b', 'c']);
  assert.equal(clock.elapsed(), 10);
  assert.equal(clock.now(), SIM_EPOCH_MS + 10);
  assert.equal(clock.wallNow(), clock.now());
  assert.equal(clock.nextEventAt(), SIM_EPOCH_MS + 11);
  await clock.runFor(5);
  assert.deepEqual(order, ['a', 'b', 'c', 'late']);
  assert.equal(clock.elapsed(), 15);
  assert.equal(clock.pending, 0);
  assert.equal(clock.firedTimers, 4);
});

test('step table: advanceToNextEvent moves instant by instant, 0 ms timers fire within the same instant', async () => {
  const clock = new VirtualClock({ startMs: 0 });
  const log: string[] = [];
  clock.setTimeout(() => {
    log.push(`t1@${clock.now()}`);
    clock.setTimeout(() => log.push(`t1-child@${clock.now()}`), 0);
  }, 3);
  clock.setTimeout(() => log.push(`t2@${clock.now()}`), 3);
  clock.setTimeout(() => log.push(`t3@${clock.now()}`), 8);
  const steps = [
    { want: true, at: 3, log: ['t1@3', 't2@3', 't1-child@3'] },
    { want: true, at: 8, log: ['t3@8'] },
    { want: false, at: 8, log: [] },
  ];
  for (const [i, s] of steps.entries()) {
    log.length = 0;
    assert.equal(await clock.advanceToNextEvent(), s.want, `step ${i}`);
    assert.equal(clock.now(), s.at, `step ${i}`);
    assert.deepEqual(log, s.log, `step ${i}`);
  }
});

test('promise continuations settle after each instant, before time moves on', async () => {
  const clock = new VirtualClock({ startMs: 0 });
  const log: string[] = [];
  clock.setTimeout(() => {
    void (async () => {
      await Promise.resolve();
      await Promise.resolve();
      // Set from a continuation: must still fire at this same instant, before the 1 ms timer.
      clock.setTimeout(() => log.push(`after-await@${clock.now()}`), 0);
    })();
  }, 5);
  clock.setTimeout(() => log.push(`next@${clock.now()}`), 6);
  await clock.runFor(10);
  assert.deepEqual(log, ['after-await@5', 'next@6']);
});

test('runUntil with a stop condition returns at the first instant it holds', async () => {
  const clock = new VirtualClock({ startMs: 0 });
  let n = 0;
  for (const at of [10, 20, 30, 40]) clock.setTimeout(() => n++, at);
  await clock.runUntil(100, () => n >= 2);
  assert.equal(clock.now(), 20);
  await clock.runUntil(100);
  assert.equal(n, 4);
  assert.equal(clock.now(), 100);
});

test('callLater passes its argument; settle: false runs without yielding to the event loop', async () => {
  const clock = new VirtualClock({ startMs: 0, settle: false });
  const got: number[] = [];
  const fn = (x: number) => got.push(x);
  for (let i = 0; i < 5; i++) clock.callLater(5 - i, fn, i);
  await clock.runFor(5);
  assert.deepEqual(got, [4, 3, 2, 1, 0]);
});

test('bad delays are programmer errors; a timer re-arming at 0 ms forever is reported, not a hang', async () => {
  const clock = new VirtualClock({ startMs: 0, settle: false });
  assert.throws(() => clock.setTimeout(() => {}, Number.NaN), RangeError);
  assert.throws(() => clock.setTimeout(() => {}, Number.POSITIVE_INFINITY), RangeError);
  assert.throws(() => clock.runFor(-1), RangeError);
  clock.setTimeout(() => {}, -5); // negative is "now", as in Node
  assert.equal(clock.nextEventAt(), 0);
  const spin = () => { clock.setTimeout(spin, 0); };
  clock.setTimeout(spin, 1);
  await assert.rejects(clock.runFor(2), RangeError);
});

test('heavy cancel-and-rearm (what an agent does on every event) keeps the heap small and the order right', async () => {
  const clock = new VirtualClock({ startMs: 0, settle: false });
  const fired: number[] = [];
  let h = clock.setTimeout(() => fired.push(-1), 1000);
  for (let i = 0; i < 20_000; i++) {
    clock.clearTimeout(h);
    h = clock.setTimeout(() => fired.push(i), 1000 + (i % 7));
  }
  assert.equal(clock.pending, 1);
  await clock.runFor(2000);
  assert.deepEqual(fired, [19_999]);
  assert.equal(clock.nextEventAt(), undefined);
});
