import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { KnitError } from '../../../shared/errors.js';
import { claimDataDir, runningCoordinatorPid } from '../../../coordinator/store/pidfile.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function dir(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-pid-'));
  dirs.push(d);
  return d;
}

/** The pid of a process that has already exited (so nobody holds it right now). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('one claim per data dir: a second one (even in this process) is KNIT_ERR_STORE_LOCKED until released', () => {
  const d = dir();
  assert.equal(runningCoordinatorPid(d), undefined);
  const release = claimDataDir(d);
  assert.equal(readFileSync(join(d, 'coordinator.pid'), 'utf8').trim(), String(process.pid));
  assert.equal(runningCoordinatorPid(d), process.pid, 'local admin commands see the live coordinator');
  assert.throws(() => claimDataDir(d), (e: unknown) => e instanceof KnitError && e.code === 'KNIT_ERR_STORE_LOCKED');
  release();
  release(); // idempotent
  assert.equal(existsSync(join(d, 'coordinator.pid')), false);
  claimDataDir(d)();
});

test('a stale pid file (dead process, garbage) is taken over', () => {
  for (const content of [`${deadPid()}\n`, 'not a pid\n', '']) {
    const d = dir();
    writeFileSync(join(d, 'coordinator.pid'), content);
    assert.equal(runningCoordinatorPid(d), undefined, JSON.stringify(content));
    const release = claimDataDir(d);
    assert.equal(readFileSync(join(d, 'coordinator.pid'), 'utf8').trim(), String(process.pid));
    release();
  }
});

test('a pid file naming a live Node process refuses the claim; a reused pid of another program does not', async () => {
  const node = spawn(process.execPath, ['-e', 'process.stdin.resume()'], { stdio: ['pipe', 'ignore', 'ignore'] });
  const cat = existsSync('/proc/self/cmdline') ? spawn('cat', [], { stdio: ['pipe', 'ignore', 'ignore'] }) : undefined;
  try {
    const d = dir();
    writeFileSync(join(d, 'coordinator.pid'), `${node.pid}\n`);
    assert.equal(runningCoordinatorPid(d), node.pid);
    assert.throws(() => claimDataDir(d), (e: unknown) => e instanceof KnitError && e.code === 'KNIT_ERR_STORE_LOCKED');
    if (cat) {
      const d2 = dir();
      writeFileSync(join(d2, 'coordinator.pid'), `${cat.pid}\n`);
      assert.equal(runningCoordinatorPid(d2), undefined, 'cat is not a coordinator: the file is stale');
      claimDataDir(d2)();
    }
  } finally {
    for (const c of [node, cat]) {
      if (!c) continue;
      const gone = new Promise((r) => c.once('exit', r));
      c.stdin!.end();
      c.kill();
      await gone;
    }
  }
});
