/**
 * A throwaway PostgreSQL server for tests: the benchmark's server
 * (sim/bench/postgres-server.ts: Debian's binaries, a fresh data directory,
 * 127.0.0.1 on a free port, a random password, nothing outlives the test
 * process), with the test harness's two duties added: the password is
 * registered with the secrets scan, and the server's log is saved for it.
 * The throwaway settings apply (no fsync, no synchronous commit): durability
 * buys a test nothing.
 */
import { startPostgresServer, type PostgresServer } from '../../sim/bench/postgres-server.js';
import { registerSecret, saveTestLog } from '../security/log-secrets.js';

export type { PostgresServer };

/** Starts a server, or says why it can't (for `t.skip(reason)`). */
export function startPostgres(): Promise<PostgresServer | { skip: string }> {
  return startPostgresServer({ onSecret: (s) => registerSecret(s), onLog: (log) => saveTestLog('postgres', log) });
}
