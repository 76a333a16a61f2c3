/**
 * A throwaway PostgreSQL server inside a lab namespace, for lab tests of
 * coordinator replicas: the tests' own server (test/support/postgres.ts:
 * Debian's binaries, run as the `postgres` user when root, a random password,
 * its log saved for the secrets scan), started by a helper process that runs
 * inside the namespace, so the server listens on that namespace's own loopback
 * and nothing of it is reachable from the host. The same file is the test-side
 * driver (startLabPostgres) and, when run by node directly, the helper:
 *
 *   node postgres-in-namespace.js serve   stdout: {"url":"postgres://…"} | {"skip":"…"}
 *       stops the server and removes its directory on SIGTERM, SIGINT, or when its
 *       stdin closes (the test process is gone)
 *   node postgres-in-namespace.js query   stdin: the URL on the first line, then one SQL
 *       statement; stdout: the rows as JSON. (The URL carries the password: stdin, never argv.)
 *
 * The server's directory lives under the lab's temp directory (TMPDIR of the
 * helper): stop() removes it even if the helper had to be killed, and so does the
 * lab's teardown or safety net if stop() never ran.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { until } from '../helpers/until.js';
import { registerSecret } from '../security/log-secrets.js';
import { startPostgres } from '../support/postgres.js';
import type { Lab, LabProcess } from './netlab.js';

export interface LabPostgres {
  readonly proc: LabProcess;
  /** A database's URL (with the password), reachable from inside the namespace only. */
  readonly url: string;
  /** Runs one SQL statement inside the namespace; resolves to its rows. */
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  /** Fast shutdown, then removes the server's directory. Idempotent. */
  stop(): Promise<void>;
}

/** initdb on a shared 2-core machine takes seconds; this only bounds a hung start. */
const START_TIMEOUT_MS = 30_000;
/** A fast shutdown with no clients left takes well under a second; this bounds a stuck one. */
const STOP_TIMEOUT_MS = 10_000;
const HELPER = fileURLToPath(import.meta.url);

/** Starts the server in `ns` with one empty database, or says why it can't (`{skip}`). */
export async function startLabPostgres(lab: Lab, ns: string): Promise<LabPostgres | { skip: string }> {
  // Under the lab's own directory, so that even the lab's safety net (a SIGINT, say) removes the
  // server's files, after it has killed the server. The postgres user must reach them: the lab's
  // directory and this one are root's, so make them traversable, not listable.
  chmodSync(lab.tempDir, 0o711);
  const tmp = mkdtempSync(join(lab.tempDir, 'pg-'));
  chmodSync(tmp, 0o711);
  const removeTmp = () => rmSync(tmp, { recursive: true, force: true });
  const proc = lab.spawn(ns, [process.execPath, HELPER, 'serve'], { TMPDIR: tmp });
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (!proc.exited()) {
        const exited = new Promise<void>((resolve) => proc.child.once('exit', () => resolve()));
        proc.child.kill('SIGTERM');
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      removeTmp();
    })();
    return stopping;
  };
  let said: { url?: string; skip?: string } | undefined;
  proc.onLine((line) => {
    try {
      said ??= JSON.parse(line) as { url?: string; skip?: string };
    } catch { /* the server's own output */ }
  });
  try {
    // The helper's output never goes into an explanation once it holds the URL: only before.
    await until('PostgreSQL ready in the namespace', () => said !== undefined || proc.exited(), {
      timeoutMs: START_TIMEOUT_MS, intervalMs: 100, explain: () => proc.output().slice(-3000),
    });
    if (said?.skip) {
      await stop();
      return { skip: said.skip };
    }
    if (!said?.url) throw new Error(`the PostgreSQL helper exited: ${proc.output().slice(-3000)}`);
  } catch (err) {
    await stop();
    throw err;
  }
  const url = said.url;
  registerSecret(new URL(url).password);
  return {
    proc,
    url,
    async query<T>(sql: string) {
      const r = await lab.run(ns, [process.execPath, HELPER, 'query'], { input: `${url}\n${sql}` });
      return JSON.parse(r.stdout) as T[];
    },
    stop,
  };
}

async function serve(): Promise<void> {
  const say = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
  const server = await startPostgres();
  if ('skip' in server) {
    say({ skip: server.skip });
    return;
  }
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void server.stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  say({ url: await server.createDatabase('knit') });
}

async function query(): Promise<void> {
  let input = '';
  for await (const chunk of process.stdin) input += String(chunk);
  const newline = input.indexOf('\n');
  const client = new pg.Client({ connectionString: input.slice(0, newline), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    process.stdout.write(JSON.stringify((await client.query(input.slice(newline + 1))).rows) + '\n');
  } finally {
    await client.end();
  }
}

if (process.argv[1] === HELPER) {
  const mode = process.argv[2];
  if (mode === 'serve') await serve();
  else if (mode === 'query') await query();
  else {
    console.error('usage: node postgres-in-namespace.js serve|query');
    process.exit(2);
  }
}
