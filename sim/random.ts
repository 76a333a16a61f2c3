/**
 * Seeded randomness for the simulator: the same seed gives the same run.
 *
 * The generator is sfc32 (Chris Doty-Humphrey's "small fast chaotic" PRNG,
 * from PractRand): 128 bits of state, passes BigCrush, and costs a few integer
 * operations per draw. It is not cryptographic and must never leave the sim.
 * It supplies the `RandomBytes` seam the cores take, floats for loss and
 * jitter, and integers for NAT port choice.
 *
 * `fork()` gives a child stream seeded from this one, so separate concerns
 * (links, NATs, agents) draw from their own streams: adding jitter to a link
 * does not change which keys the agents generate.
 */

export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new RangeError(`SeededRandom: seed must be an integer, got ${seed}`);
    // A splitmix-style mixer (golden-ratio increment, murmur3's finalizer) spreads the seed
    // over the state words, so seeds 1 and 2 start far apart.
    let s = seed >>> 0;
    const mix = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = 1; // sfc32's counter word
    // The recommended warm-up: the first outputs of a fresh state are the least mixed.
    for (let i = 0; i < 15; i++) this.next();
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }

  /** An integer in [min, max], both included. */
  int(min: number, max: number): number {
    if (!Number.isInteger(min) || !Number.isInteger(max) || max < min || max - min > 0xffffffff) {
      throw new RangeError(`SeededRandom.int: bad range [${min}, ${max}]`);
    }
    return min + Math.floor(this.float() * (max - min + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  /** A new, independent stream whose seed is drawn from this one. */
  fork(): SeededRandom {
    return new SeededRandom(this.next() | 0);
  }

  /** n random bytes; a bound function, so it can be handed to cores as their RandomBytes. */
  readonly bytes = (n: number): Uint8Array => {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`SeededRandom.bytes: bad length ${n}`);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return out;
  };
}
