/**
 * A token bucket per packet source: `perSecond` tries a second, bursting to the
 * same number, for at most `maxSources` sources at once (the least recently
 * seen are forgotten, which only ever gives a forgotten source a fresh bucket).
 * Guards work that a stranger's packet can cause: answers, key derivations,
 * decryption attempts.
 */
import { BoundedMap } from './bounded-map.js';

export class SourceBudget {
  private readonly buckets: BoundedMap<string, { tokens: number; at: number }>;

  constructor(private readonly perSecond: number, maxSources = 4096) {
    this.buckets = new BoundedMap(maxSources);
  }

  /** Takes one token from `source`'s bucket; false when it is empty. */
  allow(source: string, now: number): boolean {
    const b = this.buckets.get(source) ?? { tokens: this.perSecond, at: now };
    b.tokens = Math.min(this.perSecond, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    this.buckets.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
