/**
 * The coordinator under test, in a process of its own so that its memory and
 * CPU are measured apart from the load generators. A real coordinator
 * (createCoordinator: SQLite store in a data dir, or one replica on a shared
 * PostgreSQL database; fastify + ws on loopback, production settings) with one
 * benchmark setting: joins are not rate-limited per source, since every light
 * client joins from loopback.
 *
 * Usage (by coordinator-bench.ts only): fork with --expose-gc and
 *   {dataDir} as JSON in argv[2]; for a replica, the postgres:// URL in the
 *   environment as KNIT_BENCH_STORE (never in argv, where `ps` shows the
 *   password to everyone on the machine).
 * The admin token is in the ready message of the replica that created it (the
 * first one started on an empty database); others say undefined.
 * Answers over IPC: memory (after a full GC), cpu, state, stop.
 */
import { createCoordinator } from '../../coordinator/index.js';
import { silentLogger } from '../../shared/log.js';
import { readyIpc, serveIpc } from './ipc.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { dataDir?: string };
const store = process.env.KNIT_BENCH_STORE || undefined;
delete process.env.KNIT_BENCH_STORE;
const gc = (globalThis as { gc?: () => void }).gc;
if (!config.dataDir || !gc) {
  console.error('coordinator-child: needs {dataDir} and --expose-gc');
  process.exit(2);
}

const c = await createCoordinator(
  { dataDir: config.dataDir, store, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin: 1_000_000_000 },
  { logger: silentLogger },
);
const { httpPort } = await c.start();
const admin = await c.ensureAdmin();

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
