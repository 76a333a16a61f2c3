/**
 * `knit bench connect`: how soon a pair of new nodes can talk, per NAT pair, in the lab
 * (test/lab/netlab.ts: namespaces, nftables NAT, wireguard-go), with Nebula beside it.
 *
 * One trial = a fresh start: a coordinator with its defaults already running (only the
 * listen, STUN and data addresses the lab needs), conntrack flushed on every router, both
 * `knit up` started in the same instant with the production flags. Measured from that
 * instant: the first ping reply through the tunnel (one long-running `ping -i 0.02`, so the
 * resolution is 20 ms; restarted while the mesh route doesn't exist yet), the first
 * WireGuard handshake (status), and the final path (status polled every 100 ms until the
 * pair is `direct`/`lan`, or the pair's window closes). Each Knit trial is followed by a
 * Nebula trial on the same hosts (lighthouse + relay on the coordinator's host), measured
 * the same way. Restarts: an already-joined pair, one agent restarted, time from its
 * process start to its first ping reply.
 *
 * Where the time goes: every Knit trial keeps a timeline from the agents' JSON logs (join,
 * engine up, welcome, STUN, first apply with the peer, first path, direct), so slow starts
 * can be told apart from typical ones. Bounded: ≤ 50 trials per pair, each phase with a
 * deadline. Skips with a reason when the lab can't run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { callAgent } from '../../agent/api/client.js';
import { socketPath } from '../../agent/state.js';
import type { StatusDocument } from '../../agent/status.js';
import type { Lab, LabHost, LabProcess } from '../../test/lab/netlab.js';
import { budget, type Budget } from './budget.js';
import { nebulaMesh, nebulaUnavailable, type NebulaMesh } from './nebula-lab.js';

export const CONNECT_PAIRS = ['cone-cone', 'same-lan', 'cone-symmetric', 'double-nat-cone', 'public-cone'] as const;
export type ConnectPairName = (typeof CONNECT_PAIRS)[number];

/** Which lab hosts a pair uses (pings go from `from` to `to`) and how long it may take to reach its best path. */
const PAIR_SHAPES: Record<ConnectPairName, { from: string; to: string; best: string; windowMs: number }> = {
  'cone-cone': { from: 'a', to: 'b', best: 'direct', windowMs: 20_000 },
  'same-lan': { from: 'a', to: 'c', best: 'lan', windowMs: 20_000 },
  // Hard NAT: birthday probing starts after the first burst and an attempt takes ~5 s; the
  // simulator's p95 is 8.5–24 s (docs/disco.md), so 45 s covers the documented window.
  'cone-symmetric': { from: 'b', to: 's', best: 'direct', windowMs: 45_000 },
  'double-nat-cone': { from: 'd', to: 'b', best: 'direct', windowMs: 20_000 },
  'public-cone': { from: 'p', to: 'a', best: 'direct', windowMs: 20_000 },
};

const FIRST_PING_DEADLINE_MS = 30_000;
const PING_INTERVAL_S = 0.02;
const PING_RETRY_MS = 50;
const STATUS_POLL_MS = 100;
const SLOW_START_MS = 2_000;

/** Milliseconds from the trial's start to each step in one agent's log; absent = not seen. */
export interface StartTimeline {
  joined?: number;
  engineStarted?: number;
  welcome?: number;
  stun?: number;
  natType?: string;
  peerApplied?: number;
  firstPath?: number;
  firstPathKind?: string;
  direct?: number;
  up?: number;
}

export interface KnitTrial {
  firstPingMs?: number;
  firstHandshakeMs?: number;
  finalPath: string;
  finalPathMs?: number;
  loadAvg1: number;
  /** Why the trial could not run to the end. */
  error?: string;
  from: StartTimeline;
  to: StartTimeline;
}

export interface Summary { n: number; ok: number; p50Ms: number | null; p95Ms: number | null; maxMs: number | null }

export interface ConnectPairResult {
  pair: ConnectPairName;
  runs: number;
  knit: {
    firstPing: Summary;
    firstHandshake: Summary;
    finalPath: Summary;
    finalPaths: Record<string, number>;
    directPct: number;
    /** Medians of the steps of a start, from the agents' logs (the pinging side). */
    stepsP50Ms: Record<string, number | null>;
    trials: KnitTrial[];
  };
  nebula?: { firstPing: Summary; firstPingMs: Array<number | null> };
  /** Knit's first-ping p50 / p95 over Nebula's (lower is better for Knit). */
  ratioP50?: number | null;
  ratioP95?: number | null;
}

export interface RestartResult {
  pair: ConnectPairName;
  knit: Summary & { firstPingMs: Array<number | null> };
  nebula?: Summary & { firstPingMs: Array<number | null> };
}

export interface ConnectBenchResult {
  skipped?: string;
  nebulaSkipped?: string;
  runs: number;
  pairs: ConnectPairResult[];
  restarts?: RestartResult;
  /** Knit trials whose first ping took over 2 s, with where the time went. */
  slowStarts: Array<{ pair: ConnectPairName; trial: number } & KnitTrial>;
  loadAvg: { start: number; end: number };
}

export function summarize(values: Array<number | undefined | null>): Summary {
  const ok = values.filter((v): v is number => typeof v === 'number').sort((a, b) => a - b);
  const at = (p: number) => (ok.length ? ok[Math.min(ok.length - 1, Math.ceil((p / 100) * ok.length) - 1)]! : null);
  return { n: values.length, ok: ok.length, p50Ms: at(50), p95Ms: at(95), maxMs: ok.at(-1) ?? null };
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadAvg1 = () => Number(loadavg()[0]!.toFixed(2));

/**
 * The first ping reply from `ns` to `ip`, in ms since `t0` (ping's own -D timestamp), or
 * undefined by `deadline`. ping exits at once while the route doesn't exist; it is restarted.
 */
async function firstPingReply(lab: Lab, ns: string, ip: string, t0: number, deadline: number): Promise<number | undefined> {
  while (Date.now() < deadline) {
    const seconds = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
    const ping = lab.spawn(ns, ['ping', '-n', '-D', '-i', String(PING_INTERVAL_S), '-W', '1', '-w', String(seconds), '-c', String(Math.ceil(seconds / PING_INTERVAL_S)), ip]);
    const reply = await new Promise<number | undefined>((resolve) => {
      ping.onLine((line) => {
        const m = /^\[(\d+\.\d+)\].*bytes from/.exec(line);
        if (m) resolve(Math.round(Number(m[1]) * 1000 - t0));
      });
      ping.child.once('exit', () => resolve(undefined));
    });
    await ping.stop();
    if (reply !== undefined) return reply;
    await delay(PING_RETRY_MS);
  }
  return undefined;
}

async function agentStatus(state: string): Promise<StatusDocument | undefined> {
  try {
    return (await callAgent(socketPath(state), 'GET', '/v1/status', 2_000)) as StatusDocument;
  } catch {
    return undefined;
  }
}

/** Collects a start's steps from one agent's output (JSON log lines carry their own time). */
function watchTimeline(proc: LabProcess, t0: number): StartTimeline {
  const tl: StartTimeline = {};
  const first = (key: keyof StartTimeline, at: number) => { if (tl[key] === undefined) (tl as Record<string, unknown>)[key] = at; };
  proc.onLine((line) => {
    const arrived = Date.now() - t0;
    if (line.startsWith('knit: joined as')) first('joined', arrived);
    else if (line.startsWith('knit: up:')) first('up', arrived);
    if (!line.startsWith('{')) return;
    let j: { t?: string; msg?: string; status?: string; to?: string; nat?: string; peersAdded?: number };
    try { j = JSON.parse(line); } catch { return; }
    const at = j.t ? Date.parse(j.t) - t0 : arrived;
    if (j.msg === 'wireguard-go started') first('engineStarted', at);
    else if (j.msg === 'coordinator connection' && j.status === 'connected') first('welcome', at);
    else if (j.msg === 'endpoints discovered') { first('stun', at); tl.natType ??= j.nat; }
    else if (j.msg === 'engine applied' && (j.peersAdded ?? 0) > 0) first('peerApplied', at);
    else if (j.msg === 'path changed') {
      if (tl.firstPath === undefined) { tl.firstPath = at; tl.firstPathKind = j.to; }
      if (j.to === 'direct' || j.to === 'lan') first('direct', at);
    }
  });
  return tl;
}

interface Topology { hosts: Map<string, LabHost>; coord: LabHost }

async function buildTopology(lab: Lab): Promise<Topology> {
  const coord = await lab.addHost('coord');
  const cone1 = await lab.addRouter('cone1', { nat: 'cone' });
  const cone2 = await lab.addRouter('cone2', { nat: 'cone' });
  const sym = await lab.addRouter('sym1', { nat: 'symmetric' });
  const cgn = await lab.addRouter('cgn', { nat: 'cone' });
  const home = await lab.addRouter('home', { nat: 'cone', behind: cgn });
  const hosts = new Map<string, LabHost>();
  for (const [name, behind] of [['a', cone1], ['b', cone2], ['c', cone1], ['s', sym], ['d', home], ['p', undefined]] as const) {
    hosts.set(name, await lab.addHost(name, { behind }));
  }
  return { hosts, coord };
}

/** Runs `fn` with a fresh coordinator (defaults, fresh data dir) and a reusable token. */
async function withCoordinator<T>(lab: Lab, bin: string, coord: LabHost, dataDir: string, fn: (token: string) => Promise<T>): Promise<T> {
  const c = lab.spawn(coord.ns, [process.execPath, bin, 'coordinator', '--listen', `${coord.address}:8080`, '--stun', `${coord.address}:3478`, '--data', dataDir]);
  try {
    const end = Date.now() + 15_000;
    while (!c.output().includes('coordinator ready')) {
      if (Date.now() > end || c.exited()) throw new Error('the coordinator did not start');
      await delay(50);
    }
    const token = (await lab.run(coord.ns, [process.execPath, bin, 'token', 'create', '--reusable', '--data', dataDir])).stdout.trim();
    return await fn(token);
  } finally {
    await c.stop();
  }
}

interface Ctx { lab: Lab; bin: string; dir: string; topo: Topology; trial: number }

function startAgent(ctx: Ctx, host: LabHost, state: string, token?: string): LabProcess {
  return ctx.lab.spawn(host.ns, [process.execPath, ctx.bin, 'up', ...(token ? ['--token', token] : []), '--engine', 'wireguard-go', '--iface', 'knit0',
    '--state', state, '--hostname', host.name], { KNIT_LOG_LEVEL: 'debug' });
}

async function knitTrial(ctx: Ctx, pair: ConnectPairName): Promise<KnitTrial> {
  const shape = PAIR_SHAPES[pair];
  const [from, to] = [ctx.topo.hosts.get(shape.from)!, ctx.topo.hosts.get(shape.to)!];
  const base = join(ctx.dir, `t${ctx.trial++}`);
  await ctx.lab.flushConntrack();
  return withCoordinator(ctx.lab, ctx.bin, ctx.topo.coord, join(base, 'coord'), async (token) => {
    const t0 = Date.now();
    const procs = [startAgent(ctx, from, join(base, 'from'), token), startAgent(ctx, to, join(base, 'to'), token)];
    const [tlFrom, tlTo] = procs.map((p) => watchTimeline(p, t0)) as [StartTimeline, StartTimeline];
    try {
      const trial: KnitTrial = { finalPath: 'none', loadAvg1: loadAvg1(), from: tlFrom, to: tlTo };
      const joinEnd = t0 + FIRST_PING_DEADLINE_MS;
      let ip: string | undefined;
      while (!(ip = /joined as \S+, mesh address ([0-9.]+)/.exec(procs[1]!.output())?.[1]) && Date.now() < joinEnd) await delay(20);
      if (!ip) return trial;
      trial.firstPingMs = await firstPingReply(ctx.lab, from.ns, ip, t0, t0 + FIRST_PING_DEADLINE_MS);
      const windowEnd = t0 + shape.windowMs;
      let since = 0;
      for (;;) {
        const peer = (await agentStatus(join(base, 'from')))?.peers.find((p) => p.name === to.name);
        if (peer) {
          if (peer.lastHandshake > 0) trial.firstHandshakeMs ??= peer.lastHandshake - t0;
          if (peer.path !== trial.finalPath) { trial.finalPath = peer.path; since = Date.now() - t0; }
          // The handshake's time is read back from status, whose engine stats lag a little.
          if (peer.path === shape.best && peer.lastHandshake > 0) break;
        }
        if (Date.now() > windowEnd) break;
        await delay(STATUS_POLL_MS);
      }
      if (trial.finalPath !== 'none') trial.finalPathMs = since;
      return trial;
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
  });
}

async function nebulaTrial(ctx: Ctx, neb: NebulaMesh, pair: ConnectPairName): Promise<number | undefined> {
  const shape = PAIR_SHAPES[pair];
  await ctx.lab.flushConntrack();
  const lighthouse = neb.start('lighthouse');
  try {
    await untilOutput(lighthouse, /Nebula interface is active/, 15_000);
    const t0 = Date.now();
    const procs = [neb.start(shape.from), neb.start(shape.to)];
    try {
      return await firstPingReply(ctx.lab, ctx.topo.hosts.get(shape.from)!.ns, neb.ipOf(shape.to), t0, t0 + FIRST_PING_DEADLINE_MS);
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
  } finally {
    await lighthouse.stop();
  }
}

async function untilOutput(proc: LabProcess, re: RegExp, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!re.test(proc.output())) {
    if (Date.now() > end || proc.exited()) throw new Error(`timed out waiting for ${re}: ${proc.output().slice(-500)}`);
    await delay(50);
  }
}

/** An already-joined pair; `from` is restarted `runs` times, each timed to its first ping reply. */
async function knitRestarts(ctx: Ctx, pair: ConnectPairName, runs: number): Promise<Array<number | null>> {
  const shape = PAIR_SHAPES[pair];
  const [from, to] = [ctx.topo.hosts.get(shape.from)!, ctx.topo.hosts.get(shape.to)!];
  const base = join(ctx.dir, 'restart');
  await ctx.lab.flushConntrack();
  return withCoordinator(ctx.lab, ctx.bin, ctx.topo.coord, join(base, 'coord'), async (token) => {
    const peerProc = startAgent(ctx, to, join(base, 'to'), token);
    let proc = startAgent(ctx, from, join(base, 'from'), token);
    const times: Array<number | null> = [];
    try {
      await untilOutput(peerProc, /joined as \S+, mesh address ([0-9.]+)/, FIRST_PING_DEADLINE_MS);
      const ip = /joined as \S+, mesh address ([0-9.]+)/.exec(peerProc.output())![1]!;
      for (let i = 0; i <= runs; i++) {
        // Run 0 is the pair's first start; each later one restarts `from` once the path is settled.
        const t0 = Date.now();
        if (i > 0) proc = startAgent(ctx, from, join(base, 'from'));
        const ms = await firstPingReply(ctx.lab, from.ns, ip, t0, t0 + FIRST_PING_DEADLINE_MS);
        if (i > 0) times.push(ms ?? null);
        const end = Date.now() + shape.windowMs;
        while ((await agentStatus(join(base, 'from')))?.peers.find((p) => p.name === to.name)?.path !== shape.best && Date.now() < end) await delay(STATUS_POLL_MS);
        await proc.stop();
      }
      return times;
    } finally {
      await Promise.all([proc.stop(), peerProc.stop()]);
    }
  });
}

async function nebulaRestarts(ctx: Ctx, neb: NebulaMesh, pair: ConnectPairName, runs: number): Promise<Array<number | null>> {
  const shape = PAIR_SHAPES[pair];
  const fromNs = ctx.topo.hosts.get(shape.from)!.ns;
  await ctx.lab.flushConntrack();
  const lighthouse = neb.start('lighthouse');
  const peer = neb.start(shape.to);
  let proc: LabProcess | undefined;
  const times: Array<number | null> = [];
  try {
    await untilOutput(lighthouse, /Nebula interface is active/, 15_000);
    for (let i = 0; i <= runs; i++) {
      const t0 = Date.now();
      proc = neb.start(shape.from);
      const ms = await firstPingReply(ctx.lab, fromNs, neb.ipOf(shape.to), t0, t0 + FIRST_PING_DEADLINE_MS);
      if (i > 0) times.push(ms ?? null);
      // Let punching settle as Knit's restarts wait for the direct path.
      await delay(3_000);
      await proc.stop();
    }
    return times;
  } finally {
    await Promise.all([proc?.stop(), peer.stop(), lighthouse.stop()]);
  }
}

function median(values: Array<number | undefined>): number | null {
  return summarize(values).p50Ms;
}

function pairResult(pair: ConnectPairName, trials: KnitTrial[], nebula: Array<number | undefined> | undefined): ConnectPairResult {
  const finalPaths: Record<string, number> = {};
  for (const t of trials) finalPaths[t.finalPath] = (finalPaths[t.finalPath] ?? 0) + 1;
  const best = PAIR_SHAPES[pair].best;
  const firstPing = summarize(trials.map((t) => t.firstPingMs));
  const steps = ['joined', 'engineStarted', 'welcome', 'stun', 'peerApplied', 'firstPath', 'direct', 'up'] as const;
  const stepsP50Ms: Record<string, number | null> = {};
  for (const s of steps) stepsP50Ms[s] = median(trials.map((t) => t.from[s]));
  stepsP50Ms.firstHandshake = median(trials.map((t) => t.firstHandshakeMs));
  stepsP50Ms.firstPing = firstPing.p50Ms;
  const result: ConnectPairResult = {
    pair, runs: trials.length,
    knit: {
      firstPing, firstHandshake: summarize(trials.map((t) => t.firstHandshakeMs)), finalPath: summarize(trials.map((t) => t.finalPathMs)),
      finalPaths, directPct: Number((((finalPaths[best] ?? 0) / Math.max(1, trials.length)) * 100).toFixed(1)), stepsP50Ms, trials,
    },
  };
  if (nebula) {
    const n = summarize(nebula);
    result.nebula = { firstPing: n, firstPingMs: nebula.map((v) => v ?? null) };
    const ratio = (k: number | null, nb: number | null) => (k !== null && nb ? Number((k / nb).toFixed(2)) : null);
    result.ratioP50 = ratio(firstPing.p50Ms, n.p50Ms);
    result.ratioP95 = ratio(firstPing.p95Ms, n.p95Ms);
  }
  return result;
}

export interface ConnectBenchOptions {
  runs?: number;
  pairs?: ConnectPairName[];
  /** Restarts of the first pair's `from` agent (0 = none). */
  restarts?: number;
  nebula?: boolean;
  /** Progress lines (stderr in the CLI). */
  progress?: (line: string) => void;
}

export async function benchConnect(options: ConnectBenchOptions = {}): Promise<ConnectBenchResult> {
  const runs = options.runs ?? 10;
  if (runs < 1 || runs > 50) throw new RangeError('runs must be 1..50');
  const pairs = options.pairs ?? [...CONNECT_PAIRS];
  const restarts = options.restarts ?? 6;
  const progress = options.progress ?? (() => {});
  const result: ConnectBenchResult = { runs, pairs: [], slowStarts: [], loadAvg: { start: loadAvg1(), end: 0 } };
  let netlab: typeof import('../../test/lab/netlab.js');
  try {
    netlab = await import('../../test/lab/netlab.js');
  } catch {
    return { ...result, skipped: 'the lab harness is not available (run from a checkout)' };
  }
  const check = netlab.canRunLab();
  if (!check.ok) return { ...result, skipped: check.reason };
  const nebulaSkip = options.nebula === false ? 'not asked for' : nebulaUnavailable();
  if (nebulaSkip) result.nebulaSkipped = nebulaSkip;
  const dir = mkdtempSync(join(tmpdir(), 'knit-cbench-'));
  const lab = await netlab.createLab();
  try {
    const topo = await buildTopology(lab);
    const ctx: Ctx = { lab, bin: join(process.cwd(), 'bin', 'knit.js'), dir, topo, trial: 0 };
    const neb = nebulaSkip ? undefined : nebulaMesh(lab, join(dir, 'nebula'), topo.coord, [...topo.hosts.values()]);
    for (const pair of pairs) {
      const trials: KnitTrial[] = [];
      const nebula: Array<number | undefined> = [];
      for (let i = 0; i < runs; i++) {
        // A trial that breaks (a coordinator that never came up, say) is a start without a ping, not the end of the run.
        const t = await knitTrial(ctx, pair).catch((err: Error): KnitTrial => ({ finalPath: 'none', loadAvg1: loadAvg1(), from: {}, to: {}, error: err.message }));
        trials.push(t);
        if (t.firstPingMs === undefined || t.firstPingMs > SLOW_START_MS) result.slowStarts.push({ pair, trial: i, ...t });
        if (neb) nebula.push(await nebulaTrial(ctx, neb, pair).catch(() => undefined));
        progress(`connect ${pair} ${i + 1}/${runs}: knit first ping ${t.firstPingMs ?? '—'} ms, ${t.finalPath} at ${t.finalPathMs ?? '—'} ms${neb ? `; nebula first ping ${nebula.at(-1) ?? '—'} ms` : ''} (load ${t.loadAvg1})`);
      }
      result.pairs.push(pairResult(pair, trials, neb ? nebula : undefined));
    }
    if (restarts > 0) {
      const pair = pairs[0]!;
      const knit = await knitRestarts(ctx, pair, restarts);
      result.restarts = { pair, knit: { ...summarize(knit), firstPingMs: knit } };
      if (neb) {
        const n = await nebulaRestarts(ctx, neb, pair, restarts);
        result.restarts.nebula = { ...summarize(n), firstPingMs: n };
      }
      progress(`connect restarts (${pair}): knit ${knit.join(', ')} ms${result.restarts.nebula ? `; nebula ${result.restarts.nebula.firstPingMs.join(', ')} ms` : ''}`);
    }
    result.loadAvg.end = loadAvg1();
    return result;
  } finally {
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The issue's budgets for a run: first ping p50 ≤ 1 s and p95 ≤ 3 s per pair; ≥ 99% of
 * starts end on the pair's best path (every pair of the matrix can go direct, the hard
 * NAT within its window); a restart pings within 0.5 s.
 */
export function connectBudgets(r: ConnectBenchResult): Budget[] {
  const budgets: Budget[] = [];
  let starts = 0;
  let notBest = 0;
  for (const p of r.pairs) {
    budgets.push(budget(`connect ${p.pair}: start → first ping, p50 (ms)`, p.knit.firstPing.p50Ms ?? Infinity, 1000));
    budgets.push(budget(`connect ${p.pair}: start → first ping, p95 (ms)`, p.knit.firstPing.ok < p.runs ? Infinity : p.knit.firstPing.p95Ms ?? Infinity, 3000));
    starts += p.runs;
    notBest += p.runs - (p.knit.finalPaths[PAIR_SHAPES[p.pair].best] ?? 0);
  }
  if (starts > 0) budgets.push(budget('connect: starts that could go direct and did not (%)', Number(((notBest / starts) * 100).toFixed(1)), 1));
  if (r.restarts) budgets.push(budget(`connect ${r.restarts.pair}: restart → first ping, p95 (ms)`, r.restarts.knit.ok < r.restarts.knit.n ? Infinity : r.restarts.knit.p95Ms ?? Infinity, 500));
  return budgets;
}
