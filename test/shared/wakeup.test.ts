import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WakeupTimer } from '../../shared/wakeup.js';
import { ManualClock } from '../helpers/manual-clock.js';

test('WakeupTimer: one pending timer at the latest asked time; re-arming the same time keeps it; cancel and Infinity disarm', () => {
  const clock = new ManualClock();
  const fired: number[] = [];
  const t = new WakeupTimer(clock, () => fired.push(clock.now()));
  const start = clock.now();
  t.arm(start + 100);
  t.arm(start + 100); // unchanged: no second timer
  clock.advance(100);
  assert.deepEqual(fired, [start + 100]);
  t.arm(start + 500);
  t.arm(start + 300); // moved earlier: only the new time fires
  clock.advance(1000);
  assert.deepEqual(fired, [start + 100, start + 300]);
  t.arm(clock.now() + 10);
  t.cancel();
  t.arm(undefined);
  t.arm(Infinity);
  clock.advance(1000);
  assert.equal(fired.length, 2);
  t.arm(clock.now() - 50); // already due: fires at once (the next turn of the clock)
  clock.advance(0);
  assert.equal(fired.length, 3);
});
