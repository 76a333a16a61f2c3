/**
 * A Clock for tests: time moves only when the test says so, and timers fire
 * in (time, creation) order as it does. No test sleeps.
 */
import type { Clock, TimerHandle } from '../../shared/clock.js';

export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers = new Map<number, { at: number; seq: number; fn: () => void }>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number { return this.t; }
  wallNow(): number { return this.t; }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), seq: id, fn });
    return id as unknown as TimerHandle;
  }

  clearTimeout(h: TimerHandle): void {
    this.timers.delete(h as unknown as number);
  }

  /** Advances time by `ms`, firing every timer due on the way. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (let next = this.takeDue(end); next; next = this.takeDue(end)) next();
    this.t = end;
  }

  /**
   * Like advance, for code whose timers start asynchronous work (a store write): after each
   * timer fires, `settle` runs before time moves on, so that work ends at the time it started.
   */
  async advanceAsync(ms: number, settle: () => Promise<void>): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (let next = this.takeDue(end); next; next = this.takeDue(end)) {
      next();
      await settle();
    }
    this.t = end;
  }

  /** Removes the earliest timer due by `end` (creation order breaks ties), sets the time to it, returns it. */
  private takeDue(end: number): (() => void) | undefined {
    let next: [number, { at: number; seq: number; fn: () => void }] | undefined;
    for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[1].seq < next[1].seq))) next = e;
    if (!next) return undefined;
    this.timers.delete(next[0]);
    this.t = next[1].at;
    return next[1].fn;
  }

  get pending(): number { return this.timers.size; }
}

/** Deterministic "random" bytes for golden tests: a counter-based stream. */
export function seededBytes(seed = 1): (n: number) => Uint8Array {
  let x = seed >>> 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      x = (x + 0x6d2b79f5) >>> 0;
      let t = x;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
    }
    return out;
  };
}
