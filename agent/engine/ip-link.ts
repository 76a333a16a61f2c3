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
 */
import { routeText, type EngineDiff } from './diff.js';
import { ExecError, type ExecFn } from './exec.js';
import { canonicalAddress, canonicalAllowedIp } from './prefix.js';

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
    const { stdout } = await exec(['ip', '-j', family, 'route', 'show', 'dev', iface, 'proto', ROUTE_PROTO]);
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
 * `replace`, which is idempotent, and strict: a failure there is an error.
 */
export async function applyInterfaceDiff(exec: ExecFn, iface: string, diff: EngineDiff): Promise<void> {
  const removals = [
    ...diff.removeRoutes.map((r) => `route del ${r} dev ${iface} proto ${ROUTE_PROTO}`),
    ...diff.removeAddresses.map((a) => `address del ${a} dev ${iface}`),
  ];
  const additions = [
    ...diff.addAddresses.map((a) => `address replace ${a} dev ${iface}`),
    ...diff.addRoutes.map((r) => `route replace ${r} dev ${iface} proto ${ROUTE_PROTO}`),
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
  if (additions.length > 0) await exec(['ip', '-batch', '-'], { input: additions.join('\n') + '\n' });
}
