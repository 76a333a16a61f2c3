/**
 * IP addresses as bytes, for binary wire formats (STUN, disco): 4 or 16 bytes
 * out of text, text out of bytes (RFC 5952 canonical for IPv6), and the
 * fixed 18-byte "16-byte IP (v4-mapped) + port" form disco uses.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { UdpEndpoint } from '../udp.js';
import { normalizeIp } from './addr.js';

export function ipToBytes(address: string): Uint8Array {
  if (isIPv4(address)) return Uint8Array.from(address.split('.').map(Number));
  if (!isIPv6(address)) throw new TypeError(`not an IP address: ${address}`);
  const [head, tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  // An embedded dotted quad (::ffff:1.2.3.4) counts as two groups.
  const expand = (gs: string[]) => gs.flatMap((g) => {
    if (!g.includes('.')) return [g];
    const b = g.split('.').map(Number);
    return [((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)];
  });
  const hh = expand(h);
  const tt = expand(t);
  const groups = address.includes('::') ? [...hh, ...Array<string>(8 - hh.length - tt.length).fill('0'), ...tt] : hh;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => { const v = parseInt(g, 16); out[i * 2] = v >>> 8; out[i * 2 + 1] = v & 0xff; });
  return out;
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length !== 16) throw new RangeError('an IP is 4 or 16 bytes');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const text = best < 0 ? groups.join(':') : `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  return normalizeIp(text); // ::ffff:a.b.c.d → a.b.c.d
}

export const ENDPOINT_BYTES_LEN = 18;

/** 16-byte IP (IPv4 as v4-mapped) + big-endian port. */
export function endpointToBytes(ep: UdpEndpoint): Uint8Array {
  const out = new Uint8Array(ENDPOINT_BYTES_LEN);
  const ip = ipToBytes(ep.address);
  if (ip.length === 4) {
    out[10] = 0xff; out[11] = 0xff;
    out.set(ip, 12);
  } else out.set(ip);
  out[16] = ep.port >>> 8;
  out[17] = ep.port & 0xff;
  return out;
}

export function bytesToEndpoint(b: Uint8Array): UdpEndpoint | undefined {
  if (b.length !== ENDPOINT_BYTES_LEN) return undefined;
  const port = (b[16]! << 8) | b[17]!;
  if (port === 0) return undefined;
  const isMapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return { address: isMapped ? bytesToIp(b.subarray(12, 16)) : bytesToIp(b.subarray(0, 16)), port };
}
