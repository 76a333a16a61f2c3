/**
 * The coordinator under test, in a process of its own so that its memory and
 * CPU are measured apart from the load generators. A real coordinator
 * (createCoordinator: SQLite store in a data dir, fastify + ws on loopback)
 * with two benchmark settings: joins are not rate-limited per source (every
 * light client joins from loopback), and the WS ping interval is the one the
 * driver passes.
 *
 * Usage (by coordinator-bench.ts only): fork with --expose-gc and
 *   {dataDir, pingIntervalMs} as JSON in argv[2].
 * Answers over IPC: memory (after a full GC), cpu, state, stop.
 */
import { createCoordinator } from '../../coordinator/index.js';
import { silentLogger } from '../../shared/log.js';
import { readyIpc, serveIpc } from './ipc.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { dataDir?: string; pingIntervalMs?: number };
const gc = (globalThis as { gc?: () => void }).gc;
if (!config.dataDir || !gc) {
  console.error('coordinator-child: needs {dataDir} and --expose-gc');
  process.exit(2);
}

const c = createCoordinator(
  { dataDir: config.dataDir, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin: 1_000_000_000, pingIntervalMs: config.pingIntervalMs },
  { logger: silentLogger },
);
const { httpPort } = await c.start();
const admin = c.ensureAdmin();

serveIpc({
  /** Heap and RSS after full collections, so what is counted is what stays. */
  memory() {
    gc();
    gc();
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
  },
  cpu() {
    return process.cpuUsage();
  },
  state() {
    return {
      version: c.hub.log.version, online: c.hub.onlineCount, nodes: c.registry.nodeCount, pending: c.registry.hasPending,
      flushCount: c.metrics.flush.count, flushSumS: c.metrics.flush.sum, snapshotsEncoded: c.metrics.snapshotsEncoded,
      snapshotsSent: c.metrics.snapshotsSent, deltasSent: c.metrics.deltasSent,
    };
  },
  async stop() {
    await c.stop();
    setImmediate(() => process.exit(0));
  },
});
readyIpc({ httpPort, admin });
