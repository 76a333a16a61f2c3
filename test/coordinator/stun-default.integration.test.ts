/**
 * The coordinator's STUN defaults in a real process on loopback: without
 * --stun2 it offers two ports (ready line, /healthz) and a Binding on each
 * answers; when the default second port is taken it still starts, with one
 * port, says so at warn, and /healthz shows the one port. (That the welcome
 * carries both and an agent's round gets both answers: test/cli/doctor.integration.test.ts.)
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { stunBinding } from '../../agent/doctor/probes.js';
import { until } from '../helpers/until.js';

const FIXTURE = join(process.cwd(), 'dist', 'test', 'coordinator', 'fixtures', 'cli.js');
const root = mkdtempSync(join(tmpdir(), 'knit-stun-default-'));
const children: ChildProcess[] = [];
const sockets: Socket[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of sockets) s.close();
  rmSync(root, { recursive: true, force: true });
});

interface LogLine { msg: string; level?: string; stun?: number[]; http?: string; err?: string }

async function startCoordinator(name: string, args: string[]): Promise<{ ready: LogLine; log: () => LogLine[] }> {
  const child = spawn(process.execPath, [FIXTURE, 'coordinator', '--listen', '127.0.0.1:0', '--relay', 'off', '--data', join(root, name), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const log = () => stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  const ready = await until('coordinator ready', () => log().find((l) => l.msg === 'coordinator ready'), { timeoutMs: 10_000, explain: () => stderr });
  return { ready, log };
}

async function healthz(http: string): Promise<{ stun: number[] }> {
  return (await (await fetch(`http://${http}/healthz`)).json()) as { stun: number[] };
}

/** A UDP port P that is free while P + 1 is held by `held` (so a coordinator's default second port collides). */
async function portBelowBusyOne(): Promise<number> {
  for (let tries = 0; tries < 20; tries++) {
    const held = createSocket('udp4');
    await new Promise<void>((r) => held.bind(0, '127.0.0.1', r));
    const p = held.address().port - 1;
    const probe = createSocket('udp4');
    const free = await new Promise<boolean>((r) => { probe.once('error', () => r(false)); probe.bind(p, '127.0.0.1', () => r(true)); });
    probe.close();
    if (free && p > 1024) return sockets.push(held), p;
    held.close();
  }
  throw new Error('no free port below a busy one');
}

test('a coordinator without --stun2 offers two STUN ports, and each answers a Binding', async () => {
  const { ready } = await startCoordinator('two', ['--stun', '127.0.0.1:0']);
  assert.equal(ready.stun?.length, 2, JSON.stringify(ready));
  assert.deepEqual((await healthz(ready.http!)).stun, ready.stun);
  for (const port of ready.stun!) {
    const mapped = await stunBinding({ address: '127.0.0.1', port });
    assert.equal(mapped?.address, '127.0.0.1', `STUN port ${port} answers`);
  }
});

test('the default second port taken: the coordinator starts with one port and says so at warn', async () => {
  const first = await portBelowBusyOne();
  const { ready, log } = await startCoordinator('busy', ['--stun', `127.0.0.1:${first}`]);
  assert.deepEqual(ready.stun, [first]);
  const warn = log().find((l) => l.level === 'warn' && /second STUN port not started/.test(l.msg));
  assert.ok(warn, 'a warning names the missing port');
  assert.match(warn.err!, new RegExp(`127\\.0\\.0\\.1:${first + 1}.*in use`));
  assert.deepEqual((await healthz(ready.http!)).stun, [first], '/healthz tells agents and doctor only one port is offered');
});

test('--stun2 off offers one port; --stun off none', async () => {
  const one = await startCoordinator('one', ['--stun', '127.0.0.1:0', '--stun2', 'off']);
  assert.equal(one.ready.stun?.length, 1);
  const none = await startCoordinator('none', ['--stun', 'off']);
  assert.deepEqual(none.ready.stun, []);
  assert.deepEqual((await healthz(none.ready.http!)).stun, []);
});
