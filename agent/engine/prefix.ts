/**
 * IP prefixes as text, for the engine: interface addresses ("100.96.0.2/10",
 * host bits kept) and allowed IPs ("100.96.0.0/10", host bits cleared, the way
 * WireGuard stores them). Both IPv4 and IPv6, written canonically (RFC 5952 for
 * v6) so that what the agent asks for, what `ip`, wireguard-go and `wg` read
 * back, and what the diff compares are the same strings. Pure functions; not
 * the IPAM math (shared/net/cidr.ts), which is IPv4-only and allocation-shaped.
 */
import { BoundedMap } from '../../shared/bounded-map.js';
import { isIP } from 'node:net';

export interface IpPrefix {
  family: 4 | 6;
  bytes: Uint8Array; // 4 or 16 bytes
  bits: number;
}

function parseV6Bytes(text: string): Uint8Array | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        if (isIP(g) !== 4) return undefined;
        const o = g.split('.').map(Number) as [number, number, number, number];
        out.push((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** Formats 4 or 16 address bytes; v6 per RFC 5952 (lower case, longest zero run compressed). */
export function formatIpBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1; // RFC 5952 §4.2.2: a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Parses a bare IP address into bytes; undefined for anything else (zones included). */
export function parseIpBytes(text: string): Uint8Array | undefined {
  const family = isIP(text);
  if (family === 4) return new Uint8Array(text.split('.').map(Number));
  if (family === 6) return parseV6Bytes(text);
  return undefined;
}

/** Parses "ip/bits" (or a bare ip, read as a host prefix); undefined on anything else. */
export function parsePrefix(text: unknown): IpPrefix | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const bytes = parseIpBytes(ipText);
  if (!bytes) return undefined;
  const family = bytes.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const bitsText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(bitsText)) return undefined;
    bits = Number(bitsText);
    if (bits > max) return undefined;
  }
  return { family, bytes, bits };
}

/** The prefix with its host bits cleared. */
export function maskPrefix(p: IpPrefix): IpPrefix {
  const bytes = new Uint8Array(p.bytes);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, p.bits - 8 * i));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return { family: p.family, bytes, bits: p.bits };
}

export function formatPrefix(p: IpPrefix): string {
  return `${formatIpBytes(p.bytes)}/${p.bits}`;
}

/** An interface address in canonical text, host bits kept ("100.96.0.2/10"). */
export function canonicalAddress(text: unknown): string | undefined {
  const p = parsePrefix(text);
  return p && formatPrefix(p);
}

/** An allowed IP / route in canonical text, host bits cleared ("100.96.0.0/10"). */
export function canonicalAllowedIp(text: unknown): string | undefined {
  const p = parsePrefix(text);
  return p && formatPrefix(maskPrefix(p));
}

/** Whether `inner` (a prefix) lies inside `outer`: same family, at least as long, same leading bits. */
export function prefixWithin(inner: IpPrefix, outer: IpPrefix): boolean {
  if (inner.family !== outer.family || inner.bits < outer.bits) return false;
  const a = maskPrefix({ ...inner, bits: outer.bits }).bytes;
  const b = maskPrefix(outer).bytes;
  return a.every((x, i) => x === b[i]);
}

/**
 * A cache key for a list of prefixes in text: joined by a space, which no prefix contains, so
 * two lists share a key only if they are equal. Undefined (don't cache) when an item isn't
 * text or holds a space: such a list is invalid, and must be checked, never looked up.
 */
export function prefixListKey(items: readonly unknown[]): string | undefined {
  return items.every((x) => typeof x === 'string' && !x.includes(' ')) ? items.join(' ') : undefined;
}

/**
 * The routes WireGuard may take for a peer: only single mesh addresses (a /32 inside the
 * mesh's IPv4 prefix, a /128 inside its IPv6 prefix). The coordinator is trusted with who is
 * in the mesh, not with our routing table: a peer entry claiming 0.0.0.0/1 or a LAN prefix
 * would pull other traffic into the tunnel, so it is dropped here.
 */
export function meshAllowedIps(addresses: readonly string[], mesh: { ipv4Prefix: string; ipv6Prefix: string }): string[] {
  // Every engine apply asks for every peer: the answer is kept by the lists' text, so a big
  // map is parsed once, not per apply, and the simulator's agents, which all list the same
  // peers, share the work.
  const text = prefixListKey([mesh.ipv4Prefix, mesh.ipv6Prefix, ...addresses]);
  const cached = text === undefined ? undefined : allowedCache.get(text);
  if (cached) return cached;
  const prefixes = [parsePrefix(mesh.ipv4Prefix), parsePrefix(mesh.ipv6Prefix)].filter((p): p is IpPrefix => p !== undefined);
  const allowed = addresses.filter((a) => {
    const p = parsePrefix(a);
    return p !== undefined && p.bits === (p.family === 4 ? 32 : 128) && prefixes.some((m) => prefixWithin(p, m));
  });
  if (text !== undefined) allowedCache.set(text, allowed);
  return allowed;
}

const allowedCache = new BoundedMap<string, string[]>(16_384);
