/**
 * Which local addresses give endpoint candidates, and a monitor that notices
 * when they change (the roaming trigger). Not the candidates themselves
 * (agent/discovery adds the tunnel port and the reflexive endpoints).
 *
 * selectAddresses is pure, over `os.networkInterfaces()`-shaped data:
 *   - `--interfaces NAMES` (allow) limits the set to those interfaces;
 *   - loopback and interfaces the OS flags `internal` are skipped unless
 *     named: tests on one machine name `lo` so their traffic stays on loopback;
 *   - IPv6 link-local is always skipped: it needs a zone to be usable and only
 *     means something on one link;
 *   - `exclude` wins over everything: the tunnel's own interface (a mesh
 *     address as an endpoint would route the tunnel through itself).
 *
 * createInterfaceMonitor polls (one getifaddrs, cheap) every 2 s; on Linux it
 * can also listen to netlink through `ip -o monitor` and look again 100 ms
 * after any address or route event. Polling alone is enough; netlink makes a
 * roam visible at once instead of up to 2 s later.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Clock } from '../../shared/clock.js';
import { isLinkLocalIp, isLoopbackIp, normalizeIp } from '../../shared/net/addr.js';

export type InterfaceTable = NodeJS.Dict<NetworkInterfaceInfo[]>;

/** The selected addresses, sorted and deduplicated (so two reads compare as text). */
export function selectAddresses(table: InterfaceTable, allow?: readonly string[], exclude: readonly string[] = []): string[] {
  const out = new Set<string>();
  for (const [name, infos] of Object.entries(table)) {
    if (allow && !allow.includes(name)) continue;
    if (exclude.includes(name)) continue;
    const named = allow?.includes(name) === true;
    for (const info of infos ?? []) {
      if (typeof info?.address !== 'string') continue;
      const address = normalizeIp(info.address);
      if ((isLoopbackIp(address) || info.internal) && !named) continue;
      // Node 18.0-18.3 reported family as a number; accept both spellings.
      const v6 = info.family === 'IPv6' || (info.family as unknown) === 6;
      if (v6 && isLinkLocalIp(address)) continue;
      out.add(address);
    }
  }
  return [...out].sort();
}

/** How often addresses are polled: one getifaddrs is cheap, and 2 s bounds how late a roam is noticed without netlink. */
export const INTERFACE_POLL_MS = 2000;
/** Netlink events come in bursts (address, then routes): one look this long after the first. */
export const NETLINK_SETTLE_MS = 100;

/**
 * Starts `ip -o monitor address route` (iproute2 reading netlink) and calls `poke` on every
 * event. Returns a stopper, or undefined where there is no `ip` (then polling alone does the job).
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

/** What changed between two reads. */
export interface AddressChange { addresses: string[]; added: string[]; removed: string[] }

export interface InterfaceMonitorOptions {
  clock: Clock;
  /** The `--interfaces` allow-list; undefined = every interface. */
  interfaces?: string[];
  exclude?: string[];
  read?: () => InterfaceTable;
  intervalMs?: number;
  /** Called with the new address set whenever it differs from the last one seen. */
  onChange?: (addresses: string[], change: AddressChange) => void;
  /** Also listen to netlink (Linux, through `ip monitor`) for immediate notice. */
  netlink?: boolean;
}

export interface InterfaceMonitor {
  /** The current selection (read at creation, then at each poll). */
  addresses(): string[];
  /** Starts polling (and netlink). Idempotent. */
  start(): void;
  /** Stops polling and netlink; leaves no timer or process behind. Idempotent. */
  stop(): void;
  /** A hint that something changed (a netlink event): look again shortly, once per burst. */
  poke(): void;
  /** Adds a change listener; returns its remover. */
  subscribe(listener: (addresses: string[], change: AddressChange) => void): () => void;
  /** Failed reads so far (the last good set is kept meanwhile). */
  readErrors(): number;
}

export function createInterfaceMonitor(options: InterfaceMonitorOptions): InterfaceMonitor {
  const read = options.read ?? networkInterfaces;
  const intervalMs = options.intervalMs ?? INTERFACE_POLL_MS;
  const listeners = new Set<(addresses: string[], change: AddressChange) => void>();
  if (options.onChange) listeners.add(options.onChange);
  let errors = 0;
  let running = false;
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let settling: ReturnType<Clock['setTimeout']> | undefined;
  let stopNetlink: (() => void) | undefined;

  /** undefined when the OS refused (a sandbox without getifaddrs, a transient failure): keep what we had. */
  function readSelection(): string[] | undefined {
    try {
      return selectAddresses(read(), options.interfaces, options.exclude);
    } catch {
      errors++;
      return undefined;
    }
  }

  let current = readSelection() ?? [];

  function check(): void {
    const next = readSelection();
    if (!next || next.join(',') === current.join(',')) return;
    const change: AddressChange = {
      addresses: next,
      added: next.filter((a) => !current.includes(a)),
      removed: current.filter((a) => !next.includes(a)),
    };
    current = next;
    for (const l of [...listeners]) l(next, change);
  }

  function poll(): void {
    timer = undefined;
    check();
    if (running) timer = options.clock.setTimeout(poll, intervalMs);
  }

  function poke(): void {
    if (!running || settling !== undefined) return;
    settling = options.clock.setTimeout(() => {
      settling = undefined;
      if (running) check();
    }, NETLINK_SETTLE_MS);
  }

  return {
    addresses: () => current,
    start() {
      if (running) return;
      running = true;
      timer = options.clock.setTimeout(poll, intervalMs);
      if (options.netlink) stopNetlink = watchNetlink(poke);
    },
    stop() {
      running = false;
      if (timer !== undefined) options.clock.clearTimeout(timer);
      if (settling !== undefined) options.clock.clearTimeout(settling);
      timer = undefined;
      settling = undefined;
      stopNetlink?.();
      stopNetlink = undefined;
    },
    poke,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    readErrors: () => errors,
  };
}
