/**
 * A load generator for the coordinator benchmark, run as a forked child so
 * that thousands of WebSockets don't share an event loop with the driver (or
 * with the coordinator under test). It owns a slice of light clients and does
 * what the driver asks over IPC: join them all, connect them all, watch for a
 * change, report one, reconnect them all at once, and say what each holds.
 *
 * Usage (by coordinator-bench.ts only): fork with
 *   {urls, token, first, count, sourceAddresses} as JSON in argv[2].
 * With several coordinator replicas (`urls`), clients are dealt out round-robin
 * by their global index (client n uses urls[n % urls.length]), and every
 * watched delivery says which replica it came through.
 * Sockets are spread over several loopback source addresses (127.x.y.z all
 * reach 127.0.0.1 on Linux), so 10,000 connections plus the TIME_WAIT of a
 * reconnect storm never run out of ephemeral ports on one address.
 */
import { parseToken } from '../../shared/token.js';
import { readyIpc, serveIpc } from './ipc.js';
import { LightClient, monoMs, type LightClientContext } from './light-client.js';

interface WorkerConfig {
  /** The coordinator, or every replica's URL. */
  urls: string[];
  token: string;
  first: number; // index of this worker's first client, for unique hostnames
  count: number;
  sourceAddresses: string[];
}

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const token = parseToken(config.token);
if (!token || token.kind !== 'join' || !(config.count > 0) || config.sourceAddresses.length === 0 || !(config.urls?.length > 0)) {
  console.error('load-worker: bad configuration');
  process.exit(2);
}

/** Each kind of problem is counted; the first few are kept word for word for the report. */
const problems = new Map<string, number>();
const problemSamples: string[] = [];
let watchedTimes: number[] = [];
/** The replica (index into config.urls) of each watched delivery, in step with watchedTimes. */
let watchedReplicas: number[] = [];
/** Each client's replica, by client. */
const replicaOf = new Map<LightClient, number>();
let watchedBytes = 0;
let mappedWaiters: (() => void)[] = [];
/** Clients whose handshake is under way: started, and neither mapped nor failed yet. */
const inFlight = new Set<LightClient>();


const ctx: LightClientContext = {
  url: config.urls[0]!, token, rawToken: config.token, watch: undefined, retry: false,
  onWatched(c, at, bytes) {
    watchedTimes.push(at);
    watchedReplicas.push(replicaOf.get(c)!);
    watchedBytes = bytes;
  },
  onMapped(c) {
    inFlight.delete(c);
    for (const w of mappedWaiters) w();
  },
  onProblem(c, code, detail, retrying) {
    if (!retrying) inFlight.delete(c); // a retrying client is still on its way to a map
    problems.set(code, (problems.get(code) ?? 0) + 1);
    if (problemSamples.length < 5) problemSamples.push(`${c.hostname}: ${code} ${detail}`);
  },
};

const clients: LightClient[] = [];
for (let i = 0; i < config.count; i++) {
  const n = config.first + i;
  const replica = n % config.urls.length;
  const c = new LightClient(ctx, `bench-${n}`, config.sourceAddresses[i % config.sourceAddresses.length]!, i === 0, config.urls[replica]);
  clients.push(c);
  replicaOf.set(c, replica);
}

/** Runs `fn` over every client with at most `limit` in flight. */
async function pool(limit: number, fn: (c: LightClient) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < clients.length) await fn(clients[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, clients.length) }, lane));
}

/** Resolves when `pred` holds (checked on every map event and every 50 ms), or at the deadline. */
function waitFor(pred: () => boolean, deadlineMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const end = Date.now() + deadlineMs;
    const check = () => {
      if (!pred() && Date.now() < end) return;
      clearInterval(timer);
      mappedWaiters = mappedWaiters.filter((w) => w !== check);
      resolve(pred());
    };
    const timer = setInterval(check, 50);
    mappedWaiters.push(check);
    check();
  });
}

/**
 * Starts every client with `start`, at most `limit` handshakes in flight; resolves when each
 * holds a map or failed, or at the deadline.
 */
async function connectAll(limit: number, deadlineMs: number, upTo: number, start: (c: LightClient) => void): Promise<{ mapped: number; ms: number }> {
  const t0 = monoMs();
  const end = Date.now() + deadlineMs;
  const stop = Math.min(upTo, clients.length);
  let next = 0;
  inFlight.clear();
  ctx.retry = true; // from the first connect on, clients retry failures with the agent's backoff
  await waitFor(() => {
    while (next < stop && inFlight.size < limit && Date.now() < end) {
      const c = clients[next++]!;
      if (c.id < 0 || c.phase === 'mapped') continue; // never joined, or connected by an earlier call
      inFlight.add(c);
      start(c);
    }
    return next === stop && inFlight.size === 0;
  }, deadlineMs);
  return { mapped: clients.filter((c) => c.phase === 'mapped').length, ms: monoMs() - t0 };
}

serveIpc({
  async join(args: { concurrency: number }) {
    const t0 = monoMs();
    let failed = 0;
    await pool(args.concurrency, async (c) => {
      try {
        await c.join();
      } catch (err) {
        failed++;
        ctx.onProblem(c, 'join', (err as Error).message, false);
      }
    });
    return { joined: clients.length - failed, ms: monoMs() - t0 };
  },
  /** Connects this worker's first `upTo` clients (those not connected yet). */
  connect(args: { concurrency: number; deadlineMs: number; upTo: number }) {
    return connectAll(args.concurrency, args.deadlineMs, args.upTo, (c) => c.connect());
  },
  /** Every client drops its socket at the same moment and reconnects with its last version. */
  storm(args: { concurrency: number; deadlineMs: number }) {
    for (const c of clients) c.close();
    return connectAll(args.concurrency, args.deadlineMs, clients.length, (c) => c.reconnect());
  },
  watch(args: { id: number; marker: string } | null) {
    ctx.watch = args ? { ...args, markerBytes: Buffer.from(args.marker) } : undefined;
    watchedTimes = [];
    watchedReplicas = [];
  },
  /** Client `index` (of this worker) reports endpoints; returns when it was sent (monoMs). */
  report(args: { index: number; endpoints: string[] }) {
    const c = clients[args.index]!;
    const at = monoMs();
    c.reportEndpoints(args.endpoints, 'endpoint-independent');
    return { at, id: c.id };
  },
  watched() {
    return { times: watchedTimes, replicas: watchedReplicas, bytes: watchedBytes };
  },
  ids() {
    return clients.map((c) => c.id);
  },
  /** What every client holds: how many are at `version`, and when the last of them got there. */
  versions(args: { version: number }) {
    let atVersion = 0;
    let lastAt = 0;
    for (const c of clients) {
      if (c.phase === 'mapped' && c.version === args.version) {
        atVersion++;
        lastAt = Math.max(lastAt, c.versionAt);
      }
    }
    const full = clients[0]!;
    return {
      atVersion, lastAt, snapshotBytes: full.snapshotBytes,
      fullClientPeers: full.netmap?.peers.size ?? 0, fullClientVersion: full.netmap?.version ?? 0,
      fullClientOnline: full.netmap ? [...full.netmap.peers.values()].filter((p) => p.online).length : 0,
      problems: Object.fromEntries(problems), problemSamples,
    };
  },
  fullClientEndpoints(args: { id: number }) {
    return clients[0]!.netmap?.peers.get(args.id)?.endpoints ?? null;
  },
  stop() {
    ctx.retry = false;
    for (const c of clients) c.close();
    setImmediate(() => process.exit(0));
  },
});
readyIpc('ready');
