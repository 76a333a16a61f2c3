/**
 * `knit install-service`: the units it writes are valid systemd units
 * (systemd-analyze verify, where systemd is installed), their ExecStart runs
 * as written, SIGTERM — systemd's stop — ends each cleanly (exit 0), and a
 * restart comes back with the same state. There is no systemd to run them
 * under here, so the service manager's part is played by this test.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { serviceUnit } from '../../cli/service.js';
import { until } from '../helpers/until.js';

const BIN = join(process.cwd(), 'bin', 'knit.js');
const root = mkdtempSync(join(tmpdir(), 'knit-svc-'));
after(() => rmSync(root, { recursive: true, force: true }));
const run = promisify(execFile);

const haveAnalyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' }).status === 0;

test('units for both services: foreground command, restart on failure but not on usage errors, journald identity', () => {
  const c = serviceUnit('coordinator', { node: '/usr/bin/node', knit: '/opt/knit/bin/knit.js', args: ['--listen', '0.0.0.0:8080'] });
  assert.match(c, /^ExecStart=\/usr\/bin\/node \/opt\/knit\/bin\/knit\.js coordinator --data \/var\/lib\/knit-coordinator --listen 0\.0\.0\.0:8080$/m);
  assert.match(c, /^DynamicUser=yes$/m);
  assert.match(c, /^StateDirectory=knit-coordinator$/m);
  const a = serviceUnit('agent', { node: '/usr/bin/node', knit: '/opt/knit/bin/knit.js', args: ['--state', '/srv/knit'] });
  assert.match(a, /^ExecStart=\/usr\/bin\/node \/opt\/knit\/bin\/knit\.js up --state \/srv\/knit$/m, 'a given --state replaces the default');
  for (const u of [c, a]) {
    assert.match(u, /^Restart=on-failure$/m);
    assert.match(u, /^RestartPreventExitStatus=2$/m);
    assert.match(u, /^KillSignal=SIGTERM$/m);
    assert.match(u, /^SyslogIdentifier=knit-(coordinator|agent)$/m);
    assert.doesNotMatch(u, /daemon|fork/i, 'the service manager supervises a foreground process');
  }
});

test('install-service writes the unit (mode 644); bad input is a usage error that writes nothing', async (t) => {
  const dest = join(root, 'sysroot');
  spawnSync('mkdir', ['-p', dest]);
  await run(process.execPath, [BIN, 'install-service', 'agent', '--root', dest, '--', '--engine', 'kernel']);
  const path = join(dest, 'etc/systemd/system/knit-agent.service');
  assert.equal(statSync(path).mode & 0o777, 0o644);
  assert.match(readFileSync(path, 'utf8'), /up --state \/var\/lib\/knit --engine kernel$/m);
  if (haveAnalyze) {
    const v = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stderr.trim(), '', 'systemd has no complaint about the unit');
  } else t.diagnostic('systemd-analyze not installed: unit syntax not verified by systemd');
  for (const bad of [['install-service'], ['install-service', 'daemon'], ['install-service', 'agent', '--', 'a b'], ['install-service', 'agent', '--', '$(reboot)'], ['install-service', 'agent', '--nope']]) {
    const r = spawnSync(process.execPath, [BIN, ...bad, '--root', dest], { encoding: 'utf8' });
    assert.equal(r.status, 2, bad.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  const missing = spawnSync(process.execPath, [BIN, 'install-service', 'agent', '--root', join(root, 'nope')], { encoding: 'utf8' });
  assert.equal(missing.status, 2);
});

/** The ExecStart line of a unit, as argv. */
function execStart(unit: string): string[] {
  return /^ExecStart=(.*)$/m.exec(unit)![1]!.split(' ');
}

test('the coordinator unit\'s command: starts, stops cleanly on SIGTERM, restarts with its state', async () => {
  const port = 20000 + (process.pid % 10000);
  const data = join(root, 'coord');
  const unit = serviceUnit('coordinator', { node: process.execPath, knit: BIN, args: ['--data', data, '--listen', `127.0.0.1:${port}`, '--stun', `127.0.0.1:${port}`, '--relay', 'off'] });
  const [node, ...argv] = execStart(unit);
  const once = async () => {
    const child = spawn(node!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until('coordinator ready', () => out.includes('coordinator ready'), { timeoutMs: 20_000 });
    const health = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json() as { ok: boolean };
    assert.equal(health.ok, true);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'SIGTERM is a clean stop');
    return out;
  };
  const first = await once();
  assert.match(first, /Admin token/);
  const second = await once();
  assert.doesNotMatch(second, /Admin token/, 'the restart found its state (the admin token is shown once)');
});

test('the agent unit\'s command: SIGTERM leaves cleanly (exit 0), a restart resumes the same identity', async () => {
  const port = 21000 + (process.pid % 9000);
  const data = join(root, 'coord2');
  const coord = spawn(process.execPath, [BIN, 'coordinator', '--data', data, '--listen', `127.0.0.1:${port}`, '--stun', `127.0.0.1:${port}`, '--relay', 'off', '--allow-loopback-endpoints'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let cout = '';
  coord.stdout.on('data', (d) => { cout += d; });
  coord.stderr.on('data', (d) => { cout += d; });
  try {
    await until('coordinator ready', () => cout.includes('coordinator ready'), { timeoutMs: 20_000 });
    const token = (await run(process.execPath, [BIN, 'token', 'create', '--data', data])).stdout.trim();
    const state = join(root, 'agent');
    const unit = serviceUnit('agent', { node: process.execPath, knit: BIN, args: ['--state', state, '--engine', 'memory', '--port', '0', '--interfaces', 'lo', '--hostname', 'svc'] });
    const [node, ...argv] = execStart(unit);
    const once = async (extra: string[]) => {
      const child = spawn(node!, [...argv, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      await until('agent up', () => out.includes('knit: up:'), { timeoutMs: 20_000 });
      child.kill('SIGTERM');
      assert.equal(await exited, 0, 'SIGTERM is a clean stop');
      assert.match(out, /knit: down/);
      return readFileSync(join(state, 'node.json'), 'utf8');
    };
    const first = await once(['--token', token]); // the first start joins (a unit would run with the token once)
    const second = await once([]);
    assert.equal(second, first, 'same node record: same identity and mesh address');
  } finally {
    coord.kill('SIGTERM');
  }
});
