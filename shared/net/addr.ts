/**
 * Endpoints as text: "198.18.0.5:41641" and "[fd7a::1]:41641", the form used on
 * the wire, in the store and in `knit status`. Parsing is strict (it takes
 * untrusted input); classification decides which endpoints a node may report
 * and which count as LAN candidates.
 */
import { isIP, isIPv4 } from 'node:net';
import type { UdpEndpoint } from '../udp.js';

export const ENDPOINT_TEXT_MAX = 64;

export function formatEndpoint(ep: UdpEndpoint): string {
  return isIPv4(ep.address) ? `${ep.address}:${ep.port}` : `[${ep.address}]:${ep.port}`;
}

/** Parses "a.b.c.d:port" or "[v6]:port"; undefined on anything else. */
export function parseEndpoint(text: unknown): UdpEndpoint | undefined {
  if (typeof text !== 'string' || text.length > ENDPOINT_TEXT_MAX) return undefined;
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']:');
    if (close < 0) return undefined;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (isIP(host) !== 6) return undefined;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return undefined;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (isIP(host) !== 4) return undefined;
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  return { address: normalizeIp(host), port };
}

/** Lower-cases v6 and strips a v4-mapped prefix so equal addresses compare equal. */
export function normalizeIp(ip: string): string {
  if (!ip.includes(':')) return ip; // dotted IPv4 (or not an IP at all): nothing to lower-case or unmap
  const lower = ip.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  return mapped ? mapped[1]! : lower;
}

export function sameEndpoint(a: UdpEndpoint, b: UdpEndpoint): boolean {
  return a.port === b.port && normalizeIp(a.address) === normalizeIp(b.address);
}

/**
 * The octets of a dotted-quad IPv4 address, as strict as node's isIPv4 (no
 * leading zeros, each at most 255); undefined for anything else. By hand, not
 * by regex: it runs for every candidate endpoint of every peer.
 */
export function ipv4Octets(ip: string): [number, number, number, number] | undefined {
  const out: number[] = [];
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46; // the end closes the last octet like a '.'
    if (c === 46) {
      if (digits === 0 || out.length === 4) return undefined;
      out.push(value);
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return undefined; // a leading zero
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return out.length === 4 ? (out as [number, number, number, number]) : undefined;
}

export function isLoopbackIp(ip: string): boolean {
  const n = normalizeIp(ip);
  const v4 = ipv4Octets(n);
  return v4 ? v4[0] === 127 : n === '::1';
}

export function isMulticastIp(ip: string): boolean {
  const n = normalizeIp(ip);
  const v4 = ipv4Octets(n);
  if (v4) return v4[0] >= 224 && v4[0] <= 239;
  return n.startsWith('ff');
}

export function isUnspecifiedIp(ip: string): boolean {
  const n = normalizeIp(ip);
  return n === '::' || ipv4Octets(n)?.[0] === 0;
}

export function isBroadcastIp(ip: string): boolean {
  return normalizeIp(ip) === '255.255.255.255';
}

export function isLinkLocalIp(ip: string): boolean {
  const n = normalizeIp(ip);
  const v4 = ipv4Octets(n);
  if (v4) return v4[0] === 169 && v4[1] === 254;
  return /^fe[89ab]/.test(n);
}

/** RFC 1918, RFC 6598 (CGNAT), IPv6 ULA and link-local: addresses that only mean something on a LAN. */
export function isPrivateIp(ip: string): boolean {
  const n = normalizeIp(ip);
  const v4 = ipv4Octets(n);
  if (v4) {
    const [a, b] = v4;
    return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254);
  }
  return /^f[cd]/.test(n) || isLinkLocalIp(n);
}

/**
 * Whether a node may report this endpoint as a candidate. Multicast, broadcast
 * and unspecified addresses never are; loopback only when the deployment says
 * so (single-machine tests), since a loopback candidate means "this host".
 */
export function isReportableEndpoint(ep: UdpEndpoint, options: { allowLoopback?: boolean } = {}): boolean {
  if (isMulticastIp(ep.address) || isUnspecifiedIp(ep.address) || isBroadcastIp(ep.address)) return false;
  if (isLoopbackIp(ep.address)) return options.allowLoopback === true;
  return true;
}
