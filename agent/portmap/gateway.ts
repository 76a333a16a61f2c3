/**
 * Which router to ask for a port mapping: the IPv4 default gateway, and our
 * own address on the interface that reaches it. The parsing is pure (tested
 * with tables); `findDefaultGateway` reads /proc/net/route and the interface
 * list (Linux; elsewhere it finds nothing and port mapping stays idle).
 */
import { readFile } from 'node:fs/promises';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { isIPv4 } from 'node:net';

export interface DefaultGateway {
  gateway: string;
  iface: string;
  /** Our IPv4 address on `iface` (the one in the gateway's subnet when there are several). */
  localAddress: string;
}

/**
 * The default route from /proc/net/route text (hex, little-endian fields):
 * destination 0, mask 0, the RTF_GATEWAY flag, the lowest metric. Undefined
 * when there is none.
 */
export function parseProcNetRoute(text: string): { gateway: string; iface: string } | undefined {
  let best: { gateway: string; iface: string; metric: number } | undefined;
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, gw, flags, , , metric, mask] = f as [string, string, string, string, string, string, string, string];
    const RTF_UP = 0x1;
    const RTF_GATEWAY = 0x2;
    const fl = parseInt(flags, 16);
    if (dest !== '00000000' || mask !== '00000000' || !(fl & RTF_UP) || !(fl & RTF_GATEWAY) || !/^[0-9A-Fa-f]{8}$/.test(gw)) continue;
    const n = parseInt(gw, 16);
    const gateway = [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join('.');
    const m = Number(metric);
    if (gateway === '0.0.0.0' || (best && best.metric <= m)) continue;
    best = { gateway, iface, metric: m };
  }
  return best && { gateway: best.gateway, iface: best.iface };
}

function v4(n: string): number {
  return n.split('.').reduce((acc, x) => ((acc << 8) | Number(x)) >>> 0, 0);
}

/** Our address on `iface` for talking to `gateway`: the one whose subnet holds it, else the first IPv4. */
export function pickLocalAddress(addrs: readonly Pick<NetworkInterfaceInfo, 'address' | 'netmask' | 'family' | 'internal'>[], gateway: string): string | undefined {
  const v4s = addrs.filter((a) => (a.family === 'IPv4' || (a.family as unknown) === 4) && !a.internal && isIPv4(a.address));
  const same = v4s.find((a) => (v4(a.address) & v4(a.netmask)) === (v4(gateway) & v4(a.netmask)));
  return (same ?? v4s[0])?.address;
}

export async function findDefaultGateway(): Promise<DefaultGateway | undefined> {
  let text: string;
  try {
    text = await readFile('/proc/net/route', 'utf8');
  } catch {
    return undefined; // not Linux (or no procfs): no gateway to ask
  }
  const route = parseProcNetRoute(text);
  if (!route) return undefined;
  const localAddress = pickLocalAddress(networkInterfaces()[route.iface] ?? [], route.gateway);
  return localAddress ? { ...route, localAddress } : undefined;
}
