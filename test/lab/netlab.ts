/**
 * The NAT lab: real Linux network namespaces wired into a small internet, with
 * nftables NAT routers and hosts behind them. Engine tests use it now; the
 * agent's NAT-to-NAT tests build on it later. docs/lab.md has the picture.
 *
 *   inet ns: bridge br0 198.18.0.1/15 (no route out, no forwarding)
 *     ├── public host   eth0 198.18.1.x/15, default via 198.18.0.1   ("none": no NAT)
 *     └── router  wan0  198.18.1.x/15 ─ nft masquerade ─ br0 10.N.0.1/24
 *           ├── host    eth0 10.N.0.x/24, default via 10.N.0.1
 *           └── router  wan0 10.N.0.x/24 ─ masquerade ─ br0 10.M.0.1/24  (double NAT)
 *
 * NAT kinds (LAB-NOTES): `cone` = plain masquerade: endpoint-independent
 * mapping, port preserved, address-and-port-dependent filtering (a
 * port-restricted cone). `symmetric` = masquerade fully-random: a new random
 * port per destination. No hairpinning unless asked for.
 *
 * The variety real networks have is a set of options, each defaulting to the
 * plain case: a router's WAN input policy (drop / reject / accept by the
 * kernel's own stack), hairpinning, short UDP conntrack timeouts, the WAN
 * link's MTU, the LAN prefix (carrier-NAT space 100.64.0.0/10); a host with
 * IPv6 disabled, or with its own input-drop firewall (nftables, iptables-nft).
 *
 * Safety: every name carries a per-run prefix (kn<pid%10000><letter>-); veths
 * are created inside namespaces, so the root namespace's network is never
 * touched; only the inet namespace holds 198.18.0.0/15 and it forwards nothing.
 * Teardown kills only processes this lab started (and any left inside its own
 * namespaces), deletes only its own namespaces, and also runs from a process
 * 'exit'/signal safety net if a test never reaches its `after`.
 *
 * The rulesets and address plans it writes are pure text, in netlab-rules.ts.
 *
 * Every command run in a namespace gets a private /run/wireguard (a bind mount
 * inside `ip netns exec`'s own mount namespace), so wireguard-go and `wg` in
 * different namespaces can all use "wg0" without their UAPI sockets colliding.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecError, type ExecFn } from '../../agent/engine/exec.js';
import { HOST_FIREWALL_IPTABLES, HOST_FIREWALL_NFTABLES, labLan, natRuleset } from './netlab-rules.js';

export type LabCheck = { ok: true } | { ok: false; reason: string };

const TOOLS: Array<[cmd: string, args: string[], pkg: string]> = [
  ['ip', ['-V'], 'iproute2'],
  ['nft', ['--version'], 'nftables'],
  ['conntrack', ['--version'], 'conntrack'],
  ['wireguard-go', ['--version'], 'wireguard-go'],
  ['wg', ['--version'], 'wireguard-tools'],
  ['ping', ['-V'], 'iputils-ping'],
];

let labCheck: LabCheck | undefined;

/** Whether this machine can run the lab, and if not, why (for `t.skip('skipped: …')`). */
export function canRunLab(): LabCheck {
  labCheck ??= probeLab();
  return labCheck;
}

function probeLab(): LabCheck {
  if (process.platform !== 'linux') return { ok: false, reason: 'the lab needs Linux network namespaces' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the lab needs root' };
  if (!existsSync('/dev/net/tun')) return { ok: false, reason: 'no /dev/net/tun' };
  for (const [cmd, args, pkg] of TOOLS) {
    const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 5_000 });
    if (r.error || r.status !== 0) return { ok: false, reason: `${cmd} is not available (install ${pkg})` };
  }
  const probe = `kn${process.pid % 10000}-probe`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8', timeout: 5_000 });
  if (add.status !== 0) return { ok: false, reason: `ip netns does not work here: ${(add.stderr || '').trim()}` };
  spawnSync('ip', ['netns', 'del', probe], { timeout: 5_000 });
  return { ok: true };
}

/** Whether hosts can have an iptables-nft firewall here (iptables with the nf_tables backend), and if not, why. */
export function canUseIptablesNft(): LabCheck {
  const r = spawnSync('iptables', ['-V'], { encoding: 'utf8', timeout: 5_000 });
  if (r.error || r.status !== 0) return { ok: false, reason: 'iptables is not available (install iptables)' };
  return r.stdout.includes('nf_tables') ? { ok: true } : { ok: false, reason: `iptables is not the nf_tables backend (${r.stdout.trim()})` };
}

/** `full-cone`: endpoint-independent mapping and filtering (any source may reach a mapped port); see natRuleset. */
export type NatKind = 'cone' | 'symmetric' | 'full-cone';

/**
 * What a router's own stack does with unsolicited packets on its WAN link. `drop` and `reject`
 * are home routers (reject answers ICMP port unreachable from an nft rule and commits nothing);
 * `accept` has no input filter at all (a plain Linux box, a cloud NAT instance): the kernel
 * answers port unreachable itself and conntrack confirms that inbound flow.
 */
export type WanInput = 'drop' | 'reject' | 'accept';

/** A host's own firewall: input policy drop, established/related and loopback accepted. */
export type HostFirewall = 'nftables' | 'iptables-nft';

export interface RouterOptions {
  nat: NatKind;
  /** The router this one sits behind (double NAT); undefined = on the lab internet. */
  behind?: LabRouter;
  /** Default `drop`. */
  wanInput?: WanInput;
  /** Hosts behind it reach its public address and are NATed back in (default off). */
  hairpin?: boolean;
  /** Both UDP conntrack timeouts (unreplied and stream), in seconds; default the kernel's. */
  udpTimeoutS?: number;
  /** The MTU of its WAN link, set on both ends of the veth; default 1500. */
  wanMtu?: number;
  /** Its LAN, a prefix inside 10.0.0.0/8 or 100.64.0.0/10 (/8 to /24); default 10.N.0.0/24. */
  lanPrefix?: string;
}

export interface HostOptions {
  /** The router it sits behind; undefined = on the lab internet. */
  behind?: LabRouter;
  /** false: `disable_ipv6` for all and default interfaces in its namespace. Default true. */
  ipv6?: boolean;
  /** Its own input-drop firewall; default none. */
  firewall?: HostFirewall;
}

export interface LabRouter {
  readonly name: string;
  readonly ns: string;
  nat: NatKind;
  readonly wanInput: WanInput;
  readonly hairpin: boolean;
  /** Its address on the segment above it (the internet, or the outer router's LAN). */
  wanAddress: string;
  readonly lanPrefix: string; // "10.N.0.0/24"
  readonly lanGateway: string; // "10.N.0.1"
  readonly behind?: LabRouter;
}

export interface LabHost {
  readonly name: string;
  readonly ns: string;
  address: string;
  /** The router it sits behind; undefined = directly on the internet (NAT kind "none"). */
  behind?: LabRouter;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface LabProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** The last 64 KiB of its stdout and stderr. */
  output(): string;
  onLine(fn: (line: string) => void): void;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after PROCESS_STOP_GRACE_MS. */
  stop(): Promise<void>;
}

/** How long a process gets between SIGTERM and SIGKILL at teardown. */
export const PROCESS_STOP_GRACE_MS = 2_000;
/** Setup commands finish in milliseconds; this only bounds a hung one. */
const COMMAND_TIMEOUT_MS = 20_000;
const OUTPUT_KEEP_BYTES = 64 * 1024;
const INTERNET_GATEWAY = '198.18.0.1';
const INTERNET_PREFIX_LEN = 15;
// Runs argv after giving the command its namespace's own /run/wireguard (see header).
const WRAP = 'mount --bind "$KNIT_LAB_WGDIR" /run/wireguard && exec "$@"';

interface Segment {
  ns: string; // the namespace holding the bridge
  prefixLen: number;
  gateway: string;
  nextHost: number;
  nextPort: number;
  address(n: number): string;
}

export interface Lab {
  readonly prefix: string;
  readonly internetNs: string;
  /** A directory of this lab's, removed at teardown (by the safety net too), after its processes are gone. */
  readonly tempDir: string;
  addRouter(name: string, options: RouterOptions): Promise<LabRouter>;
  addHost(name: string, options?: HostOptions): Promise<LabHost>;
  /** Runs argv inside the namespace; rejects with ExecError on a non-zero exit unless allowFailure. */
  run(ns: string, argv: string[], options?: { input?: string; allowFailure?: boolean; timeoutMs?: number }): Promise<RunResult>;
  /** An ExecFn (the engines' seam) that runs inside the namespace. */
  exec(ns: string): ExecFn;
  /** Starts a long-lived process inside the namespace; it is stopped at teardown. */
  spawn(ns: string, argv: string[], env?: Record<string, string>): LabProcess;
  /** Where that namespace's /run/wireguard really is, as seen from this process. */
  wireguardRunDir(ns: string): string;
  /** Gives the router a new address on its WAN segment (or the one given); returns it. */
  setRouterPublicAddress(router: LabRouter, address?: string): Promise<string>;
  /** Re-plugs a host behind another router (undefined = onto the internet); returns its new address. */
  moveHost(host: LabHost, to: LabRouter | undefined): Promise<string>;
  /** Switches a router's NAT behaviour in place (and forgets its mappings, as a reboot would). */
  setRouterNat(router: LabRouter, nat: NatKind): Promise<void>;
  /** Forgets NAT mappings on one router, or all of them. */
  flushConntrack(router?: LabRouter): Promise<void>;
  teardown(): Promise<void>;
}

const usedPrefixes = new Set<string>();

function choosePrefix(): string {
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  const names = listed.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
  const base = `kn${process.pid % 10000}`;
  for (const letter of 'abcdefghijklmnopqrstuvwxyz') {
    const p = `${base}${letter}-`;
    if (!usedPrefixes.has(p) && !names.some((n) => n.startsWith(p))) {
      usedPrefixes.add(p);
      return p;
    }
  }
  throw new Error(`no free lab prefix for ${base}; delete stale namespaces named ${base}*`);
}

function execFileText(file: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file, args,
      { encoding: 'utf8', timeout: options.timeoutMs ?? COMMAND_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024, env: options.env },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr: err && !stderr ? String(err.message) : stderr });
      },
    );
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input ?? '');
  });
}

/** Builds an empty lab (just the internet). Call teardown() in a finally/after. */
export async function createLab(): Promise<Lab> {
  const check = canRunLab();
  if (!check.ok) throw new Error(`the lab cannot run: ${check.reason}`);
  const prefix = choosePrefix();
  const tmp = mkdtempSync(join(tmpdir(), `knit-lab-${prefix}`));
  // The mount point for the per-namespace bind mounts; the bind itself never leaves the namespace's mount ns.
  mkdirSync('/run/wireguard', { recursive: true });
  const namespaces: string[] = [];
  const processes = new Set<LabProcess>();
  const routers = new Map<string, LabRouter>();
  const hosts: LabHost[] = [];
  const lanOf = new Map<LabRouter, Segment>();
  let routerCount = 0;
  let tornDown = false;

  const ip = async (args: string[], input?: string) => {
    const r = await execFileText('ip', args, { input });
    if (r.code !== 0) throw new ExecError(`ip ${args.slice(0, 4).join(' ')}`, r.code, r.stderr);
    return r.stdout;
  };

  const run: Lab['run'] = async (ns, argv, options = {}) => {
    if (!namespaces.includes(ns)) throw new RangeError(`${ns} is not a namespace of this lab`);
    const r = await execFileText('ip', ['netns', 'exec', ns, 'sh', '-c', WRAP, 'sh', ...argv], {
      input: options.input,
      env: { ...process.env, KNIT_LAB_WGDIR: wgDir(ns) },
      timeoutMs: options.timeoutMs,
    });
    if (r.code !== 0 && !options.allowFailure) throw new ExecError(argv[0] ?? '?', r.code, r.stderr);
    return r;
  };

  const wgDir = (ns: string) => join(tmp, ns, 'wireguard');

  const addNamespace = async (short: string, role: { router: boolean; ipv6?: boolean; udpTimeoutS?: number }) => {
    if (!/^[a-z0-9]{1,12}$/.test(short)) throw new RangeError('lab names are 1-12 of [a-z0-9]');
    const ns = `${prefix}${short}`;
    if (namespaces.includes(ns)) throw new RangeError(`${short} already exists in this lab`);
    await ip(['netns', 'add', ns]);
    namespaces.push(ns);
    mkdirSync(wgDir(ns), { recursive: true, mode: 0o700 });
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    const sys = '/proc/sys/net';
    const script = [
      `echo 0 > ${sys}/ipv4/conf/all/rp_filter`,
      `echo 0 > ${sys}/ipv4/conf/default/rp_filter`,
      `echo ${role.router ? 1 : 0} > ${sys}/ipv4/ip_forward`,
      ...(role.router ? [`echo 0 > ${sys}/ipv4/conf/all/send_redirects`, `echo 0 > ${sys}/ipv4/conf/default/send_redirects`] : []),
      // br_netfilter would send bridged frames through this namespace's conntrack/NAT (LAB-NOTES).
      `for f in ${sys}/bridge/bridge-nf-call-iptables ${sys}/bridge/bridge-nf-call-ip6tables ${sys}/bridge/bridge-nf-call-arptables; do`,
      '  if [ -e "$f" ]; then echo 0 > "$f"; fi',
      'done',
      // Before any interface but lo exists: `default` covers the veths plugged in later, `all` lo.
      ...(role.ipv6 === false ? [`echo 1 > ${sys}/ipv6/conf/all/disable_ipv6`, `echo 1 > ${sys}/ipv6/conf/default/disable_ipv6`] : []),
      ...(role.udpTimeoutS === undefined ? [] : [
        `echo ${role.udpTimeoutS} > ${sys}/netfilter/nf_conntrack_udp_timeout`,
        `echo ${role.udpTimeoutS} > ${sys}/netfilter/nf_conntrack_udp_timeout_stream`,
      ]),
    ].join('\n');
    await run(ns, ['sh', '-ec', script]);
    return ns;
  };

  const addBridge = async (ns: string, address: string) => {
    await ip(['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await ip(['-n', ns, 'addr', 'add', address, 'dev', 'br0']);
    await ip(['-n', ns, 'link', 'set', 'br0', 'up']);
  };

  /** Plugs `ifName` of `ns` into a segment's bridge (both ends `mtu` when given); returns the address it got. */
  const plug = async (ns: string, ifName: string, seg: Segment, address?: string, mtu?: number) => {
    const port = `p${seg.nextPort++}`;
    await ip(['-n', ns, 'link', 'add', ifName, ...(mtu ? ['mtu', String(mtu)] : []), 'type', 'veth', 'peer', 'name', port, ...(mtu ? ['mtu', String(mtu)] : []), 'netns', seg.ns]);
    await ip(['-n', seg.ns, 'link', 'set', port, 'master', 'br0', 'up']);
    await ip(['-n', ns, 'link', 'set', ifName, 'up']);
    const addr = address ?? seg.address(seg.nextHost++);
    await ip(['-n', ns, 'addr', 'add', `${addr}/${seg.prefixLen}`, 'dev', ifName]);
    await ip(['-n', ns, 'route', 'replace', 'default', 'via', seg.gateway]);
    return addr;
  };

  /** Synchronous last resort from 'exit' or a signal: kill, delete, forget. */
  const teardownSync = () => {
    if (tornDown) return;
    tornDown = true;
    for (const p of processes) {
      try { p.child.kill('SIGKILL'); } catch { /* gone */ }
    }
    for (const ns of [...namespaces].reverse()) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split('\n').map(Number).filter((n) => n > 0)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      spawnSync('ip', ['netns', 'del', ns]);
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    teardownSync();
    process.kill(process.pid, signal);
  };
  process.on('exit', teardownSync);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let internetNs: string;
  try {
    internetNs = await addNamespace('inet', { router: false });
    await addBridge(internetNs, `${INTERNET_GATEWAY}/${INTERNET_PREFIX_LEN}`);
  } catch (e) {
    await teardown();
    throw e;
  }
  const internet: Segment = {
    ns: internetNs, prefixLen: INTERNET_PREFIX_LEN, gateway: INTERNET_GATEWAY, nextHost: 0, nextPort: 0,
    address: (n) => `198.18.${1 + Math.floor(n / 240)}.${10 + (n % 240)}`,
  };

  const segmentAbove = (router: LabRouter | undefined) => (router ? lanOf.get(router)! : internet);

  const addRouter: Lab['addRouter'] = async (name, options) => {
    const index = ++routerCount;
    if (index > 250) throw new RangeError('at most 250 routers');
    if (options.wanMtu !== undefined && !(Number.isInteger(options.wanMtu) && options.wanMtu >= 576 && options.wanMtu <= 1500)) throw new RangeError('wanMtu is 576-1500');
    if (options.udpTimeoutS !== undefined && !(Number.isInteger(options.udpTimeoutS) && options.udpTimeoutS >= 1)) throw new RangeError('udpTimeoutS is a whole number of seconds ≥ 1');
    const lan = labLan(options.lanPrefix ?? `10.${index}.0.0/24`);
    const ns = await addNamespace(name, { router: true, udpTimeoutS: options.udpTimeoutS });
    const wanAddress = await plug(ns, 'wan0', segmentAbove(options.behind), undefined, options.wanMtu);
    await addBridge(ns, `${lan.address(1)}/${lan.prefixLen}`);
    const router: LabRouter = {
      name, ns, nat: options.nat, wanInput: options.wanInput ?? 'drop', hairpin: options.hairpin ?? false,
      wanAddress, lanPrefix: lan.prefix, lanGateway: lan.address(1), behind: options.behind,
    };
    await run(ns, ['nft', '-f', '-'], { input: natRuleset(router) });
    lanOf.set(router, { ns, prefixLen: lan.prefixLen, gateway: router.lanGateway, nextHost: 10, nextPort: 0, address: lan.address });
    routers.set(name, router);
    return router;
  };

  const setRouterNat: Lab['setRouterNat'] = async (router, nat) => {
    const host = hosts.find((h) => h.behind === router);
    if (nat === 'full-cone' && !host) throw new RangeError(`${router.name} has no host to be a full cone for`);
    await run(router.ns, ['nft', '-f', '-'], { input: `delete table ip knit_lab\n${natRuleset({ ...router, nat }, host?.address)}` });
    await run(router.ns, ['conntrack', '-F'], { allowFailure: true });
    router.nat = nat;
  };

  const addHost: Lab['addHost'] = async (name, options = {}) => {
    const ns = await addNamespace(name, { router: false, ipv6: options.ipv6 });
    if (options.firewall) await addHostFirewall(ns, options.firewall);
    const address = await plug(ns, 'eth0', segmentAbove(options.behind));
    const host: LabHost = { name, ns, address, behind: options.behind };
    hosts.push(host);
    return host;
  };

  /**
   * A server's own firewall, as an administrator writes it: Debian's `inet filter` table (nftables)
   * or the `ip filter` table iptables-nft builds, input policy drop, replies and loopback accepted.
   */
  const addHostFirewall = async (ns: string, firewall: HostFirewall) => {
    if (firewall === 'nftables') {
      await run(ns, ['nft', '-f', '-'], { input: HOST_FIREWALL_NFTABLES });
      return;
    }
    const usable = canUseIptablesNft();
    if (!usable.ok) throw new Error(usable.reason);
    await run(ns, ['sh', '-ec', HOST_FIREWALL_IPTABLES]);
  };

  const spawnIn: Lab['spawn'] = (ns, argv, env = {}) => {
    if (!namespaces.includes(ns)) throw new RangeError(`${ns} is not a namespace of this lab`);
    const child = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', WRAP, 'sh', ...argv], {
      env: { ...process.env, ...env, KNIT_LAB_WGDIR: wgDir(ns) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let partial = '';
    let exited = false;
    const listeners: Array<(line: string) => void> = [];
    const onData = (d: Buffer) => {
      const text = d.toString('utf8');
      out = (out + text).slice(-OUTPUT_KEEP_BYTES);
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      for (const l of lines) for (const fn of listeners) fn(l);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.stdin!.on('error', () => {});
    const exit = once(child, 'exit').catch(() => undefined);
    const proc: LabProcess = {
      pid: child.pid ?? -1,
      child,
      output: () => out,
      onLine: (fn) => { listeners.push(fn); },
      exited: () => exited,
      async stop() {
        if (exited) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), PROCESS_STOP_GRACE_MS);
        await exit;
        clearTimeout(timer);
      },
    };
    child.on('error', () => { exited = true; processes.delete(proc); });
    child.on('exit', () => { exited = true; processes.delete(proc); });
    processes.add(proc);
    return proc;
  };

  const setRouterPublicAddress: Lab['setRouterPublicAddress'] = async (router, address) => {
    const seg = segmentAbove(router.behind);
    const next = address ?? seg.address(seg.nextHost++);
    // Flush, then add: deleting a subnet's primary address would also take its secondaries (LAB-NOTES).
    await ip(['-n', router.ns, 'addr', 'flush', 'dev', 'wan0']);
    await ip(['-n', router.ns, 'addr', 'add', `${next}/${seg.prefixLen}`, 'dev', 'wan0']);
    await ip(['-n', router.ns, 'route', 'replace', 'default', 'via', seg.gateway]);
    await run(router.ns, ['conntrack', '-F'], { allowFailure: true });
    router.wanAddress = next;
    return next;
  };

  const moveHost: Lab['moveHost'] = async (host, to) => {
    await ip(['-n', host.ns, 'link', 'del', 'eth0']); // takes the peer end out of the old bridge too
    host.address = await plug(host.ns, 'eth0', segmentAbove(to));
    host.behind = to;
    return host.address;
  };

  const flushConntrack: Lab['flushConntrack'] = async (router) => {
    for (const r of router ? [router] : [...routers.values()]) {
      // conntrack -F exits non-zero on an already empty table with some versions: nothing to flush is fine.
      await run(r.ns, ['conntrack', '-F'], { allowFailure: true });
    }
  };

  async function teardown(): Promise<void> {
    if (tornDown) return;
    await Promise.all([...processes].map((p) => p.stop()));
    for (const ns of [...namespaces].reverse()) {
      // Anything still inside our namespaces was started by this lab (through run/spawn or an engine).
      const pids = (await execFileText('ip', ['netns', 'pids', ns], {})).stdout;
      for (const pid of pids.split('\n').map(Number).filter((n) => n > 0)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      await execFileText('ip', ['netns', 'del', ns], {});
    }
    tornDown = true;
    rmSync(tmp, { recursive: true, force: true });
    process.off('exit', teardownSync);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  return {
    prefix,
    internetNs,
    tempDir: tmp,
    addRouter,
    addHost,
    run,
    exec: (ns) => async (argv, options) => {
      const r = await run(ns, argv, { input: options?.input });
      return { stdout: r.stdout, stderr: r.stderr };
    },
    spawn: spawnIn,
    wireguardRunDir: wgDir,
    setRouterPublicAddress,
    moveHost,
    setRouterNat,
    flushConntrack,
    teardown,
  };
}
