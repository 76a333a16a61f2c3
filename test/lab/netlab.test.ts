// The lab's teardown guarantees: it removes its own namespaces and processes and
// nothing else, and a process that dies without tearing down (exit or SIGTERM)
// still leaves nothing behind.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it, test } from 'node:test';
import { canRunLab, createLab } from './netlab.js';

const check = canRunLab();

const namespaces = () =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);

/** Whether the process still runs: a zombie (killed, not yet reaped by init) counts as gone. */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** Runs a node child that builds a lab, reports it, then dies the given way without teardown. */
async function labInDyingChild(how: 'exit' | 'SIGTERM'): Promise<{ prefix: string; pid: number }> {
  const netlab = fileURLToPath(new URL('./netlab.js', import.meta.url));
  const script = `
    const { createLab } = await import(${JSON.stringify(netlab)});
    const lab = await createLab();
    const host = await lab.addHost('h');
    const p = lab.spawn(host.ns, ['sleep', '300']);
    console.log(JSON.stringify({ prefix: lab.prefix, pid: p.pid }));
    if (${JSON.stringify(how)} === 'exit') process.exit(3);
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const exited = once(child, 'exit');
  const info = await new Promise<{ prefix: string; pid: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the child did not build its lab in time')), 15_000);
    child.stdout.on('data', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) { clearTimeout(timer); resolve(JSON.parse(line)); }
    });
  });
  if (how === 'SIGTERM') child.kill('SIGTERM');
  await exited;
  return info;
}

if (!check.ok) {
  test('lab harness', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('lab harness teardown', () => {
    it('removes its namespaces and processes, and leaves a stranger namespace alone', async () => {
      const lab = await createLab();
      const stranger = `${lab.prefix.replace(/-$/, '')}x-stranger`; // shares the run's digits, not its prefix
      execFileSync('ip', ['netns', 'add', stranger]);
      try {
        const host = await lab.addHost('h');
        const p = lab.spawn(host.ns, ['sleep', '300']);
        assert.ok(namespaces().some((n) => n.startsWith(lab.prefix)));
        await lab.teardown();
        await lab.teardown(); // idempotent
        assert.equal(alive(p.pid), false);
        assert.deepEqual(namespaces().filter((n) => n.startsWith(lab.prefix)), []);
        assert.ok(namespaces().includes(stranger));
      } finally {
        execFileSync('ip', ['netns', 'del', stranger]);
      }
    });

    for (const how of ['exit', 'SIGTERM'] as const) {
      it(`cleans up after a process that ends by ${how} without tearing down`, async () => {
        const { prefix, pid } = await labInDyingChild(how);
        assert.match(prefix, /^kn\d+[a-z]-$/);
        assert.deepEqual(namespaces().filter((n) => n.startsWith(prefix)), []);
        assert.equal(alive(pid), false);
      });
    }
  });
}
