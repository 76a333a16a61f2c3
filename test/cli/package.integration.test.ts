/**
 * What `npm pack` ships is a working `knit`: the file list holds the runtime
 * (bin, compiled code, console assets, docs) and no tests; every package the
 * shipped code imports is a declared runtime dependency (a devDependency would
 * work here and break after `npm install -g`); and the unpacked package runs —
 * version, help, a coordinator that answers /healthz (and /ui when the
 * console exists) — from outside this checkout. Installing from the registry
 * is the one step this can't do without leaving loopback; its dependencies are
 * the repo's own node_modules, linked in.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { until } from '../helpers/until.js';

const repo = process.cwd();
const work = mkdtempSync(join(tmpdir(), 'knit-pack-'));
after(() => rmSync(work, { recursive: true, force: true }));
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };

/** `npm pack`, without re-running the build: `npm test` has just compiled dist/. */
function pack(extra: string[]): string {
  return execFileSync('npm', ['pack', '--ignore-scripts', '--json', ...extra], { cwd: repo, encoding: 'utf8', timeout: 120_000 });
}

test('the package holds the runtime and no tests; shipped code imports only declared dependencies', () => {
  const files = (JSON.parse(pack(['--dry-run'])) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  for (const must of ['bin/knit.js', 'dist/cli/main.js', 'dist/coordinator/index.js', 'dist/agent/agent.js', 'README.md', 'docs/cli.md', 'package.json']) {
    assert.ok(files.includes(must), `${must} is shipped`);
  }
  assert.deepEqual(files.filter((f) => f.startsWith('dist/test/') || f.startsWith('test/') || /\.test\.js$/.test(f)), [], 'no tests shipped');
  if (existsSync(join(repo, 'coordinator', 'ui'))) assert.ok(files.some((f) => f.includes('ui/')), 'the console\'s assets are shipped');
  const builtins = new Set(builtinModules);
  const missing = new Set<string>();
  for (const f of files.filter((x) => x.endsWith('.js'))) {
    const text = readFileSync(join(repo, f), 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)['"]([^'".][^'"]*)['"]/g)) {
      const spec = m[1]!.replace(/^node:/, '');
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      if (!builtins.has(name) && !(name in pkg.dependencies)) missing.add(`${name} (in ${f})`);
    }
  }
  assert.deepEqual([...missing], [], 'imported by shipped code but not a runtime dependency');
});

test('the unpacked package runs: version, help, and a coordinator on loopback', async () => {
  const [{ filename }] = JSON.parse(pack(['--pack-destination', work])) as { filename: string }[];
  execFileSync('tar', ['xzf', join(work, filename!), '-C', work]);
  const root = join(work, 'package');
  symlinkSync(join(repo, 'node_modules'), join(root, 'node_modules'));
  const knit = join(root, 'bin', 'knit.js');
  assert.equal(execFileSync(process.execPath, [knit, '--version'], { encoding: 'utf8' }).trim(), pkg.version);
  assert.match(execFileSync(process.execPath, [knit, 'help', 'up'], { encoding: 'utf8' }), /usage: knit up/);
  const port = 22000 + (process.pid % 9000);
  const child = spawn(process.execPath, [knit, 'coordinator', '--listen', `127.0.0.1:${port}`, '--stun', `127.0.0.1:${port}`, '--relay', 'off', '--data', join(work, 'data')], { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    await until('the packed coordinator is ready', () => out.includes('coordinator ready'), { timeoutMs: 30_000, explain: () => out });
    assert.equal(((await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { ok: boolean }).ok, true);
    if (existsSync(join(repo, 'coordinator', 'ui'))) assert.equal((await fetch(`http://127.0.0.1:${port}/ui`)).status, 200, 'the console is served from the package');
  } finally {
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
