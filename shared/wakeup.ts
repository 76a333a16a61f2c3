/**
 * The one timer a sans-I/O core's shell needs: armed for the earliest time the
 * core asked to be woken, re-armed only when that time changes, and never
 * more than one pending. Cores say when (`nextWakeup()`); shells own this.
 */
import type { Clock, TimerHandle } from './clock.js';

export class WakeupTimer {
  private timer: TimerHandle | undefined;
  private at = Infinity;

  constructor(private readonly clock: Clock, private readonly fire: () => void) {}

  /** Wakes at `at` (a clock time; undefined or Infinity: not at all), replacing any earlier arming. */
  arm(at: number | undefined): void {
    const when = at ?? Infinity;
    if (when === this.at && this.timer !== undefined) return;
    this.cancel();
    this.at = when;
    if (when === Infinity) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.at = Infinity;
      this.fire();
    }, Math.max(0, when - this.clock.now()));
  }

  cancel(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Infinity;
  }
}
