/**
 * The coordinator's command line in real processes (the fixture hands argv to
 * runCoordinatorCli exactly as `knit` does): exit codes 0/1, `token create`
 * printing only the token, local
 * (--data) and remote (--coordinator + KNIT_ADMIN_TOKEN) admin, and a
 * `coordinator` that prints its admin token once, logs one ready line with
 * its ports, and stops cleanly on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseToken } from '../../shared/token.js';
import { databasePath } from '../../coordinator/index.js';
import { SqliteStore } from '../../coordinator/store/sqlite.js';
import { Registry } from '../../coordinator/registry/registry.js';
import { systemClock } from '../../shared/clock.js';
import { until } from '../helpers/until.js';

const FIXTURE = join(process.cwd(), 'dist', 'test', 'coordinator', 'fixtures', 'cli.js');
const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-cli-'));
  dirs.push(d);
  return d;
}

/** A scratch working directory, so a default ./knit-data never lands in the repository. */
const CWD = tmp();

function launch(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [FIXTURE, ...args], { cwd: CWD, env: { ...process.env, KNIT_ADMIN_TOKEN: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => { out.stdout += d; });
  child.stderr!.on('data', (d) => { out.stderr += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, out, exited };
}

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = launch(args, env);
  const code = await p.exited;
  return { code, ...p.out };
}

const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);

test('local admin: token create prints only the token; list, revoke and nodes work on the data dir', async () => {
  const d = tmp();
  const created = await run(['token', 'create', '--data', d]);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(lines(created.stdout).length, 1);
  const tok = parseToken(created.stdout.trim());
  assert.ok(tok && tok.kind === 'join');
  assert.match(created.stderr, /no coordinator has used/, 'a fresh data dir is pointed out');
  const store = new SqliteStore(databasePath(d));
  const registry = await Registry.open(store, { clock: systemClock, url: 'http://x:1', serves: false }); // a read, as the admin commands open it
  assert.equal(tok.coordinatorKey, registry.coordinatorKey, 'the token pins this mesh\'s key');
  await store.close();

  const second = await run(['token', 'create', '--reusable', '--uses', '3', '--ephemeral', '--expires', '1h', '--tags', 'ci,build', '--data', d]);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stderr, '', 'the data dir exists now: nothing to say');
  const listed = await run(['token', 'list', '--json', '--data', d]);
  const tokens = JSON.parse(listed.stdout) as { id: string; usesLeft: number | null; tags: string[]; ephemeral: boolean }[];
  assert.equal(tokens.length, 2);
  assert.deepEqual(tokens.map((t) => [t.usesLeft, t.ephemeral, t.tags]), [[1, false, []], [3, true, ['ci', 'build']]]);
  assert.ok(!listed.stdout.includes(created.stdout.trim()) && !listed.stdout.includes('secret'), 'no secrets listed');
  const table = await run(['token', 'list', '--data', d]);
  assert.equal(lines(table.stdout).length, 3, table.stdout);

  assert.equal((await run(['token', 'revoke', tokens[0]!.id, '--data', d])).code, 0);
  const gone = await run(['token', 'revoke', 'ffffffffffffffff', '--data', d]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /no such token/);
  const nodesJson = await run(['nodes', '--json', '--data', d]);
  assert.deepEqual(JSON.parse(nodesJson.stdout), []);
  assert.equal((await run(['nodes', 'list', '--data', d])).stdout.trim(), 'no nodes yet');
  const removeMissing = await run(['nodes', 'remove', '42', '--data', d]);
  assert.equal(removeMissing.code, 1);
});

test('`coordinator`: admin token once on stdout, one ready line with its ports, remote admin, clean SIGTERM', async () => {
  const d = tmp();
  const c = launch(['coordinator', '--listen', '127.0.0.1:0', '--stun', '127.0.0.1:0', '--stun2', '127.0.0.1:0', '--data', d, '--ipv4-prefix', '10.123.0.0/16']);
  const ready = await until('ready line', () => lines(c.out.stderr).map((l) => JSON.parse(l)).find((l) => l.msg === 'coordinator ready'), { timeoutMs: 10_000 });
  assert.match(ready.http, /^127\.0\.0\.1:\d+$/);
  assert.equal(ready.stun.length, 2);
  const admin = /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(c.out.stdout)?.[1];
  assert.ok(admin, c.out.stdout);
  assert.equal(parseToken(admin)?.kind, 'admin');
  const url = `http://${ready.http}`;

  const [remote, wrong, missing, local, twin, unreachable] = await Promise.all([
    run(['token', 'create', '--reusable', '--coordinator', url], { KNIT_ADMIN_TOKEN: admin }),
    run(['nodes', '--coordinator', url], { KNIT_ADMIN_TOKEN: 'knit_nope' }),
    run(['nodes', 'remove', '999', '--coordinator', url], { KNIT_ADMIN_TOKEN: admin }),
    run(['nodes', 'remove', '1', '--data', d]),
    run(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', '--data', d]),
    run(['nodes', '--coordinator', 'http://127.0.0.1:1'], { KNIT_ADMIN_TOKEN: admin }),
  ]);
  assert.equal(remote.code, 0, remote.stderr);
  assert.equal(parseToken(remote.stdout.trim())?.url, url, 'tokens carry the URL the coordinator listens on');
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /admin token/);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no such node/);
  assert.equal(local.code, 2, 'removal goes through the running coordinator');
  assert.match(local.stderr, /--coordinator/);
  assert.equal(twin.code, 1);
  assert.match(twin.stderr, /another coordinator/);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /cannot reach/);

  c.child.kill('SIGTERM');
  assert.equal(await c.exited, 0);
  assert.ok(!c.out.stderr.includes('knit_'), 'no token in the logs');

  // Restarted: no new admin token, and the mesh prefix can't silently change.
  const again = await run(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', '--data', d, '--ipv4-prefix', '10.124.0.0/16']);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /10\.123\.0\.0\/16/);
  assert.ok(!again.stdout.includes('Admin token'));
});

test('`coordinator` on a corrupt database or a busy port: one clear error and exit 1', async () => {
  const corrupt = tmp();
  writeFileSync(databasePath(corrupt), Buffer.alloc(4096, 0x41));
  const a = await run(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', '--data', corrupt]);
  assert.equal(a.code, 1);
  assert.match(a.stderr, /knit coordinator: the database .*knit\.db cannot be used/);

  const first = launch(['coordinator', '--listen', '127.0.0.1:0', '--stun', 'off', '--data', tmp()]);
  const ready = await until('ready line', () => lines(first.out.stderr).map((l) => JSON.parse(l)).find((l) => l.msg === 'coordinator ready'), { timeoutMs: 10_000 });
  const b = await run(['coordinator', '--listen', ready.http, '--stun', 'off', '--data', tmp()]);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /knit coordinator: cannot listen on tcp 127\.0\.0\.1:\d+ \(HTTP\): the address is already in use/);
  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0);
});
