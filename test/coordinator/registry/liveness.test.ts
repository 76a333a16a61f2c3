import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REPLICA_TIMEOUT_MS, ReplicaLiveness } from '../../../coordinator/registry/liveness.js';

test('replica liveness: dead only after a count stood still for the timeout, on the observer\'s clock; itself never', () => {
  const l = new ReplicaLiveness('me');
  const T = REPLICA_TIMEOUT_MS;
  // [now, counts as read from the store, replicas found dead]
  const steps: [number, Record<string, number>, string[], string][] = [
    [0, { me: 1, a: 5, b: 9 }, [], 'first sight: nothing to compare yet'],
    [T - 1, { me: 9, a: 5, b: 10 }, [], 'a stood still, but not for the timeout; b moved'],
    [T, { me: 10, a: 5, b: 10 }, ['a'], 'a still since 0: dead'],
    [T + 1, { me: 11, a: 6, b: 10 }, [], 'a is seen afresh (it came back, or a new count): not dead yet'],
    [2 * T - 1, { me: 12, b: 10 }, ['b'], 'b still since T - 1; a left the store: forgotten'],
    [3 * T, { me: 13, a: 6 }, [], 'a reappears: first sight again'],
    [4 * T, { me: 14, a: 6 }, ['a'], ''],
    [9 * T, { me: 14 }, [], 'its own count never counts, however still'],
  ];
  for (const [now, counts, dead, why] of steps) {
    assert.deepEqual(l.observe(Object.entries(counts).map(([id, beat]) => ({ id, beat })), now), dead, `at ${now}: ${why}`);
  }
});
