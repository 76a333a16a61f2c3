/**
 * Virtual time for the simulator: a Clock (shared/clock.ts) whose timers sit
 * in a binary heap ordered by (time, sequence), so runs are deterministic.
 * `run` is async because the real agent awaits promises (the engine seam):
 * after each instant's timers it lets pending promise callbacks finish before
 * time moves on.
 */
import type { Clock, TimerHandle } from '../shared/clock.js';
import { MinHeap } from '../shared/min-heap.js';

interface Timer { at: number; seq: number; fn: () => void; cancelled: boolean }

/** The simulation starts at a fixed wall time so stored timestamps are reproducible. */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1);

export class VirtualClock implements Clock {
  private t = SIM_EPOCH_MS;
  private seq = 0;
  private readonly heap = new MinHeap<Timer>(less);
  firedTimers = 0;

  now(): number { return this.t; }
  wallNow(): number { return this.t; }
  /** Milliseconds since the simulation began. */
  elapsed(): number { return this.t - SIM_EPOCH_MS; }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: Timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.heap.push(timer);
    return timer as unknown as TimerHandle;
  }

  clearTimeout(h: TimerHandle): void {
    (h as unknown as Timer).cancelled = true;
  }

  /** Runs every timer due up to `now + ms`, then sets the time to exactly that. */
  async run(ms: number): Promise<void> {
    await this.runUntil(this.t + ms);
  }

  async runUntil(end: number, stop?: () => boolean): Promise<void> {
    while (this.heap.size > 0 && this.heap.peek()!.at <= end) {
      const at = this.heap.peek()!.at;
      this.t = at;
      // Everything due at this instant, in order; then let promise continuations settle.
      while (this.heap.size > 0 && this.heap.peek()!.at === at) {
        const timer = this.heap.pop()!;
        if (timer.cancelled) continue;
        this.firedTimers++;
        timer.fn();
      }
      await new Promise<void>((r) => setImmediate(r));
      if (stop?.()) return;
    }
    this.t = Math.max(this.t, end);
  }

}

function less(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
