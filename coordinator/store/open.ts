/**
 * Picks the store engine from `--store`: nothing (or a path) = SQLite in the
 * data dir, the embedded default; `postgres://…` / `postgresql://…` =
 * PostgreSQL, shared by any number of coordinator replicas
 * (docs/deployment.md). The PostgreSQL driver is loaded only when used.
 */
import { join } from 'node:path';
import { KnitError } from '../../shared/errors.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './store.js';

export function databasePath(dataDir: string): string {
  return join(dataDir, 'knit.db');
}

/** Whether a `--store` value names a PostgreSQL database. */
export function isPostgresUrl(spec: string | undefined): spec is string {
  return spec !== undefined && /^postgres(ql)?:\/\//i.test(spec);
}

/** Checks a `--store` value without opening anything; returns a usage message, or undefined when fine. */
export function storeSpecProblem(spec: string): string | undefined {
  if (isPostgresUrl(spec)) {
    try {
      const u = new URL(spec);
      if (!u.hostname && !u.searchParams.get('host')) return '--store: a postgres:// URL needs a host';
      return undefined;
    } catch {
      return '--store: not a valid postgres:// URL';
    }
  }
  return '--store takes a postgres:// URL (leave it out for SQLite in --data)';
}

export async function openStore(spec: { store?: string; dataDir: string }): Promise<Store> {
  if (spec.store === undefined) return new SqliteStore(databasePath(spec.dataDir));
  const problem = storeSpecProblem(spec.store);
  if (problem) throw new KnitError('KNIT_ERR_USAGE', problem);
  const { PostgresStore } = await import('./postgres.js');
  return PostgresStore.open(spec.store);
}
