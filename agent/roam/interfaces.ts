/**
 * Which local addresses give endpoint candidates, and a poller that notices
 * when they change (the roaming trigger). `--interfaces NAMES` limits the
 * set; loopback is skipped unless named (tests on one machine name `lo` so
 * their traffic stays on loopback); IPv6 link-local is always skipped (it
 * needs a zone to be usable and only means something on one link).
 */
import { spawn, type ChildProcess } from 'node:child_process';
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

/**
 * Starts `ip -o monitor address route` (iproute2 reading netlink) and calls `poke` on every
 * event, so a change is seen at once instead of at the next poll. Returns a stopper; returns
 * undefined where there is no `ip` (then polling alone does the job).
 */
export function watchNetlink(poke: () => void): (() => void) | undefined {
  if (process.platform !== 'linux') return undefined;
  let child: ChildProcess;
  try {
    // The shell holds our pipe as its stdin: when it closes — we stop, or we die, even by
    // SIGKILL — `read` returns and the monitor is killed, so it never outlives the agent.
    child = spawn('sh', ['-c', 'ip -o monitor address route & m=$!; read _; kill $m'], { stdio: ['pipe', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
  child.on('error', () => {}); // no sh or ip: polling covers it
  child.stdin?.on('error', () => {});
  child.stdout?.on('data', () => poke());
  child.unref();
  (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  return () => child.stdin?.end();
}

/** Netlink events come in bursts (address, then routes): one poll shortly after the first. */
const NETLINK_SETTLE_MS = 100;

export function createInterfaceMonitor(options: {
  clock: Clock;
  interfaces?: string[];
  exclude?: string[];
  read?: () => InterfaceTable;
  intervalMs?: number;
  onChange: (addresses: string[]) => void;
  /** Also listen to netlink (Linux, through `ip monitor`) for immediate notice. */
  netlink?: boolean;
}) {
  const read = options.read ?? networkInterfaces;
  let current = selectAddresses(read(), options.interfaces, options.exclude);
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let running = false;
  let stopNetlink: (() => void) | undefined;
  const check = () => {
    const next = selectAddresses(read(), options.interfaces, options.exclude);
    if (next.join(',') !== current.join(',')) {
      current = next;
      options.onChange(next);
    }
  };
  const poll = () => {
    check();
    if (running) timer = options.clock.setTimeout(poll, options.intervalMs ?? INTERFACE_POLL_MS);
  };
  let settling: ReturnType<Clock['setTimeout']> | undefined;
  const poke = () => {
    if (!running || settling !== undefined) return;
    settling = options.clock.setTimeout(() => {
      settling = undefined;
      if (running) check();
    }, NETLINK_SETTLE_MS);
  };
  return {
    addresses: () => current,
    start() {
      if (running) return;
      running = true;
      timer = options.clock.setTimeout(poll, options.intervalMs ?? INTERFACE_POLL_MS);
      if (options.netlink) stopNetlink = watchNetlink(poke);
    },
    stop() {
      running = false;
      if (timer !== undefined) options.clock.clearTimeout(timer);
      if (settling !== undefined) options.clock.clearTimeout(settling);
      stopNetlink?.();
    },
    /** Re-reads the addresses now (a hint that something changed). */
    poke,
  };
}
