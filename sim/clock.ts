/**
 * Virtual time for the simulator: a Clock (shared/clock.ts) whose timers sit
 * in a binary heap ordered by (time, sequence), so two timers due at the same
 * instant always fire in the order they were set, and runs are deterministic.
 *
 * Time moves only when asked (`runUntil`, `runFor`, `advanceToNextEvent`).
 * Those are async because the real agent awaits promises (its engine seam):
 * after each instant's timers the clock lets pending promise continuations
 * finish before time moves on. A pure-network simulation with no promises can
 * turn that off (`settle: false`) and run several times faster.
 *
 * Not a fake of the system clock: nothing here touches real timers except the
 * one `setImmediate` used to let promises settle.
 */
import type { Clock, TimerHandle } from '../shared/clock.js';

/** The simulation starts at a fixed wall time so stored timestamps are reproducible. */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1);

/**
 * More timers than this firing at one instant means a callback keeps re-arming
 * itself at 0 ms: a bug in the code under test, reported instead of hanging.
 */
export const MAX_TIMERS_PER_INSTANT = 1_000_000;

/** Cancelled timers stay in the heap until popped; past this many they are swept out at once. */
const COMPACT_MIN_CANCELLED = 4096;

const PENDING = 0;
const FIRED = 1;
const CANCELLED = 2;

interface Timer {
  at: number;
  seq: number;
  fn: (arg: unknown) => void;
  arg: unknown;
  state: number;
}

export interface VirtualClockOptions {
  /** Where virtual time starts (default SIM_EPOCH_MS). */
  startMs?: number;
  /** Let promise continuations settle after each instant (default true; needed whenever async code runs on the clock). */
  settle?: boolean;
}

export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly heap: Timer[] = [];
  private cancelledInHeap = 0;
  private readonly start: number;
  private readonly settle: boolean;
  /** How many timers have fired so far (a cheap measure of work done). */
  firedTimers = 0;

  constructor(options: VirtualClockOptions = {}) {
    this.start = options.startMs ?? SIM_EPOCH_MS;
    if (!Number.isFinite(this.start)) throw new RangeError('VirtualClock: startMs must be finite');
    this.t = this.start;
    this.settle = options.settle ?? true;
  }

  now(): number { return this.t; }
  wallNow(): number { return this.t; }
  /** Milliseconds since the simulation began. */
  elapsed(): number { return this.t - this.start; }

  /** Timers set and neither fired nor cancelled. */
  get pending(): number { return this.heap.length - this.cancelledInHeap; }

  /** When the next live timer is due, or undefined when none is. */
  nextEventAt(): number | undefined {
    this.dropCancelledTop();
    return this.heap[0]?.at;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.callLater(ms, fn as (arg: unknown) => void, undefined);
  }

  /**
   * Like setTimeout but passes `arg` to `fn`: the network schedules every
   * packet hop through one pre-bound function instead of a closure per packet.
   */
  callLater<T>(ms: number, fn: (arg: T) => void, arg: T): TimerHandle {
    if (typeof ms !== 'number' || !Number.isFinite(ms)) throw new RangeError(`VirtualClock: delay must be a finite number, got ${String(ms)}`);
    const timer: Timer = { at: this.t + (ms > 0 ? ms : 0), seq: this.seq++, fn: fn as (arg: unknown) => void, arg, state: PENDING };
    this.push(timer);
    return timer as unknown as TimerHandle;
  }

  clearTimeout(h: TimerHandle): void {
    const timer = h as unknown as Timer;
    if (timer === undefined || timer === null || timer.state !== PENDING) return;
    timer.state = CANCELLED;
    timer.arg = undefined; // let a cancelled packet be collected before its turn comes
    this.cancelledInHeap++;
    if (this.cancelledInHeap >= COMPACT_MIN_CANCELLED && this.cancelledInHeap * 2 > this.heap.length) this.compact();
  }

  /** Runs every timer due up to `now + ms`, then sets the time to exactly that. */
  runFor(ms: number, stop?: () => boolean): Promise<void> {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`VirtualClock: cannot run for ${ms} ms`);
    return this.runUntil(this.t + ms, stop);
  }

  /** Same as runFor (the name the scenarios use). */
  run(ms: number): Promise<void> {
    return this.runFor(ms);
  }

  /**
   * Fires every timer due at or before `end`, instant by instant, and leaves
   * the clock at `end`. With `stop`, checks it after each instant and returns
   * early (the clock stays at that instant) once it holds.
   */
  async runUntil(end: number, stop?: () => boolean): Promise<void> {
    if (Number.isNaN(end)) throw new RangeError('VirtualClock: runUntil(NaN)');
    // Work started before the call (an un-awaited start()) may still be setting its first timers.
    if (this.settle) await settlePromises();
    for (;;) {
      const at = this.nextEventAt();
      if (at === undefined || at > end) break;
      this.fireInstant(at);
      if (this.settle) await settlePromises();
      if (stop?.()) return;
    }
    if (end > this.t) this.t = end;
  }

  /**
   * Moves to the next instant with a live timer and fires everything due then.
   * Returns false (time unchanged) when nothing is pending.
   */
  async advanceToNextEvent(): Promise<boolean> {
    const at = this.nextEventAt();
    if (at === undefined) return false;
    this.fireInstant(at);
    if (this.settle) await settlePromises();
    return true;
  }

  /** Fires every timer due at `at`, including ones set for 0 ms by timers of the same instant. */
  private fireInstant(at: number): void {
    this.t = at;
    let fired = 0;
    const h = this.heap;
    while (h.length > 0 && h[0]!.at === at) {
      const timer = this.pop();
      if (timer.state === CANCELLED) {
        this.cancelledInHeap--;
        continue;
      }
      timer.state = FIRED;
      this.firedTimers++;
      if (++fired > MAX_TIMERS_PER_INSTANT) throw new RangeError(`VirtualClock: more than ${MAX_TIMERS_PER_INSTANT} timers at one instant (a timer re-arming itself at 0 ms?)`);
      const arg = timer.arg;
      timer.arg = undefined;
      timer.fn(arg);
    }
  }

  private dropCancelledTop(): void {
    const h = this.heap;
    while (h.length > 0 && h[0]!.state === CANCELLED) {
      this.pop();
      this.cancelledInHeap--;
    }
  }

  private compact(): void {
    const live = this.heap.filter((x) => x.state === PENDING);
    this.heap.length = 0;
    this.cancelledInHeap = 0;
    // Re-heapify bottom-up: O(n), and the order of equal keys is kept by seq.
    for (const x of live) this.heap.push(x);
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  // The heap is inlined rather than shared/min-heap.ts so the hot path does no
  // comparator calls or swap allocations: it moves a hole instead of swapping.
  private push(x: Timer): void {
    const h = this.heap;
    let i = h.length;
    h.push(x);
    while (i > 0) {
      const up = (i - 1) >> 1;
      const p = h[up]!;
      if (p.at < x.at || (p.at === x.at && p.seq < x.seq)) break;
      h[i] = p;
      i = up;
    }
    h[i] = x;
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(start: number): void {
    const h = this.heap;
    const n = h.length;
    const x = h[start]!;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let m = l;
      let c = h[l]!;
      if (r < n) {
        const rc = h[r]!;
        if (rc.at < c.at || (rc.at === c.at && rc.seq < c.seq)) { m = r; c = rc; }
      }
      if (x.at < c.at || (x.at === c.at && x.seq < c.seq)) break;
      h[i] = c;
      i = m;
    }
    h[i] = x;
  }
}

/** Resolves after every promise continuation queued so far (and those they queue) has run. */
function settlePromises(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}
