/**
 * `knit doctor` in real processes on loopback: a coordinator with its
 * defaults (two STUN ports, its relay) and an agent with the memory engine.
 * With the agent running nothing fails (exit 0), the welcome carried both
 * STUN ports and the agent's own round got both answers; with the agent
 * stopped, `agent` fails (exit 1) and the checks that don't need it still run.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { callAgent } from '../../agent/api/client.js';
import type { HealthCheck } from '../../agent/health.js';
import { socketPath } from '../../agent/state.js';
import type { StatusDocument } from '../../agent/status.js';
import { until } from '../helpers/until.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'knit.js');
const root = mkdtempSync(join(tmpdir(), 'knit-doctor-'));
const procs = new Set<ChildProcess>();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

function start(args: string[]): { child: ChildProcess; out: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(child);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  child.once('exit', () => procs.delete(child));
  return { child, out: () => out };
}

function doctor(state: string): { code: number | null; checks: HealthCheck[] } {
  const r = spawnSync(process.execPath, [BIN, 'doctor', '--json', '--state', state], { encoding: 'utf8', timeout: 30_000 });
  const doc = JSON.parse(r.stdout) as { checks: HealthCheck[] };
  for (const c of doc.checks) {
    assert.deepEqual(Object.keys(c).filter((k) => !['check', 'level', 'detail', 'fix'].includes(k)), [], 'HealthCheck fields only');
    assert.ok(['ok', 'warn', 'fail'].includes(c.level) && typeof c.detail === 'string' && c.detail.length > 0, JSON.stringify(c));
  }
  return { code: r.status, checks: doc.checks };
}

const level = (checks: HealthCheck[], name: string) => checks.find((c) => c.check === name)?.level;

test('knit doctor: no state at all → agent and coordinator fail, exit 1', () => {
  const r = doctor(join(root, 'nothing-here'));
  assert.equal(r.code, 1);
  assert.deepEqual(r.checks.map((c) => [c.check, c.level]), [['agent', 'fail'], ['coordinator', 'fail']]);
  assert.match(r.checks[0]!.fix!, /knit up/);
});

test('knit doctor against a running agent (exit 0, nothing fails) and after it stopped (exit 1, the rest still checked)', async () => {
  const coord = start(['coordinator', '--listen', '127.0.0.1:0', '--stun', '127.0.0.1:0', '--data', join(root, 'coord'), '--allow-loopback-endpoints']);
  await until('coordinator ready', () => coord.out().includes('coordinator ready'), { timeoutMs: 15_000, explain: coord.out });
  const { stdout: token } = await run(process.execPath, [BIN, 'token', 'create', '--data', join(root, 'coord')]);
  const state = join(root, 'ant');
  const agent = start(['up', '--token', token.trim(), '--engine', 'memory', '--port', '0', '--state', state, '--interfaces', 'lo', '--hostname', 'ant', '--no-port-mapping', '--no-lan-discovery']);
  const status = await until('agent connected, NAT classified', async () => {
    const s = (await callAgent(socketPath(state), 'GET', '/v1/status')) as StatusDocument;
    return s.coordinator.status === 'connected' && s.self.natType !== 'unknown' && s;
  }, { timeoutMs: 20_000, explain: agent.out });
  assert.equal(status.self.natType, 'none', 'loopback: both observers see our own address and port');

  // The welcome carried both STUN ports, and a round from the tunnel port gets both answers.
  const nc = (await callAgent(socketPath(state), 'POST', '/v1/netcheck')) as { servers: string[]; result?: { answered: number; asked: number } };
  assert.equal(nc.servers.length, 2, JSON.stringify(nc));
  assert.deepEqual([nc.result?.answered, nc.result?.asked], [2, 2]);

  const running = doctor(state);
  assert.equal(running.code, 0, JSON.stringify(running.checks, null, 2));
  assert.equal(running.checks[0]!.check, 'agent');
  for (const name of ['agent', 'coordinator', 'stun', 'relay', 'portmap', 'clock']) assert.equal(level(running.checks, name), 'ok', `${name}: ${JSON.stringify(running.checks)}`);
  assert.match(running.checks.find((c) => c.check === 'stun')!.detail, /ports \d+, \d+ answer; NAT type none/);
  assert.ok(!running.checks.some((c) => c.level === 'fail'));

  await run(process.execPath, [BIN, 'down', '--state', state]);
  await until('agent gone', () => agent.child.exitCode !== null, { timeoutMs: 15_000 });
  const stopped = doctor(state);
  assert.equal(stopped.code, 1);
  assert.equal(level(stopped.checks, 'agent'), 'fail');
  assert.equal(level(stopped.checks, 'coordinator'), 'ok', 'node.json still names the coordinator');
  assert.equal(level(stopped.checks, 'stun'), 'ok', 'STUN is probed from this host without the agent');
  assert.equal(level(stopped.checks, 'clock'), 'ok');

  const text = spawnSync(process.execPath, [BIN, 'doctor', '--state', state], { encoding: 'utf8' });
  assert.equal(text.status, 1);
  assert.match(text.stdout, /^fail\s+agent\s+/m);
  assert.match(text.stdout, /^ok\s+stun\s+/m);
});
