/**
 * Tunnel throughput, measured so the ratios mean something on a shared machine: TCP
 * through WireGuard between two lab namespaces for
 *   bare    wireguard-go configured by hand with `wg` (interface wgb, port 51820),
 *   shared  Knit agents in shared-port mode, the default (interface ks, port 41641),
 *   proxy   Knit agents in proxy mode (WireGuard packets relayed by the agent).
 * Bare and shared run side by side (different interfaces and ports), so each round
 * transfers over both, in an order that rotates from round to round, and the ratio is
 * taken per round: load from other work on the machine hits both sides of a ratio alike.
 *
 * To find where shared mode's throughput goes, each round also transfers over the shared
 * tunnel with both agents paused (SIGSTOP: the agent's own CPU — stats polling, timers,
 * logging — taken out) and with the shared-port nftables table removed (the per-packet
 * rule cost taken out; restored right after), and reads the CPU time every process spent
 * during the shared transfer from /proc/PID/stat. Also the time from both agents started
 * to the first ping reply through the tunnel.
 *
 * Needs root, network namespaces and wireguard-go (the lab, test/lab/netlab.ts);
 * otherwise reports `skipped` with the reason. Every phase is bounded in time.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, encodeKey } from '../../shared/crypto/keys.js';
import { sharedPortTable } from '../../agent/net/shared-port.js';
import type { LabHost } from '../../test/lab/netlab.js';

/** One round: every variant once, in rotating order, on the same machine minute. */
export interface TunnelRound {
  loadAvg1: number;
  bareMbps: number;
  sharedMbps: number;
  /** Shared tunnel with both agents SIGSTOPped for the transfer. */
  sharedAgentsPausedMbps: number;
  /** Shared tunnel with the shared-port nftables table removed for the transfer. */
  sharedWithoutRulesMbps: number;
  sharedVsBare: number;
  /** CPU during the shared transfer, percent of one core: both agents, both wireguard-go, the coordinator. */
  cpuPct: { agents: number; wireguardGo: number; coordinator: number };
  /** Both wireguard-go processes during the bare transfer. */
  bareWireguardGoCpuPct: number;
  /**
   * After the paused and the rule-less transfer (each ~6 s without disco, so the path is
   * declared dead): ms until both sides were direct or lan again and a ping passed.
   */
  recoveryMs: number[];
}

export interface TunnelBenchResult {
  skipped?: string;
  seconds: number;
  rounds?: TunnelRound[];
  /** Medians over the rounds. */
  bareMbps?: number;
  sharedMbps?: number;
  proxyMbps?: number;
  /** Median of the per-round ratios, and their spread. */
  sharedVsBare?: number;
  sharedVsBareMin?: number;
  sharedVsBareMax?: number;
  sharedAgentsPausedVsBare?: number;
  sharedWithoutRulesVsBare?: number;
  /** Both agents' CPU during the shared transfers (median, percent of one core). */
  agentCpuPct?: number;
  proxyVsBare?: number;
  /** The tunnel interfaces' MTU (bare is set to WireGuard's 1420 by hand). */
  mtu?: { bare: number; shared: number };
  firstPingMs?: number;
  loadAvg?: { start: number; end: number };
}

const TCP_PORT = 5201;
// A TCP sink and a TCP source, run with `node -e` inside the namespaces.
const SINK = `const n=require('net');let b=0,t0=0;n.createServer(s=>{s.on('data',d=>{if(!t0)t0=Date.now();b+=d.length});s.on('end',()=>{console.log(JSON.stringify({bytes:b,ms:Date.now()-t0}));process.exit(0)})}).listen(${TCP_PORT},process.argv[1]);`;
const SOURCE = `const n=require('net');const buf=Buffer.alloc(65536,7);const s=n.connect(${TCP_PORT},process.argv[1],()=>{const end=Date.now()+Number(process.argv[2])*1000;const w=()=>{while(Date.now()<end){if(!s.write(buf))return s.once('drain',w)}s.end()};w()});s.on('error',e=>{console.error(e.message);process.exit(1)});`;
const MAX_ROUNDS = 20;
// /proc/PID/stat counts CPU in clock ticks; USER_HZ is 100 on Linux.
const TICKS_PER_S = 100;

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const r3 = (x: number) => Number(x.toFixed(3));

/** utime + stime of a process, in ticks (0 once it is gone). */
function cpuTicks(pid: number): number {
  try {
    // Fields after the command name "(…)": state is 3rd, utime 14th, stime 15th of the whole line.
    const rest = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop()!.split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return 0;
  }
}

/** PIDs of the processes named `comm` inside a lab namespace. */
function pidsNamed(ns: string, comm: string): number[] {
  const out: number[] = [];
  const listed = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
  for (const pid of listed.split('\n').map(Number).filter((n) => n > 0)) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) out.push(pid);
    } catch { /* gone */ }
  }
  return out;
}

export async function benchTunnel(options: { seconds?: number; rounds?: number } = {}): Promise<TunnelBenchResult> {
  const seconds = options.seconds ?? 5;
  const roundCount = options.rounds ?? 5;
  if (roundCount < 1 || roundCount > MAX_ROUNDS) throw new RangeError(`rounds must be 1..${MAX_ROUNDS}`);
  let netlab: typeof import('../../test/lab/netlab.js');
  try {
    netlab = await import('../../test/lab/netlab.js');
  } catch {
    return { skipped: 'the lab harness is not available (run from a checkout)', seconds };
  }
  const check = netlab.canRunLab();
  if (!check.ok) return { skipped: check.reason, seconds };
  const bin = join(process.cwd(), 'bin', 'knit.js');
  const dir = mkdtempSync(join(tmpdir(), 'knit-tbench-'));
  const lab = await netlab.createLab();
  const result: TunnelBenchResult = { seconds, loadAvg: { start: loadavg()[0]!, end: 0 } };
  try {
    // Knit runs on h1 → h2, bare wireguard-go on b1 → b2, all on the same lab internet. Not on
    // the same hosts: Knit's agents would take the bare tunnel's addresses as LAN candidates
    // and run their tunnel inside it (seen: endpoint 10.99.0.2, path "lan", half the throughput).
    const h1 = await lab.addHost('h1');
    const h2 = await lab.addHost('h2');
    const b1 = await lab.addHost('b1');
    const b2 = await lab.addHost('b2');
    const coord = await lab.addHost('coord');

    const throughput = async (dst: string, [from, to]: LabHost[] = [h1, h2]): Promise<number> => {
      const sink = lab.spawn(to!.ns, [process.execPath, '-e', SINK, dst]);
      await delay(300);
      await lab.run(from!.ns, [process.execPath, '-e', SOURCE, dst, String(seconds)], { timeoutMs: (seconds + 20) * 1000 });
      const end = Date.now() + 10_000;
      while (!/"bytes"/.test(sink.output()) && Date.now() < end) await delay(100);
      const m = /\{"bytes":(\d+),"ms":(\d+)\}/.exec(sink.output());
      await sink.stop();
      if (!m) throw new Error(`no throughput result: ${sink.output().slice(-300)}`);
      return Math.round((Number(m[1]) * 8) / (Number(m[2]) / 1000) / 1e6);
    };
    /** Throughput to `dst` and the CPU % of one core each group of processes used meanwhile. */
    const measured = async (dst: string, groups: number[][], hosts?: LabHost[]): Promise<{ mbps: number; cpuPct: number[] }> => {
      const before = groups.map((g) => g.reduce((s, p) => s + cpuTicks(p), 0));
      const t0 = performance.now();
      const mbps = await throughput(dst, hosts);
      const wallS = (performance.now() - t0) / 1000;
      const cpuPct = groups.map((g, i) => Number((((g.reduce((s, p) => s + cpuTicks(p), 0) - before[i]!) / TICKS_PER_S / wallS) * 100).toFixed(1)));
      return { mbps, cpuPct };
    };
    const pingOk = async (ns: string, ip: string) => (await lab.run(ns, ['ping', '-c', '1', '-W', '1', ip], { allowFailure: true })).code === 0;
    const mtuOf = async (h: LabHost, iface: string) => Number(/ mtu (\d+)/.exec((await lab.run(h.ns, ['ip', '-o', 'link', 'show', iface])).stdout)?.[1] ?? NaN);

    // bare wireguard-go, configured by hand with wg
    const k1 = generateKeyPair();
    const k2 = generateKeyPair();
    const bareWg: number[] = [];
    for (const [h, own, other, addr, peerAddr, peerIp] of [
      [b1, k1, k2, '10.99.0.1', '10.99.0.2', b2.address], [b2, k2, k1, '10.99.0.2', '10.99.0.1', b1.address],
    ] as const) {
      const wg = lab.spawn(h.ns, ['wireguard-go', 'wgb'], { WG_PROCESS_FOREGROUND: '1' });
      bareWg.push(wg.pid);
      const end = Date.now() + 5000;
      while ((await lab.run(h.ns, ['wg', 'show', 'wgb'], { allowFailure: true })).code !== 0 && Date.now() < end) await delay(50);
      const keyFile = join(dir, `${h.name}.key`);
      writeFileSync(keyFile, encodeKey(own.privateKey) + '\n', { mode: 0o600 });
      await lab.run(h.ns, ['wg', 'set', 'wgb', 'private-key', keyFile, 'listen-port', '51820', 'peer', encodeKey(other.publicKey), 'allowed-ips', `${peerAddr}/32`, 'endpoint', `${peerIp}:51820`]);
      await lab.run(h.ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'wgb']);
      await lab.run(h.ns, ['ip', 'link', 'set', 'wgb', 'mtu', '1420', 'up']);
    }
    const bareEnd = Date.now() + 15_000;
    while (!(await pingOk(b1.ns, '10.99.0.2')) && Date.now() < bareEnd);

    // Knit: a coordinator on the lab internet, then two agents per mode.
    const c = lab.spawn(coord.ns, [process.execPath, bin, 'coordinator', '--listen', `${coord.address}:8080`, '--stun', `${coord.address}:3478`, '--data', join(dir, 'coord')]);
    const cEnd = Date.now() + 15_000;
    while (!c.output().includes('coordinator ready') && Date.now() < cEnd) await delay(100);
    const token = (await lab.run(coord.ns, [process.execPath, bin, 'token', 'create', '--reusable', '--data', join(dir, 'coord')])).stdout.trim();
    const knitStatus = async (mode: 'shared' | 'proxy', h: LabHost) => {
      const r = await lab.run(h.ns, [process.execPath, bin, 'status', '--json', '--state', join(dir, `${mode}-${h.name}`)], { allowFailure: true });
      return r.code === 0 ? JSON.parse(r.stdout) as { self: { ips: string[] }; peers: Array<{ path: string }> } : undefined;
    };
    /**
     * After a variant that silenced disco for a transfer (agents paused, rules removed), waits
     * until both sides are direct (or lan: both hosts share the lab internet's segment) again and a ping passes; returns how long that took.
     */
    const recovered = async (ip2: string): Promise<number> => {
      const t0 = Date.now();
      const end = t0 + 60_000;
      for (;;) {
        const paths = await Promise.all([h1, h2].map(async (h) => (await knitStatus('shared', h))?.peers[0]?.path));
        if (paths.every((p) => p === 'direct' || p === 'lan') && await pingOk(h1.ns, ip2)) return Date.now() - t0;
        if (Date.now() > end) throw new Error(`shared: the path did not come back within 60 s (${paths.join(', ')})`);
        await delay(200);
      }
    };
    const startAgents = async (mode: 'shared' | 'proxy') => {
      const started = Date.now();
      const agents = [h1, h2].map((h) => lab.spawn(h.ns, [process.execPath, bin, 'up', '--token', token, '--engine', 'wireguard-go', '--iface', `k${mode[0]}`,
        '--state', join(dir, `${mode}-${h.name}`), '--hostname', `${h.name}-${mode}`, '--port-mode', mode, '--port', mode === 'shared' ? '41641' : '41651']));
      const status = (h: LabHost) => knitStatus(mode, h);
      const upEnd = Date.now() + 20_000;
      let ip2: string | undefined;
      while (!(ip2 = (await status(h2))?.self.ips[0])) {
        if (Date.now() > upEnd) throw new Error(`${mode}: the agent in h2 did not come up`);
        await delay(100);
      }
      const pEnd = Date.now() + 60_000;
      while (!(await pingOk(h1.ns, ip2))) if (Date.now() > pEnd) throw new Error(`${mode}: no ping through the tunnel`);
      const firstPingMs = Date.now() - started;
      // Throughput is about the direct path (both hosts are on the lab internet; mDNS may call it lan), not the relay.
      const dEnd = Date.now() + 30_000;
      while (!['direct', 'lan'].includes((await status(h1))?.peers[0]?.path ?? '') && Date.now() < dEnd) await delay(200);
      return { agents, ip2, firstPingMs };
    };

    const shared = await startAgents('shared');
    result.firstPingMs = shared.firstPingMs;
    result.mtu = { bare: await mtuOf(b1, 'wgb'), shared: await mtuOf(h1, 'ks') };
    const agentPids = shared.agents.map((a) => a.pid);
    const knitWg = [...pidsNamed(h1.ns, 'wireguard-go'), ...pidsNamed(h2.ns, 'wireguard-go')];
    const table = sharedPortTable('ks');
    const rounds: TunnelRound[] = [];
    for (let r = 0; r < roundCount; r++) {
      const round: Partial<TunnelRound> = { loadAvg1: Number(loadavg()[0]!.toFixed(2)), recoveryMs: [] };
      const variants: Array<() => Promise<void>> = [
        async () => {
          const m = await measured('10.99.0.2', [bareWg], [b1, b2]);
          round.bareMbps = m.mbps;
          round.bareWireguardGoCpuPct = m.cpuPct[0]!;
        },
        async () => {
          const m = await measured(shared.ip2, [agentPids, knitWg, [c.pid]]);
          round.sharedMbps = m.mbps;
          round.cpuPct = { agents: m.cpuPct[0]!, wireguardGo: m.cpuPct[1]!, coordinator: m.cpuPct[2]! };
        },
        async () => {
          for (const p of agentPids) process.kill(p, 'SIGSTOP');
          try {
            round.sharedAgentsPausedMbps = await throughput(shared.ip2);
          } finally {
            for (const p of agentPids) process.kill(p, 'SIGCONT');
          }
          round.recoveryMs!.push(await recovered(shared.ip2));
        },
        async () => {
          const saved = await Promise.all([h1, h2].map(async (h) => (await lab.run(h.ns, ['nft', 'list', 'table', 'inet', table])).stdout));
          await Promise.all([h1, h2].map((h) => lab.run(h.ns, ['nft', 'delete', 'table', 'inet', table])));
          try {
            round.sharedWithoutRulesMbps = await throughput(shared.ip2);
          } finally {
            await Promise.all([h1, h2].map((h, i) => lab.run(h.ns, ['nft', '-f', '-'], { input: saved[i] })));
          }
          round.recoveryMs!.push(await recovered(shared.ip2));
        },
      ];
      for (let i = 0; i < variants.length; i++) await variants[(i + r) % variants.length]!();
      round.sharedVsBare = r3(round.sharedMbps! / round.bareMbps!);
      rounds.push(round as TunnelRound);
    }
    for (const a of shared.agents) await a.stop();

    const proxy = await startAgents('proxy');
    const proxyMbps = [await throughput(proxy.ip2), await throughput(proxy.ip2)];
    for (const a of proxy.agents) await a.stop();

    const bare = median(rounds.map((x) => x.bareMbps));
    const ratios = rounds.map((x) => x.sharedVsBare);
    Object.assign(result, {
      rounds,
      bareMbps: Math.round(bare),
      sharedMbps: Math.round(median(rounds.map((x) => x.sharedMbps))),
      proxyMbps: Math.round(median(proxyMbps)),
      sharedVsBare: r3(median(ratios)),
      sharedVsBareMin: Math.min(...ratios),
      sharedVsBareMax: Math.max(...ratios),
      sharedAgentsPausedVsBare: r3(median(rounds.map((x) => x.sharedAgentsPausedMbps / x.bareMbps))),
      sharedWithoutRulesVsBare: r3(median(rounds.map((x) => x.sharedWithoutRulesMbps / x.bareMbps))),
      agentCpuPct: median(rounds.map((x) => x.cpuPct.agents)),
      proxyVsBare: r3(median(proxyMbps) / bare),
    });
    result.loadAvg!.end = loadavg()[0]!;
    return result;
  } finally {
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}
