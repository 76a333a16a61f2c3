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
  const lower = ip.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  return mapped ? mapped[1]! : lower;
}

export function sameEndpoint(a: UdpEndpoint, b: UdpEndpoint): boolean {
  return a.port === b.port && normalizeIp(a.address) === normalizeIp(b.address);
}

function v4Octets(ip: string): number[] {
  return ip.split('.').map(Number);
}

export function isLoopbackIp(ip: string): boolean {
  const n = normalizeIp(ip);
  return isIPv4(n) ? v4Octets(n)[0] === 127 : n === '::1';
}

export function isMulticastIp(ip: string): boolean {
  const n = normalizeIp(ip);
  if (isIPv4(n)) {
    const a = v4Octets(n)[0]!;
    return a >= 224 && a <= 239;
  }
  return n.startsWith('ff');
}

export function isUnspecifiedIp(ip: string): boolean {
  const n = normalizeIp(ip);
  return n === '0.0.0.0' || n === '::' || (isIPv4(n) && v4Octets(n)[0] === 0);
}

export function isBroadcastIp(ip: string): boolean {
  return normalizeIp(ip) === '255.255.255.255';
}

export function isLinkLocalIp(ip: string): boolean {
  const n = normalizeIp(ip);
  if (isIPv4(n)) {
    const [a, b] = v4Octets(n);
    return a === 169 && b === 254;
  }
  return /^fe[89ab]/.test(n);
}

/** RFC 1918, RFC 6598 (CGNAT), IPv6 ULA and link-local: addresses that only mean something on a LAN. */
export function isPrivateIp(ip: string): boolean {
  const n = normalizeIp(ip);
  if (isIPv4(n)) {
    const [a, b] = v4Octets(n) as [number, number];
    return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || isLinkLocalIp(n);
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
