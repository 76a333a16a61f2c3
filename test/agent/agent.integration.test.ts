/**
 * The real `knit` processes on loopback: a coordinator and three agents with
 * memory engines (`--interfaces lo`, so every packet stays on loopback).
 * Verdicts come from `knit status --json`, as a user would read them.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import type { StatusDocument } from '../../agent/status.js';
import { RECONNECT_CAP_MS } from '../../agent/control/client.js';
import { until } from '../helpers/until.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'knit.js');
const root = mkdtempSync(join(tmpdir(), 'knit-agents-'));
const procs = new Set<ChildProcess>();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

interface Proc { child: ChildProcess; out: () => string; exited: Promise<number | null> }

function start(args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(child);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { procs.delete(child); r(code); }));
  return { child, out: () => out, exited };
}

async function status(state: string): Promise<StatusDocument> {
  const { stdout } = await run(process.execPath, [BIN, 'status', '--json', '--state', state]);
  return JSON.parse(stdout) as StatusDocument;
}

const port = 30000 + (process.pid % 10000);
const coordArgs = ['coordinator', '--listen', `127.0.0.1:${port}`, '--stun', `127.0.0.1:${port}`, '--stun2', `127.0.0.1:${port + 1}`, '--data', join(root, 'coord'), '--allow-loopback-endpoints'];
const stateOf = (name: string) => join(root, name);
const upArgs = (name: string, token?: string) => ['up', ...(token ? ['--token', token] : []), '--engine', 'memory', '--port', '0', '--state', stateOf(name), '--interfaces', 'lo', '--hostname', name];

async function allConnected(names: string[]): Promise<Record<string, StatusDocument>> {
  return until('every pair connected', async () => {
    const docs: Record<string, StatusDocument> = {};
    for (const n of names) {
      const d = await status(stateOf(n));
      if (d.peers.length !== names.length - 1 || !d.peers.every((p) => p.path === 'lan' || p.path === 'direct')) return undefined;
      docs[n] = d;
    }
    return docs;
  });
}

test('three agents: join with one token, connect pairwise, survive an agent restart and a coordinator restart', async (t) => {
  let coord = start(coordArgs);
  await until('coordinator ready', () => coord.out().includes('coordinator ready'));
  const { stdout: token } = await run(process.execPath, [BIN, 'token', 'create', '--reusable', '--data', join(root, 'coord')]);
  const names = ['ant', 'bee', 'cat'];
  const agents: Record<string, Proc> = {};
  for (const n of names) agents[n] = start(upArgs(n, token.trim()));

  const t0 = Date.now();
  const docs = await allConnected(names);
  t.diagnostic(`all pairs connected ${Date.now() - t0} ms after start`);
  for (const n of names) {
    const d = docs[n]!;
    assert.equal(d.coordinator.status, 'connected');
    assert.deepEqual(d.peers.map((p) => p.name).sort(), names.filter((x) => x !== n));
    for (const p of d.peers) {
      assert.match(p.ip, /^100\.6[4-9]|^100\.[7-9]|^100\.1[0-2]/);
      assert.ok(p.endpoint?.startsWith('127.0.0.1:') || p.endpoint?.startsWith('[::1]:'), p.endpoint);
      assert.equal(typeof p.rttMs, 'number');
    }
  }
  // knit ping: each reply names the path it took.
  const { stdout: pingOut } = await run(process.execPath, [BIN, 'ping', 'bee', '--count', '1', '--state', stateOf('ant')]);
  assert.match(pingOut, /^pong from bee via (lan|direct) (127\.0\.0\.1|\[::1\]):\d+ in \d+ms$/m);
  // knit netcheck: probes from the tunnel port against both STUN ports.
  const { stdout: nc } = await run(process.execPath, [BIN, 'netcheck', '--json', '--state', stateOf('ant')]);
  const check = JSON.parse(nc) as { result: { natType: string; answered: number; portPreserved: boolean }; port: number };
  assert.equal(check.result.answered, 2);
  assert.equal(check.result.natType, 'none', 'loopback: the observers see our own address and port');
  assert.equal(check.result.portPreserved, true);
  // The admin CLI against the running coordinator, remotely, with the admin token.
  const admin = /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(coord.out())![1]!;
  const { stdout: nodesOut } = await run(process.execPath, [BIN, 'nodes', '--json', '--coordinator', `http://127.0.0.1:${port}`], { env: { ...process.env, KNIT_ADMIN_TOKEN: admin } });
  const listed = JSON.parse(nodesOut) as { name: string; online: boolean }[];
  assert.deepEqual(listed.map((x) => x.name).sort(), names);
  assert.ok(listed.every((x) => x.online));
  // The mesh as it is: every agent's reported paths reach the coordinator (console, knit nodes).
  const adminEnv = { env: { ...process.env, KNIT_ADMIN_TOKEN: admin } };
  const reported = await until('every agent reported two connected paths', async () => {
    const list = JSON.parse((await run(process.execPath, [BIN, 'nodes', '--json', '--coordinator', `http://127.0.0.1:${port}`], adminEnv)).stdout) as { paths?: { kind: string }[] }[];
    return list.every((n) => n.paths?.length === 2 && n.paths.every((e) => e.kind === 'lan' || e.kind === 'direct')) ? list : undefined;
  });
  assert.equal(reported.length, 3);
  const { stdout: table } = await run(process.execPath, [BIN, 'nodes', '--coordinator', `http://127.0.0.1:${port}`], adminEnv);
  assert.match(table, /PATHS/);
  assert.match(table, /ant .* lan 2 direct 0 relay 0 none 0/);
  // Identity files are private.
  assert.equal(statSync(join(stateOf('ant'), 'node.key')).mode & 0o777, 0o600);
  const antBefore = docs.ant!.self;

  // Kill -9 an agent and restart it without the token: same identity and address, paths come back.
  agents.ant!.child.kill('SIGKILL');
  await agents.ant!.exited;
  agents.ant = start(upArgs('ant'));
  const again = await allConnected(names);
  assert.equal(again.ant!.self.nodeKey, antBefore.nodeKey);
  assert.deepEqual(again.ant!.self.ips, antBefore.ips);

  // Restart the coordinator: paths stay up while it is gone, control resumes afterwards.
  coord.child.kill('SIGKILL');
  await coord.exited;
  await until('agents notice the coordinator is gone', async () => (await status(stateOf('bee'))).coordinator.status !== 'connected');
  const during = await allConnected(names);
  assert.ok(Object.values(during).every((d) => d.peers.every((p) => p.path !== 'none')), 'paths stay up during the outage');
  coord = start(coordArgs);
  // An agent may have just drawn a reconnect delay of up to RECONNECT_CAP_MS (full jitter):
  // the wait covers that and the coordinator's start.
  await until('control resumes', async () => {
    for (const n of names) if ((await status(stateOf(n))).coordinator.status !== 'connected') return undefined;
    return true;
  }, { timeoutMs: RECONNECT_CAP_MS + 15_000 });
  await allConnected(names);

  // knit down leaves cleanly.
  for (const n of names) {
    await run(process.execPath, [BIN, 'down', '--state', stateOf(n)]);
    assert.equal(await agents[n]!.exited, 0);
  }
  assert.ok(!readFileSync(join(stateOf('ant'), 'node.json'), 'utf8').includes('privateKey'));
  coord.child.kill('SIGTERM');
  await coord.exited;
});

test('CLI input errors: one clear line and a non-zero exit', async () => {
  const cases: { args: string[]; code: number; match: RegExp }[] = [
    { args: ['up', '--bogus'], code: 2, match: /Unknown option/ },
    { args: ['up', '--token', 'not-a-token', '--state', join(root, 'x')], code: 1, match: /not a Knit join token/ },
    { args: ['up', '--engine', 'nope'], code: 2, match: /--engine must be one of/ },
    { args: ['up', '--port', '70000'], code: 2, match: /--port must be/ },
    { args: ['up', '--firewall', 'maybe'], code: 2, match: /--firewall must be one of/ },
    { args: ['status', '--state', join(root, 'nobody')], code: 1, match: /no agent is running/ },
    { args: ['frobnicate'], code: 2, match: /unknown command/ },
    { args: ['token', 'create', '--uses', '3', '--data', join(root, 'tokdata')], code: 2, match: /--uses needs --reusable/ },
  ];
  for (const c of cases) {
    const r = await run(process.execPath, [BIN, ...c.args]).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(r.code, c.code, c.args.join(' '));
    assert.match(r.stderr, c.match, c.args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
});

test('an unreachable coordinator in the token gives a clear error and exit 1', async () => {
  const coordDir = join(root, 'unreach');
  const c = start(['coordinator', '--listen', `127.0.0.1:${port + 2}`, '--stun', 'off', '--data', coordDir]);
  await until('ready', () => c.out().includes('coordinator ready'));
  const { stdout: token } = await run(process.execPath, [BIN, 'token', 'create', '--data', coordDir]);
  c.child.kill('SIGKILL');
  await c.exited;
  const r = await run(process.execPath, [BIN, ...upArgs('lonely', token.trim())]).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot reach the coordinator/);
  assert.ok(!r.stderr.includes(token.trim()), 'the token is never printed back');
});
