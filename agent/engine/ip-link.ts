/**
 * The interface side of an engine, through iproute2: link up with its MTU,
 * addresses, and routes for peers' allowed IPs, plus reading them back. Shared
 * by the wireguard-go and kernel adapters (WireGuard itself knows nothing of
 * addresses or routes). Changes go through one `ip -batch` per direction so a
 * thousand peers cost two processes, not two thousand.
 *
 * Routes Knit adds carry `proto static`, and only those are read back as ours,
 * so an agent that attaches to an existing interface takes over its own old
 * routes and leaves anybody else's alone.
 *
 * Additions go in one batch per address family, IPv4 first, so a host with
 * IPv6 switched off (`disable_ipv6`, common on servers and in containers) still
 * gets its IPv4 addresses and routes: the IPv6 batch is then reported as
 * skipped, not failed (docs/engines.md, "Address families").
 */
import { familyOfPrefix, routeText, type EngineDiff } from './diff.js';
import { ExecError, type ExecFn } from './exec.js';
import { canonicalAddress, canonicalAllowedIp } from './prefix.js';
import type { IpFamily, UnavailableFamily } from './types.js';

/**
 * What the kernel says when a family is switched off: "IPv6 is disabled on this device" for
 * an address and "IPv6 is disabled on nexthop device" for a route under `disable_ipv6`
 * (seen on Linux 6.1), "Address family not supported by protocol" (EAFNOSUPPORT) when the
 * kernel has no IPv6 at all (`ipv6.disable=1`). Recognised from the answer rather than
 * checked in /proc beforehand: the answer is the truth at the moment of the write, needs
 * no second source, and comes through the same exec seam the lab runs in a namespace.
 */
const FAMILY_OFF_RE = /IPv6 is disabled|Address family not supported|EAFNOSUPPORT/i;

/** The host's words when an `ip` failure means the family is switched off; undefined for any other failure. */
export function familyOffReason(e: unknown): string | undefined {
  if (!(e instanceof ExecError)) return undefined;
  const line = e.stderr.split('\n').find((l) => FAMILY_OFF_RE.test(l));
  return line?.replace(/^(Error|RTNETLINK answers):\s*(ipv6:\s*)?/i, '').replace(/\.$/, '').trim();
}

/** WireGuard's overhead (80 bytes over IPv6) subtracted from a 1500-byte path. */
export const WG_DEFAULT_MTU = 1420;
const ROUTE_PROTO = 'static';

export async function linkExists(exec: ExecFn, iface: string): Promise<boolean> {
  try {
    await exec(['ip', 'link', 'show', 'dev', iface]);
    return true;
  } catch (e) {
    if (e instanceof ExecError && /does not exist|Cannot find device/i.test(e.stderr)) return false;
    throw e;
  }
}

export async function linkUp(exec: ExecFn, iface: string, mtu: number): Promise<void> {
  await exec(['ip', 'link', 'set', 'dev', iface, 'mtu', String(mtu), 'up']);
}

/** Deletes the link; a link that is already gone is success (close is idempotent). */
export async function deleteLink(exec: ExecFn, iface: string): Promise<void> {
  try {
    await exec(['ip', 'link', 'del', 'dev', iface]);
  } catch (e) {
    if (e instanceof ExecError && /does not exist|Cannot find device/i.test(e.stderr)) return;
    throw e;
  }
}

interface IpAddrJson {
  addr_info?: Array<{ local?: string; prefixlen?: number; scope?: string }>;
}

/** The interface's global addresses in canonical form (link-local ones are the kernel's, not ours). */
export async function readAddresses(exec: ExecFn, iface: string): Promise<string[]> {
  const { stdout } = await exec(['ip', '-j', 'addr', 'show', 'dev', iface]);
  const links = JSON.parse(stdout || '[]') as IpAddrJson[];
  const out: string[] = [];
  for (const info of links[0]?.addr_info ?? []) {
    if (info.scope === 'link' || info.local === undefined) continue;
    const c = canonicalAddress(`${info.local}/${info.prefixlen}`);
    if (c) out.push(c);
  }
  return out.sort();
}

interface IpRouteJson {
  dst?: string;
  protocol?: string;
  type?: string;
  metrics?: Array<{ mtu?: number }>;
}

/** Routes through the interface that Knit added (proto static), both families, canonical, with their MTU if set (routeText). */
export async function readRoutes(exec: ExecFn, iface: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ['-4', '-6']) {
    let stdout: string;
    try {
      ({ stdout } = await exec(['ip', '-j', family, 'route', 'show', 'dev', iface, 'proto', ROUTE_PROTO]));
    } catch (e) {
      if (familyOffReason(e) !== undefined) continue; // a kernel without IPv6 holds no IPv6 routes
      throw e;
    }
    for (const r of JSON.parse(stdout || '[]') as IpRouteJson[]) {
      if (r.dst === undefined || (r.type !== undefined && r.type !== 'unicast')) continue;
      const dst = r.dst === 'default' ? (family === '-4' ? '0.0.0.0/0' : '::/0') : r.dst;
      const c = canonicalAllowedIp(dst);
      const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
      if (c) out.push(routeText(c, mtu));
    }
  }
  return out.sort();
}

/**
 * Applies the address and route part of a diff. Removals first and forgiving
 * (an address or route already gone is what we wanted); additions with
 * `replace`, which is idempotent, one batch per family, and strict: a failure
 * there is an error, except that a family the host has switched off is
 * returned as unavailable (its additions not made) while the other is applied.
 */
export async function applyInterfaceDiff(exec: ExecFn, iface: string, diff: EngineDiff): Promise<UnavailableFamily[]> {
  const removals = [
    ...diff.removeRoutes.map((r) => `route del ${r} dev ${iface} proto ${ROUTE_PROTO}`),
    ...diff.removeAddresses.map((a) => `address del ${a} dev ${iface}`),
  ];
  // Addresses before routes within a family: a route's source may be one of the addresses.
  const additions = (family: IpFamily) => [
    ...diff.addAddresses.filter((a) => familyOfPrefix(a) === family).map((a) => `address replace ${a} dev ${iface}`),
    ...diff.addRoutes.filter((r) => familyOfPrefix(r) === family).map((r) => `route replace ${r} dev ${iface} proto ${ROUTE_PROTO}`),
  ];
  if (removals.length > 0) {
    try {
      await exec(['ip', '-force', '-batch', '-'], { input: removals.join('\n') + '\n' });
    } catch (e) {
      // -force ran every line; the failures are things already gone (deleting an address
      // also drops routes through it). Anything worse shows up when the additions run.
      if (!(e instanceof ExecError)) throw e;
    }
  }
  const unavailable: UnavailableFamily[] = [];
  for (const family of [4, 6] as const) {
    const lines = additions(family);
    if (lines.length === 0) continue;
    try {
      await exec(['ip', '-batch', '-'], { input: lines.join('\n') + '\n' });
    } catch (e) {
      const reason = familyOffReason(e);
      if (reason === undefined) throw e;
      unavailable.push({ family, reason });
    }
  }
  return unavailable;
}
