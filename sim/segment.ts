/**
 * Segments of the simulated network: the internet, or one LAN behind a
 * gateway. A segment is a broadcast domain with one link quality; it knows
 * who answers for which address on it. Plus the two address helpers the
 * router needs. No behaviour here: net.ts moves packets across segments.
 */
import type { SimNat } from './gateway.js';
import type { SimHost } from './host.js';

export interface LinkQuality {
  /** One-way delay across the segment. */
  latencyMs: number;
  /**
   * Extra delay per packet, a whole number of ms drawn uniformly from [0, jitterMs];
   * it also reorders. Whole milliseconds keep traces readable and let events
   * batch per instant (the clock settles promises once per instant).
   */
  jitterMs: number;
  /** Probability (0..1) that a packet crossing the segment is lost. */
  loss: number;
}

/** A broadcast domain: the internet, or one LAN behind a gateway. */
export class Segment {
  /** address → the host interface or gateway (its outside address) answering there. */
  readonly nodes = new Map<string, SimHost | SimNat>();
  /** "a.b.c" (/24) → a router (kind `router`) that forwards that prefix down. */
  readonly routes = new Map<string, SimNat>();
  constructor(
    readonly name: string,
    /** Mutable, so a scenario can degrade a link mid-run. */
    public link: LinkQuality,
    /** The gateway this LAN sits behind; undefined for the internet. */
    readonly gateway?: SimNat,
    /** Whether multicast is delivered here (LANs yes, the internet no). */
    readonly multicast = true,
  ) {}

  /** Who answers for `address` here: a node, or a router for its /24. */
  lookup(address: string): SimHost | SimNat | undefined {
    return this.nodes.get(address) ?? (this.routes.size > 0 ? this.routes.get(prefix24(address)) : undefined);
  }
}

export interface HostInterface {
  address: string;
  segment: Segment;
}

/** 224.0.0.0/4, read from the first octet without allocating. */
export function isMulticastV4(address: string): boolean {
  let n = 0;
  for (let i = 0; i < 4 && i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c === 46) return n >= 224 && n <= 239 && address.split('.').length === 4;
    if (c < 48 || c > 57) return false;
    n = n * 10 + (c - 48);
  }
  return false;
}

/** "a.b.c" of an IPv4 address: the /24 routers announce. */
export function prefix24(address: string): string {
  return address.slice(0, address.lastIndexOf('.'));
}
