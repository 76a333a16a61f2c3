/**
 * A least-recently-used map that grows as it is filled. lru-cache allocates all
 * `max` slots up front, which is right for one big cache in a coordinator but
 * not for the handful of small guards every agent keeps (rate budgets, replay
 * and dedupe sets): a thousand agents in one simulator, each with a few of
 * those, spent hundreds of megabytes on empty slots. A Map keeps insertion
 * order, so touching an entry is delete + set and the oldest is the first key.
 */
export class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();

  constructor(private readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('max must be a positive integer');
  }

  get size(): number {
    return this.map.size;
  }

  /** The value, marked as just used. */
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Stores the value as the most recently used; the least recently used goes when full. */
  set(key: K, value: V): this {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
    return this;
  }

  delete(key: K): boolean {
    return this.map.delete(key);
  }
}
