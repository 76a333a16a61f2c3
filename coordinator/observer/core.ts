/**
 * The STUN observer's decision, pure: given a datagram, its source and the
 * time, answer a Binding request with the source's address (XOR-MAPPED-ADDRESS)
 * or say why it was dropped.
 *
 * Amplification: Knit's own requests are padded (STUN_KNIT_REQUEST_LEN) so the
 * answer is never larger than the question. Other STUN clients send small
 * requests that a 32- or 44-byte answer exceeds slightly; they are answered
 * too (standard tools must work) but under a per-source budget of requests
 * and bytes, so the observer can't be used to flood a spoofed source.
 */
import { LRUCache } from 'lru-cache';
import type { UdpEndpoint } from '../../shared/udp.js';
import { encodeBindingResponse, parseStun, STUN_BINDING_REQUEST } from '../../shared/wire/stun.js';

export type ObserverVerdict =
  | { answer: Uint8Array }
  | { drop: 'malformed' | 'not-a-request' | 'rate-limited' };

export interface ObserverCoreOptions {
  /** Requests per second per source IP for answers larger than their request. */
  rateLimitPerSec?: number;
  /** Tracked sources; the oldest is forgotten first. Bounds memory under a spoofed flood. */
  maxSources?: number;
}

interface Bucket { tokens: number; bytes: number; at: number }

export function createObserverCore(options: ObserverCoreOptions = {}) {
  const rate = options.rateLimitPerSec ?? 20;
  const byteRate = rate * 64; // the largest answer is 64 bytes (IPv6 + SOFTWARE-free + FINGERPRINT)
  const buckets = new LRUCache<string, Bucket>({ max: options.maxSources ?? 10_000 });

  function allow(source: string, bytes: number, now: number): boolean {
    const b = buckets.get(source) ?? { tokens: rate, bytes: byteRate, at: now };
    const elapsed = Math.max(0, (now - b.at) / 1000);
    b.tokens = Math.min(rate, b.tokens + elapsed * rate);
    b.bytes = Math.min(byteRate, b.bytes + elapsed * byteRate);
    b.at = now;
    buckets.set(source, b);
    if (b.tokens < 1 || b.bytes < bytes) return false;
    b.tokens -= 1;
    b.bytes -= bytes;
    return true;
  }

  return {
    handle(packet: Uint8Array, from: UdpEndpoint, now: number): ObserverVerdict {
      const msg = parseStun(packet);
      if (!msg) return { drop: 'malformed' };
      if (msg.type !== STUN_BINDING_REQUEST) return { drop: 'not-a-request' };
      const answer = encodeBindingResponse(msg.txid, from);
      if (answer.length > packet.length && !allow(from.address, answer.length, now)) return { drop: 'rate-limited' };
      return { answer };
    },
  };
}
