/**
 * A throwaway PostgreSQL server, for the replica benchmark and for tests
 * (test/support/postgres.ts wraps it): Debian's binaries
 * (/usr/lib/postgresql/N/bin), a fresh data directory under the temp dir, one
 * `postgres` process listening on 127.0.0.1 only, on a free port. It is not a
 * way to run PostgreSQL for a mesh: nothing here is kept.
 *
 * Logins need a password (SCRAM over TCP), a random one per server, handed to
 * `onSecret` before anything uses it (the tests register it with their
 * secrets scan); the server's log goes to `onLog` when it stops. PostgreSQL
 * refuses to run as root: as root, initdb and postgres run as the `postgres`
 * system user (the Debian package creates it).
 *
 * Nothing outlives the calling process: stop() shuts the server down (SIGINT,
 * PostgreSQL's fast shutdown) and removes its directory; if the process exits
 * without stop(), an 'exit' handler sends SIGQUIT (immediate shutdown); and if
 * it is killed outright — even while initdb runs — a watchdog shell, which
 * holds the only other end of a pipe from this process, sees the pipe close,
 * stops whatever was running (initdb or the server) and removes the directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PostgresServer {
  /** A URL (with the password) for a database on this server; default "postgres". */
  url(dbName?: string): string;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Fast shutdown, then removes the data directory. Idempotent. */
  stop(): Promise<void>;
}

/** What the benchmark also gets: the server's own cost. */
export interface RunningPostgres extends PostgresServer {
  /**
   * CPU seconds (user + system) the server has used since it started, all its processes
   * together: the postmaster, its live backends and workers, and those that already exited
   * (reaped, so counted in the postmaster's children's time). From /proc: NaN elsewhere.
   */
  cpuSeconds(): number;
}

export interface PostgresServerOptions {
  /** Called with the server's password before any URL carrying it exists. */
  onSecret?: (secret: string) => void;
  /** Called once with everything the server wrote (stdout and stderr), when it stops. */
  onLog?: (log: string) => void;
  /**
   * Keep PostgreSQL's durability (fsync, synchronous commit, full-page writes), so that
   * a commit costs what it would in production. Off by default: tests gain nothing from it.
   */
  durable?: boolean;
  /** max_connections (default 200: every replica's pool plus its LISTEN connection, with room). */
  maxConnections?: number;
}

const PG_ROOT = '/usr/lib/postgresql';
const USER = 'knit';
/** How long the server gets to accept connections after it is started. */
const READY_TIMEOUT_MS = 15_000;
/** How long a fast shutdown may take before the server is killed. */
const STOP_TIMEOUT_MS = 10_000;
const ENV = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' });
/**
 * The watchdog: reads pids (one a line: initdb's, then the server's) until EOF, which comes
 * when this process is gone however it went; then SIGQUITs the last one (PostgreSQL's
 * immediate shutdown), gives it 10 s, and removes the directory ($1).
 */
const WATCHDOG_SCRIPT = 'pid=; while read -r line; do pid=$line; done; '
  + 'if [ -n "$pid" ]; then kill -QUIT "$pid" 2>/dev/null; i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; fi; '
  + 'rm -rf "$1"';

/** The newest Debian PostgreSQL bin directory that has initdb and postgres. */
function findBinDir(): string | undefined {
  if (!existsSync(PG_ROOT)) return undefined;
  const versions = readdirSync(PG_ROOT).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = join(PG_ROOT, v, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'postgres'))) return bin;
  }
  return undefined;
}

/** The uid/gid PostgreSQL runs as: ours, or (as root) the postgres system user's. */
function runAs(): { uid: number; gid: number } | { skip: string } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) return { skip: 'PostgreSQL refuses to run as root and there is no postgres system user' };
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** Why no server can be started here, or undefined when one can (checked without starting anything). */
export function postgresUnavailable(): string | undefined {
  if (!findBinDir()) return 'PostgreSQL is not installed (apt-get install postgresql)';
  const as = runAs();
  return as && 'skip' in as ? as.skip : undefined;
}

/** A loopback TCP port free a moment ago (bound and released: nothing listens on it now). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function run(cmd: string, args: string[], opts: { uid?: number; gid?: number; cwd: string }, onSpawn: (pid: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, env: ENV(), stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) onSpawn(child.pid);
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}:\n${out}`))));
  });
}

/** Starts a server, or says why it can't (`{skip}`: not installed, or root without a postgres user). */
export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<RunningPostgres | { skip: string }> {
  const bin = findBinDir();
  if (!bin) return { skip: 'PostgreSQL is not installed (apt-get install postgresql)' };
  const as = runAs();
  if (as && 'skip' in as) return as;
  const ids = as ?? {};

  const dir = mkdtempSync(join(tmpdir(), 'knit-pg-'));
  const data = join(dir, 'data');
  const sockets = join(dir, 'sock');
  mkdirSync(sockets);
  const password = randomBytes(16).toString('hex');
  options.onSecret?.(password);
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, password + '\n', { mode: 0o600 });
  if (as) for (const p of [dir, sockets, pwfile]) chownSync(p, as.uid, as.gid);

  let child: ChildProcess | undefined;
  let log = '';
  // Started before anything else runs, so a kill at any point from here on leaves nothing behind.
  const watchdog = spawn('sh', ['-c', WATCHDOG_SCRIPT, 'knit-pg-watchdog', dir], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  watchdog.on('error', () => { /* no sh: nothing to clean up after a kill, the rest still works */ });
  watchdog.stdin!.on('error', () => { /* the watchdog is gone */ });
  watchdog.unref();
  (watchdog.stdin as unknown as Socket).unref();
  const watch = (pid: number) => (watchdog.stdin as Writable).write(`${pid}\n`);
  const onExit = () => {
    // Synchronous, last chance: an immediate shutdown the server carries out on its own.
    try { if (child?.pid && child.exitCode === null) process.kill(child.pid, 'SIGQUIT'); } catch { /* gone */ }
  };
  // A throwaway server: unless asked to be durable, durability buys nothing and costs time.
  const settings = options.durable ? [] : ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off'];
  settings.push(`max_connections=${options.maxConnections ?? 200}`);
  try {
    await run(join(bin, 'initdb'), [
      '-D', data, '-U', USER, `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256',
      '--encoding=UTF8', '--locale=C', '--no-sync',
    ], { ...ids, cwd: dir }, watch);
    rmSync(pwfile);
    const port = await freePort();
    child = spawn(join(bin, 'postgres'), [
      '-D', data, '-k', sockets, '-h', '127.0.0.1', '-p', String(port), ...settings.flatMap((s) => ['-c', s]),
    ], { ...ids, cwd: dir, env: ENV(), stdio: ['ignore', 'pipe', 'pipe'] });
    const server = child;
    if (server.pid !== undefined) watch(server.pid);
    server.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
    server.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
    process.on('exit', onExit);

    const url = (dbName = 'postgres') => `postgres://${USER}:${password}@127.0.0.1:${port}/${dbName}`;
    await waitReady(url(), server, () => log);

    let stopping: Promise<void> | undefined;
    return {
      url,
      cpuSeconds: () => treeCpuSeconds(server.pid!),
      async createDatabase(name: string): Promise<string> {
        if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new RangeError(`not a plain database name: ${name}`);
        const c = new pg.Client({ connectionString: url() });
        await c.connect();
        try {
          await c.query(`CREATE DATABASE ${name}`);
        } finally {
          await c.end();
        }
        return url(name);
      },
      stop(): Promise<void> {
        stopping ??= (async () => {
          watchdog.kill('SIGKILL');
          watchdog.stdin?.destroy();
          await stopServer(server);
          process.removeListener('exit', onExit);
          options.onLog?.(log);
          rmSync(dir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  } catch (err) {
    watchdog.kill('SIGKILL');
    watchdog.stdin?.destroy();
    if (child) await stopServer(child);
    process.removeListener('exit', onExit);
    options.onLog?.(log);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Fields 14–17 of /proc/PID/stat (utime, stime, cutime, cstime), in clock ticks; undefined when gone. */
function procTimes(pid: number): number[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [fields[11], fields[12], fields[13], fields[14], fields[1]].map(Number); // …and the ppid (field 4) last
  } catch {
    return undefined;
  }
}

/** CPU seconds of a process and its children, live (their own time) and reaped (the parent's children's time). */
function treeCpuSeconds(pid: number): number {
  const own = procTimes(pid);
  if (!own) return NaN;
  let ticks = own[0]! + own[1]! + own[2]! + own[3]!;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const t = procTimes(Number(entry));
    if (t && t[4] === pid) ticks += t[0]! + t[1]!;
  }
  // USER_HZ is 100 on every Linux this runs on (getconf CLK_TCK).
  return ticks / 100;
}

async function waitReady(url: string, server: ChildProcess, log: () => string): Promise<void> {
  const end = Date.now() + READY_TIMEOUT_MS;
  let last: unknown;
  while (Date.now() < end) {
    if (server.exitCode !== null || server.signalCode !== null) throw new Error(`postgres exited before accepting connections:\n${log()}`);
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    try {
      await c.connect();
      await c.end();
      return;
    } catch (err) {
      last = err;
      await c.end().catch(() => { /* never connected */ });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`postgres did not accept connections within ${READY_TIMEOUT_MS} ms (${(last as Error)?.message}):\n${log()}`);
}

async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  server.kill('SIGINT');
  const timer = setTimeout(() => server.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
