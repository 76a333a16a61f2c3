/**
 * Address math for mesh address allocation: IPv4 prefixes as 32-bit numbers
 * and IPv6 ULA host addresses derived from the IPv4 index. Pure functions.
 */
import { isIPv4 } from 'node:net';

export interface Ipv4Prefix {
  base: number; // network address as an unsigned 32-bit number
  bits: number;
}

export function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseIpv4Prefix(text: string): Ipv4Prefix | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(text);
  if (!m || !isIPv4(m[1]!)) return undefined;
  const bits = Number(m[2]);
  if (bits < 8 || bits > 30) return undefined;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { base: (ipv4ToInt(m[1]!) & mask) >>> 0, bits };
}

/** Number of usable host addresses (network and broadcast excluded). */
export function prefixHostCount(p: Ipv4Prefix): number {
  return 2 ** (32 - p.bits) - 2;
}

/** The index-th host (0-based) of the prefix. */
export function prefixHost(p: Ipv4Prefix, index: number): string {
  if (index < 0 || index >= prefixHostCount(p)) throw new RangeError('host index outside prefix');
  return intToIpv4((p.base + 1 + index) >>> 0);
}

export function prefixContains(p: Ipv4Prefix, ip: string): boolean {
  if (!isIPv4(ip)) return false;
  const mask = (0xffffffff << (32 - p.bits)) >>> 0;
  return ((ipv4ToInt(ip) & mask) >>> 0) === p.base;
}

/** An IPv6 ULA host address: a /48 ULA prefix's first subnet plus the 32-bit index. */
export function ulaHost(ulaPrefix48: string, index: number): string {
  const head = ulaPrefix48.replace(/::\/48$/, '').replace(/\/48$/, '');
  const hi = index >>> 16;
  const lo = (index & 0xffff).toString(16);
  return hi === 0 ? `${head}::${lo}` : `${head}::${hi.toString(16)}:${lo}`;
}
