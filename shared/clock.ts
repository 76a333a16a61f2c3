/**
 * The Clock seam. Protocol cores never read the time themselves: they take
 * `now` (milliseconds) as an argument. Shells take a Clock so that tests and
 * the simulator can drive them on virtual time.
 */

export type TimerHandle = { readonly __timer: unique symbol } | ReturnType<typeof setTimeout>;

export interface Clock {
  /** Milliseconds on a monotonic scale (never jumps backwards with wall time). */
  now(): number;
  /** Wall-clock milliseconds since the epoch, for timestamps shown to people and stored. */
  wallNow(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

// performance.now() is monotonic; anchoring it to the wall clock once gives a
// number that reads like epoch milliseconds but is immune to NTP steps.
const ANCHOR_MS = Date.now() - performance.now();

export const systemClock: Clock = {
  now: () => ANCHOR_MS + performance.now(),
  wallNow: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** A source of random bytes; cores that make nonces or jitter take one. */
export type RandomBytes = (n: number) => Uint8Array;
