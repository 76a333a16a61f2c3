/**
 * Coordinator benchmark: one coordinator process — or several replicas
 * sharing one PostgreSQL database — holding N connected light clients on
 * loopback (real joins, real WebSockets, real proofs of key possession; see
 * light-client.ts). Three kinds of process, so that what is measured is the
 * coordinator alone:
 *
 *   driver (this file)  ── IPC ──  coordinator-child.ts × 1 (SQLite) or × R (replicas)
 *                       ── IPC ──  load-worker.ts × 1–2   the light clients
 *
 * With replicas (`benchReplicas`) the driver also starts a throwaway
 * PostgreSQL server (postgres-server.ts, durable settings: a commit costs an
 * fsync, as SQLite's does in the single-process runs) with one database, and
 * the load generators deal the agents out round-robin over the replicas.
 *
 * Phases, each bounded in time:
 *   1. join      every client POSTs /v1/join (at its replica) with one
 *                reusable token                                         → joinPerSec
 *   2. connect   WebSocket + hello + proof, until each holds a map      → connectPerSec
 *   3. memory    coordinator RSS and heap after GC, at N/2 and at N
 *                connected; the growth per agent in between             → bytesPerAgent
 *   4. idle      coordinator CPU over a quiet window (pings included)   → idleCpuPct
 *   5. fan-out   one client reports new endpoints; every other client
 *                timestamps the delta carrying it (CLOCK_MONOTONIC is
 *                shared by all processes); changes one at a time, each
 *                after the previous one's window closed               → fanoutP50Ms, fanoutP99Ms
 *                and the coordinator's own time per change              → perChangeMs
 *                With replicas the reporters take turns over the
 *                replicas, and every receiver on every replica counts;
 *                receivers on another replica than the reporter's are
 *                also counted apart                                      → crossReplicaFanoutP50Ms
 *   6. storm     every client drops its socket at once and reconnects
 *                (to the same replica) with its last version; time until
 *                all hold the current version — with replicas, the one
 *                version every replica must end at                      → reconnectStormMs, versionsAgree
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IpcClient } from './ipc.js';
import { monoMs } from './light-client.js';
import type { ClusterFigures, CoordinatorBenchResult, ReplicaBenchResult } from './coordinator-results.js';
import { startPostgresServer, type PostgresServerOptions, type RunningPostgres } from './postgres-server.js';

export interface CoordinatorBenchOptions {
  agents: number;
  /** Endpoint changes timed in the fan-out phase. */
  changes?: number;
  idleWindowMs?: number;
}

export interface ReplicaBenchOptions extends CoordinatorBenchOptions {
  /** Coordinator replicas sharing one PostgreSQL database (2–8). */
  replicas: number;
  /** Hooks for the throwaway PostgreSQL server: tests register its password and save its log. */
  postgres?: Pick<PostgresServerOptions, 'onSecret' | 'onLog'>;
}

interface VersionsReport {
  atVersion: number;
  lastAt: number;
  snapshotBytes: number;
  fullClientPeers: number;
  fullClientVersion: number;
  fullClientOnline: number;
  problems: Record<string, number>;
  problemSamples: string[];
}
interface CoordinatorState {
  version: number; online: number; nodes: number; pending: boolean;
  flushCount: number; flushSumS: number; snapshotsEncoded: number; snapshotsSent: number; deltasSent: number;
}
interface Memory { rss: number; heapUsed: number; external: number }
interface Watched { times: number[]; replicas: number[]; bytes: number }

/** Above this many agents the clients are split over two load-generator processes. */
const AGENTS_PER_WORKER = 5000;
const MAX_AGENTS = 20_000;
/** Replicas on one machine: each is a process with a pool of 10 connections plus one LISTEN (the server allows 200). */
const MAX_REPLICAS = 8;
/** The idle-CPU window: the coordinator pings every 15 s (production's interval), so a third of a ping round falls in it on average. */
const IDLE_WINDOW_MS = 5000;
const JOIN_CONCURRENCY = 32;
/** Handshakes in flight per load generator: each ends with a snapshot of ~290 bytes per node (~3 MB at 10,000). */
const CONNECT_CONCURRENCY = 16;
const PHASE_DEADLINE_MS = 150_000;
/** How long the driver waits for one change to reach every peer before counting the rest as missed. */
const CHANGE_DEADLINE_MS = 10_000;
/** The variable that carries a replica's store URL (with its password) to coordinator-child.ts. */
const STORE_ENV = 'KNIT_BENCH_STORE';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const sum = (xs: number[]) => xs.reduce((a, x) => a + x, 0);
const byNumber = (a: number, b: number) => a - b;

/** Loopback source addresses the load generators may bind: 127.0.w.1–8 where the OS has all of 127/8 (Linux), else 127.0.0.1. */
async function sourceAddresses(worker: number): Promise<string[]> {
  const probe = `127.0.${worker + 1}.1`;
  const ok = await new Promise<boolean>((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(0, probe, () => s.close(() => resolve(true)));
  });
  return ok ? Array.from({ length: 8 }, (_, i) => `127.0.${worker + 1}.${i + 1}`) : ['127.0.0.1'];
}

/**
 * Forks a bench process. Its environment is ours without STORE_ENV (a value left in the
 * shell must never point a single-process run at a real database), plus `env`.
 */
function spawn(name: string, file: string, config: unknown, execArgv: string[], env: Record<string, string> = {}): IpcClient {
  const base = { ...process.env };
  delete base[STORE_ENV];
  const child = fork(fileURLToPath(new URL(file, import.meta.url)), [JSON.stringify(config)], {
    execArgv, env: { ...base, ...env }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  return new IpcClient(name, child);
}

/** KNIT_BENCH_PROF=DIR: each coordinator under test writes a CPU profile there (for finding what to fix). */
function profiling(): string[] {
  const dir = process.env.KNIT_BENCH_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

const states = (coords: IpcClient[]) => Promise.all(coords.map((c) => c.call<CoordinatorState>('state')));

/**
 * Polls the coordinators until nothing is pending, every one is at the same version, and
 * versions and sessions have held still for 300 ms.
 */
async function settle(coords: IpcClient[], deadlineMs = 20_000): Promise<CoordinatorState[]> {
  const end = Date.now() + deadlineMs;
  let last = await states(coords);
  let stableSince = Date.now();
  while (Date.now() < end) {
    await sleep(100);
    const s = await states(coords);
    if (s.some((x, i) => x.version !== last[i]!.version || x.pending || x.online !== last[i]!.online || x.version !== s[0]!.version)) stableSince = Date.now();
    last = s;
    if (Date.now() - stableSince >= 300) break;
  }
  return last;
}

/** The coordinators under test: one, or every replica (in order), with their URLs and an admin token. */
interface Cluster {
  coords: IpcClient[];
  urls: string[];
  admin: string;
}

/** What the phases measured, before it is shaped into a result. Arrays are per coordinator, in order. */
interface Measured {
  connected: number;
  loadWorkers: number;
  joinPerSec: number;
  connectPerSec: number;
  empty: Memory[];
  half: { mapped: number; memory: Memory[]; online: number[] };
  loaded: Memory[];
  online: number[];
  idleCpuPct: number[];
  /** Sorted: every (change, receiver), and split by whether the receiver is on the reporter's replica. */
  latencies: number[];
  sameReplica: number[];
  crossReplica: number[];
  lastPeer: number[];
  missed: number;
  deltaBytes: number;
  perChangeMs: number;
  after: CoordinatorState[];
  held: VersionsReport[];
  heldCount: number;
  stormMs: number;
}

/** Runs phases 1–6 against a cluster that is up; the load generators live and die in here. */
async function measure(cluster: Cluster, n: number, changes: number, idleWindowMs: number): Promise<Measured> {
  const { coords, urls, admin } = cluster;
  const workers: IpcClient[] = [];
  try {
    const empty = await Promise.all(coords.map((c) => c.call<Memory>('memory')));
    // One reusable join token, made through the (first) coordinator's own admin API.
    const res = await fetch(`${urls[0]}/v1/admin/tokens`, {
      method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ reusable: true }),
    });
    if (!res.ok) throw new Error(`token create failed: HTTP ${res.status} ${await res.text()}`);
    const token = ((await res.json()) as { token: string }).token;

    const workerCount = Math.ceil(n / AGENTS_PER_WORKER) > 1 || n >= 2000 ? 2 : 1;
    const sizes = Array.from({ length: workerCount }, (_, w) => Math.floor(n / workerCount) + (w < n % workerCount ? 1 : 0));
    let first = 0;
    for (const [w, count] of sizes.entries()) {
      workers.push(spawn(`load-worker-${w}`, './load-worker.js', { urls, token, first, count, sourceAddresses: await sourceAddresses(w) }, []));
      first += count;
    }
    await Promise.all(workers.map((w) => w.ready));

    // 1. join
    let t0 = monoMs();
    const joins = await Promise.all(workers.map((w) => w.call<{ joined: number }>('join', { concurrency: JOIN_CONCURRENCY }, PHASE_DEADLINE_MS)));
    const joinMs = monoMs() - t0;
    const joined = joins.reduce((a, j) => a + j.joined, 0);

    // 2. connect, in two halves with the coordinators' memory measured after each (3.): the
    // second half's growth is the cost per agent, without the fixed costs that come with any
    // load (V8's young generation and code, SQLite's page cache) that the first half pays for.
    const connectHalf = async (fraction: number) => {
      const t = monoMs();
      const r = await Promise.all(workers.map((w, i) => w.call<{ mapped: number }>('connect',
        { concurrency: CONNECT_CONCURRENCY, deadlineMs: PHASE_DEADLINE_MS, upTo: Math.ceil(sizes[i]! * fraction) }, PHASE_DEADLINE_MS + 10_000)));
      const ms = monoMs() - t;
      const settled = await settle(coords);
      return {
        ms, mapped: r.reduce((a, c) => a + c.mapped, 0), online: settled.map((s) => s.online),
        memory: await Promise.all(coords.map((c) => c.call<Memory>('memory'))),
      };
    };
    const half = await connectHalf(0.5);
    const all = await connectHalf(1);
    const connected = all.mapped;

    // 4. idle CPU
    const cpu0 = await Promise.all(coords.map((c) => c.call<NodeJS.CpuUsage>('cpu')));
    const idle0 = monoMs();
    await sleep(idleWindowMs);
    const cpu1 = await Promise.all(coords.map((c) => c.call<NodeJS.CpuUsage>('cpu')));
    const idleMs = monoMs() - idle0;

    // 5. fan-out: changes spread over the clients of every worker (and, with replicas, taking
    // turns over the replicas: client g is on replica g mod R), one coalescing window each.
    const r = coords.length;
    const ids = await Promise.all(workers.map((w) => w.call<number[]>('ids')));
    const latencies: number[] = [];
    const sameReplica: number[] = [];
    const crossReplica: number[] = [];
    const lastPeer: number[] = [];
    let deltaBytes = 0;
    let missed = 0;
    const flush0 = await states(coords);
    let flushSoFar = sum(flush0.map((s) => s.flushSumS));
    for (let k = 0; k < changes; k++) {
      const spread = Math.floor(((k + 0.5) * n) / changes);
      let g = spread - (spread % r) + (k % r);
      if (g >= n) g -= r;
      const reporterReplica = g % r;
      let w = 0;
      let local = g;
      while (local >= sizes[w]!) local -= sizes[w++]!;
      const id = ids[w]![local]!;
      const marker = `198.18.${1 + (k >> 8)}.${k & 255}:${41000 + k}`;
      await Promise.all(workers.map((x) => x.call('watch', { id, marker })));
      const { at } = await workers[w]!.call<{ at: number }>('report', { index: local, endpoints: ['192.168.1.10:41641', marker] });
      const expected = connected - 1;
      const end = Date.now() + CHANGE_DEADLINE_MS;
      let seen: Watched[] = [];
      for (;;) {
        await sleep(20);
        seen = await Promise.all(workers.map((x) => x.call<Watched>('watched')));
        if (seen.reduce((a, s) => a + s.times.length, 0) >= expected || Date.now() > end) break;
      }
      const times: number[] = [];
      for (const s of seen) {
        for (const [i, t] of s.times.entries()) {
          times.push(t - at);
          (s.replicas[i] === reporterReplica ? sameReplica : crossReplica).push(t - at);
        }
      }
      latencies.push(...times);
      lastPeer.push(Math.max(...times));
      missed += Math.max(0, expected - times.length);
      deltaBytes = Math.max(deltaBytes, ...seen.map((s) => s.bytes));
      // Each change is timed on its own: wait out the window this one opened (≥ 50 ms, and as
      // long as its flush took), or the next change would be held back to fold into it.
      const flushNow = sum((await states(coords)).map((s) => s.flushSumS));
      await sleep(Math.max(60, (flushNow - flushSoFar) * 1000 + 20));
      flushSoFar = flushNow;
    }
    await Promise.all(workers.map((x) => x.call('watch', null)));
    const flush1 = await states(coords);
    for (const xs of [latencies, sameReplica, crossReplica, lastPeer]) xs.sort(byNumber);
    const flushS = sum(flush1.map((s) => s.flushSumS)) - sum(flush0.map((s) => s.flushSumS));
    const flushes = sum(flush1.map((s) => s.flushCount)) - sum(flush0.map((s) => s.flushCount));

    // 6. reconnect storm: every client at once (no limit on handshakes in flight).
    t0 = monoMs();
    await Promise.all(workers.map((w, i) => w.call('storm', { concurrency: sizes[i], deadlineMs: PHASE_DEADLINE_MS }, PHASE_DEADLINE_MS + 10_000)));
    // Until every agent holds the current version: a client cut off meanwhile reconnects as an agent would.
    const stormEnd = Date.now() + PHASE_DEADLINE_MS / 2;
    let after: CoordinatorState[];
    let held: VersionsReport[];
    let heldCount: number;
    do {
      after = await settle(coords);
      const version = Math.max(...after.map((s) => s.version));
      held = await Promise.all(workers.map((w) => w.call<VersionsReport>('versions', { version })));
      heldCount = held.reduce((a, h) => a + h.atVersion, 0);
    } while (heldCount < connected && Date.now() < stormEnd);
    // Every agent that held a map before the storm holds the current one (a straggler of the
    // connect phase that got there meanwhile counts too, so ≥).
    const stormMs = heldCount >= connected ? Math.max(...held.map((h) => h.lastAt)) - t0 : NaN;

    return {
      connected, loadWorkers: workers.length,
      joinPerSec: Math.round(joined / (joinMs / 1000)),
      connectPerSec: Math.round(connected / ((half.ms + all.ms) / 1000)),
      empty, half, loaded: all.memory, online: all.online,
      idleCpuPct: cpu0.map((c0, i) => round1(((cpu1[i]!.user + cpu1[i]!.system - c0.user - c0.system) / 1000 / idleMs) * 100)),
      latencies, sameReplica, crossReplica, lastPeer, missed, deltaBytes,
      perChangeMs: round1((flushS * 1000) / Math.max(1, flushes)),
      after, held, heldCount, stormMs,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

function problemsOf(held: VersionsReport[]): { problems: Record<string, number>; problemSamples: string[] } {
  const problems: Record<string, number> = {};
  for (const h of held) for (const [k, v] of Object.entries(h.problems)) problems[k] = (problems[k] ?? 0) + v;
  return { problems, problemSamples: held.flatMap((h) => h.problemSamples).slice(0, 5) };
}

function checkSize(n: number): void {
  if (!Number.isInteger(n) || n < 2 || n > MAX_AGENTS) throw new RangeError(`agents must be 2..${MAX_AGENTS}`);
}

/**
 * The figures one coordinator and a set of replicas share, from what the phases measured;
 * summed over the coordinators where there are several (one coordinator is a sum of one).
 * wallMs and loadAvg are left to the caller, which knows when its run ends.
 */
function clusterFigures(m: Measured, n: number, changes: number, idleWindowMs: number): Omit<ClusterFigures, 'wallMs' | 'loadAvg'> {
  return {
    agents: n, connected: m.connected, loadWorkers: m.loadWorkers,
    joinPerSec: m.joinPerSec, connectPerSec: m.connectPerSec,
    bytesPerAgent: Math.round(sum(m.loaded.map((l, i) => l.rss - m.half.memory[i]!.rss)) / Math.max(1, m.connected - m.half.mapped)),
    idleWindowMs,
    fanoutChanges: changes, fanoutDeliveries: m.latencies.length, fanoutMissed: m.missed,
    fanoutP50Ms: round1(percentile(m.latencies, 50)), fanoutP99Ms: round1(percentile(m.latencies, 99)),
    fanoutLastPeerP50Ms: round1(percentile(m.lastPeer, 50)),
    perChangeMs: m.perChangeMs,
    deltaBytesPerEndpointChange: m.deltaBytes,
    snapshotBytes: m.held[0]!.snapshotBytes,
    snapshotsEncoded: sum(m.after.map((s) => s.snapshotsEncoded)), snapshotsSent: sum(m.after.map((s) => s.snapshotsSent)),
    reconnectStormMs: Math.round(m.stormMs), reconnectStormHeld: m.heldCount,
    ...problemsOf(m.held),
  };
}

/** One coordinator process with SQLite in a fresh data dir. */
export async function benchCoordinator(options: CoordinatorBenchOptions): Promise<CoordinatorBenchResult> {
  const n = options.agents;
  checkSize(n);
  const changes = options.changes ?? 10;
  const idleWindowMs = options.idleWindowMs ?? IDLE_WINDOW_MS;
  const started = monoMs();
  const loadAtStart = round1(loadavg()[0]!);
  const dir = mkdtempSync(join(tmpdir(), 'knit-cbench-'));
  const coord = spawn('coordinator', './coordinator-child.js', { dataDir: join(dir, 'data') }, ['--expose-gc', ...profiling()]);
  try {
    const { httpPort, admin } = (await coord.ready) as { httpPort: number; admin: string };
    const m = await measure({ coords: [coord], urls: [`http://127.0.0.1:${httpPort}`], admin }, n, changes, idleWindowMs);
    const [loaded, half] = [m.loaded[0]!, m.half.memory[0]!];
    return {
      ...clusterFigures(m, n, changes, idleWindowMs),
      heapBytesPerAgent: Math.round((loaded.heapUsed + loaded.external - half.heapUsed - half.external) / Math.max(1, m.connected - m.half.mapped)),
      coordinatorRssMB: round1(loaded.rss / 2 ** 20),
      emptyCoordinatorRssMB: round1(m.empty[0]!.rss / 2 ** 20),
      idleCpuPct: m.idleCpuPct[0]!,
      wallMs: Math.round(monoMs() - started),
      loadAvg: [loadAtStart, round1(loadavg()[0]!)],
    };
  } finally {
    await coord.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * R coordinator replicas sharing one database on a throwaway PostgreSQL server, the agents
 * dealt out round-robin over them. `{skipped}` when no PostgreSQL server can be started
 * here (not installed): a missing database is not a failed benchmark.
 */
export async function benchReplicas(options: ReplicaBenchOptions): Promise<ReplicaBenchResult | { skipped: string }> {
  const n = options.agents;
  const r = options.replicas;
  checkSize(n);
  if (!Number.isInteger(r) || r < 2 || r > MAX_REPLICAS) throw new RangeError(`replicas must be 2..${MAX_REPLICAS}`);
  if (n < r) throw new RangeError('at least one agent per replica');
  const changes = options.changes ?? 10;
  const idleWindowMs = options.idleWindowMs ?? IDLE_WINDOW_MS;
  const started = monoMs();
  const loadAtStart = round1(loadavg()[0]!);
  let serverLog = '';
  const server = await startPostgresServer({
    durable: true, onSecret: options.postgres?.onSecret,
    onLog: (log) => { serverLog = log; options.postgres?.onLog?.(log); },
  });
  if ('skip' in server) return { skipped: server.skip };
  const dir = mkdtempSync(join(tmpdir(), 'knit-rbench-'));
  const coords: IpcClient[] = [];
  let stopping: Promise<void> | undefined;
  const stopAll = (pg: RunningPostgres) => stopping ??= (async () => {
    await Promise.all(coords.map((c) => c.stop()));
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  })();
  try {
    const store = await server.createDatabase('knit_bench');
    const start = (i: number) => {
      const c = spawn(`replica-${i}`, './coordinator-child.js', { dataDir: join(dir, `replica-${i}`) }, ['--expose-gc', ...profiling()], { [STORE_ENV]: store });
      coords.push(c);
      return c.ready as Promise<{ httpPort: number; admin?: string }>;
    };
    // The first replica migrates the empty database and creates the admin credential; then the rest.
    const first = await start(0);
    const rest = await Promise.all(Array.from({ length: r - 1 }, (_, i) => start(i + 1)));
    if (!first.admin) throw new Error('the first replica on an empty database made no admin token');
    const urls = [first, ...rest].map((x) => `http://127.0.0.1:${x.httpPort}`);
    const cpu = async () => ({
      at: monoMs(), postgres: server.cpuSeconds(),
      replicas: (await Promise.all(coords.map((c) => c.call<NodeJS.CpuUsage>('cpu')))).map((u) => (u.user + u.system) / 1e6),
    });
    const cpu0 = await cpu();
    const m = await measure({ coords, urls, admin: first.admin }, n, changes, idleWindowMs);
    const cpu1 = await cpu();
    const versions = m.after.map((s) => s.version);
    const added = m.online.map((o, i) => Math.max(1, o - m.half.online[i]!));
    return {
      ...clusterFigures(m, n, changes, idleWindowMs),
      replicas: r, agentsPerReplica: m.online,
      replicaBytesPerAgent: m.loaded.map((l, i) => Math.round((l.rss - m.half.memory[i]!.rss) / added[i]!)),
      replicaRssMB: m.loaded.map((l) => round1(l.rss / 2 ** 20)),
      emptyReplicaRssMB: m.empty.map((e) => round1(e.rss / 2 ** 20)),
      idleCpuPct: m.idleCpuPct,
      sameReplicaFanoutP50Ms: round1(percentile(m.sameReplica, 50)), sameReplicaFanoutP99Ms: round1(percentile(m.sameReplica, 99)),
      crossReplicaFanoutP50Ms: round1(percentile(m.crossReplica, 50)), crossReplicaFanoutP99Ms: round1(percentile(m.crossReplica, 99)),
      replicaCpuS: cpu1.replicas.map((c, i) => round1(c - cpu0.replicas[i]!)),
      postgresCpuS: round1(cpu1.postgres - cpu0.postgres),
      measuredMs: Math.round(cpu1.at - cpu0.at),
      versions, versionsAgree: versions.every((v) => v === versions[0]),
      wallMs: Math.round(monoMs() - started),
      loadAvg: [loadAtStart, round1(loadavg()[0]!)],
    };
  } catch (err) {
    // The server's log says why a replica could not use it (the log is in hand once it stopped).
    await stopAll(server);
    const tail = serverLog.trim().split('\n').slice(-15).join('\n');
    throw new Error(`${(err as Error).message}${tail ? `\n--- postgres log (last lines) ---\n${tail}` : ''}`, { cause: err });
  } finally {
    await stopAll(server);
  }
}
