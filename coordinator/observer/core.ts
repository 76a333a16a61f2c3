/**
 * The STUN observer's decision, pure: a datagram, its source and the time in;
 * an answer (Binding success with the source's address as XOR-MAPPED-ADDRESS)
 * or a drop reason out. No sockets, no clock: the shell (index.ts) and the
 * simulator feed it.
 *
 * The no-amplification rule. A UDP responder can be aimed at a victim by
 * spoofing the victim's address, so what it sends must never cost more than
 * what it received:
 *   - Knit's own requests are padded (STUN_KNIT_REQUEST_LEN) so the answer is
 *     never larger than the request; those are always answered, unmetered (a
 *     thousand agents behind one carrier NAT share a source address).
 *   - Any other Binding request (a standard STUN client: 20-28 bytes) gets an
 *     answer up to 52 bytes, so it is answered only within a token bucket per
 *     source (requests and bytes per second; IPv6 sources by /64, since one
 *     host owns a whole /64) and a global bucket across all sources, which
 *     also caps what a flood of spoofed sources evicting each other from the
 *     bounded table can extract.
 * Only requests are ever answered, so two reflectors can't be made to ping-pong.
 *
 * RESPONSE-PORT (RFC 5780 §7.5): a request may ask for its answer at another
 * port of its own source address. Agents use it to check a port mapping from
 * outside (docs/port-mapping.md). The answer still goes to the address the
 * request came from and is no larger, so it reflects nothing a plain request
 * couldn't.
 */
import { isIPv4 } from 'node:net';
import { LRUCache } from 'lru-cache';
import { ipToBytes } from '../../shared/net/ip-bytes.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { bindingResponseLength, encodeBindingResponse, parseStun, STUN_BINDING_REQUEST, STUN_MAX_RESPONSE_LEN } from '../../shared/wire/stun.js';

export type ObserverDropReason = 'malformed' | 'not-a-request' | 'rate-limited';

/** `port`: the request's RESPONSE-PORT; the answer goes to the source address at that port. */
export type ObserverVerdict = { answer: Uint8Array; port?: number } | { drop: ObserverDropReason };

export interface ObserverCoreOptions {
  /** Answers per second per source for requests smaller than their answer (standard clients). */
  rateLimitPerSec?: number;
  /** The same across all sources together. */
  globalRateLimitPerSec?: number;
  /** Sources tracked at once; the least recently seen is forgotten first. Bounds memory under a spoofed flood. */
  maxSources?: number;
}

/** 20/s per source: stunclient, pystun and browsers send a handful of requests per check. */
export const OBSERVER_RATE_LIMIT_PER_SEC = 20;
/** Unpadded answers for everyone together; 2,000 × 52 bytes ≈ 100 kB/s is the most the observer reflects. */
export const OBSERVER_GLOBAL_RATE_LIMIT_PER_SEC = 2000;
export const OBSERVER_MAX_SOURCES = 10_000;

interface Bucket { requests: number; bytes: number; at: number }

/** A bucket refills fully within a second, so one idle longer than this equals a new one and can be forgotten. */
const BUCKET_IDLE_MS = 2000;

export interface ObserverCore {
  handle(packet: Uint8Array, from: UdpEndpoint, now: number): ObserverVerdict;
  /** How many sources the rate limiter remembers now (bounded by maxSources). */
  trackedSources(): number;
}

export function createObserverCore(options: ObserverCoreOptions = {}): ObserverCore {
  const rate = positive(options.rateLimitPerSec, OBSERVER_RATE_LIMIT_PER_SEC, 'rateLimitPerSec');
  const globalRate = positive(options.globalRateLimitPerSec, Math.max(OBSERVER_GLOBAL_RATE_LIMIT_PER_SEC, rate), 'globalRateLimitPerSec');
  const maxSources = positive(options.maxSources, OBSERVER_MAX_SOURCES, 'maxSources');
  const byteRate = rate * STUN_MAX_RESPONSE_LEN;
  // The cache reads time only through `perf.now`, which returns the `now` of the
  // call being handled: expiry follows the caller's clock (virtual in tests and
  // sim). ttlResolution 0: no internal timer caching the time.
  let current = 0;
  const buckets = new LRUCache<string, Bucket>({ max: maxSources, ttl: BUCKET_IDLE_MS, ttlResolution: 0, perf: { now: () => current } });
  let global: Bucket | undefined;

  function refill(b: Bucket, perSec: number, bytesPerSec: number, now: number): void {
    const elapsedS = Math.max(0, now - b.at) / 1000;
    b.requests = Math.min(perSec, b.requests + elapsedS * perSec);
    b.bytes = Math.min(bytesPerSec, b.bytes + elapsedS * bytesPerSec);
    b.at = Math.max(b.at, now);
  }

  function allow(key: string, bytes: number, now: number): boolean {
    global ??= { requests: globalRate, bytes: 0, at: now };
    refill(global, globalRate, 0, now);
    const b = buckets.get(key) ?? { requests: rate, bytes: byteRate, at: now };
    refill(b, rate, byteRate, now);
    buckets.set(key, b);
    if (b.requests < 1 || b.bytes < bytes || global.requests < 1) return false;
    b.requests -= 1;
    b.bytes -= bytes;
    global.requests -= 1;
    return true;
  }

  return {
    handle(packet, from, now) {
      current = now;
      const msg = parseStun(packet);
      if (!msg) return { drop: 'malformed' };
      if (msg.type !== STUN_BINDING_REQUEST) return { drop: 'not-a-request' };
      // Decide on the size before building anything: a refused flood costs a parse, no more.
      const size = bindingResponseLength(from.address);
      if (size > packet.length && !allow(sourceKey(from.address), size, now)) return { drop: 'rate-limited' };
      const answer = encodeBindingResponse(msg.txid, from);
      return msg.responsePort === undefined ? { answer } : { answer, port: msg.responsePort };
    },
    trackedSources: () => {
      buckets.purgeStale();
      return buckets.size;
    },
  };
}

/** IPv4: the address. IPv6: its /64 (one subscriber or host gets a whole /64 to spoof within). */
function sourceKey(address: string): string {
  if (isIPv4(address)) return address;
  return Buffer.from(ipToBytes(address).subarray(0, 8)).toString('hex');
}

function positive(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number`);
  return v;
}
