/**
 * Which local addresses give endpoint candidates, and a poller that notices
 * when they change (the roaming trigger). `--interfaces NAMES` limits the
 * set; loopback is skipped unless named (tests on one machine name `lo` so
 * their traffic stays on loopback); IPv6 link-local is always skipped (it
 * needs a zone to be usable and only means something on one link).
 */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Clock } from '../../shared/clock.js';
import { isLinkLocalIp, isLoopbackIp } from '../../shared/net/addr.js';

export type InterfaceTable = NodeJS.Dict<NetworkInterfaceInfo[]>;

/**
 * `exclude` names interfaces that never give candidates whatever `allow` says:
 * the tunnel's own interface (a mesh address as an endpoint would route the
 * tunnel through itself).
 */
export function selectAddresses(table: InterfaceTable, allow?: string[], exclude: string[] = []): string[] {
  const out: string[] = [];
  for (const [name, infos] of Object.entries(table)) {
    if (allow && !allow.includes(name)) continue;
    if (exclude.includes(name)) continue;
    for (const info of infos ?? []) {
      if (isLoopbackIp(info.address) && !allow?.includes(name)) continue;
      if (info.internal && !allow?.includes(name)) continue;
      if (info.family === 'IPv6' && isLinkLocalIp(info.address)) continue;
      if (!out.includes(info.address)) out.push(info.address);
    }
  }
  return out.sort();
}

/** How often addresses are polled. Cheap (one getifaddrs), and 2 s bounds how late a roam is noticed. */
export const INTERFACE_POLL_MS = 2000;

export function createInterfaceMonitor(options: {
  clock: Clock;
  interfaces?: string[];
  exclude?: string[];
  read?: () => InterfaceTable;
  intervalMs?: number;
  onChange: (addresses: string[]) => void;
}) {
  const read = options.read ?? networkInterfaces;
  let current = selectAddresses(read(), options.interfaces, options.exclude);
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let running = false;
  const poll = () => {
    const next = selectAddresses(read(), options.interfaces, options.exclude);
    if (next.join(',') !== current.join(',')) {
      current = next;
      options.onChange(next);
    }
    if (running) timer = options.clock.setTimeout(poll, options.intervalMs ?? INTERFACE_POLL_MS);
  };
  return {
    addresses: () => current,
    start() {
      if (running) return;
      running = true;
      timer = options.clock.setTimeout(poll, options.intervalMs ?? INTERFACE_POLL_MS);
    },
    stop() {
      running = false;
      if (timer !== undefined) options.clock.clearTimeout(timer);
    },
  };
}
