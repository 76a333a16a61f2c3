#!/usr/bin/env node
// Runs every compiled *.test.js under dist/ with node's built-in test runner.
// Node 20's `node --test DIR` would also run every .js file under a folder
// named `test` (helpers included), so the list is built here explicitly.
// KNIT_TEST_FILTER=a,b narrows the run to files whose path contains any of the substrings.
//
// The run's output is also written to a log folder (KNIT_TEST_LOG_DIR, else a
// temporary one), where tests save the logs of the processes they start and
// list the secrets they mint (KNIT_TEST_SECRETS_FILE). Afterwards
// scripts/scan-secrets.mjs scans that folder: a token or private key in any
// log fails the run even if every test passed. The folder is kept when
// something failed (or when KNIT_TEST_LOG_DIR named it), removed otherwise.
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';

function collect(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) collect(path, out);
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

const filters = (process.env.KNIT_TEST_FILTER ?? '').split(',').filter(Boolean);
const files = collect('dist', []).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/ (did tsc run?)');
  process.exit(1);
}

const keepLogs = Boolean(process.env.KNIT_TEST_LOG_DIR);
const logDir = process.env.KNIT_TEST_LOG_DIR || mkdtempSync(join(tmpdir(), 'knit-test-logs-'));
mkdirSync(logDir, { recursive: true });
const secretsFile = join(logDir, 'secrets.txt');
const outputLog = join(logDir, 'test-output.log');
writeFileSync(secretsFile, '', { mode: 0o600 });
writeFileSync(outputLog, '');

// The spec reporter for people at a terminal, TAP otherwise (what `node --test` itself would pick).
const reporter = process.stdout.isTTY ? ['--test-reporter=spec'] : [];
const args = ['--test', '--test-concurrency=2', ...reporter, ...process.argv.slice(2), ...files];
const child = spawn(process.execPath, args, {
  stdio: ['inherit', 'pipe', 'pipe'],
  env: { ...process.env, KNIT_TEST_LOG_DIR: logDir, KNIT_TEST_SECRETS_FILE: secretsFile, ...(process.stdout.isTTY ? { FORCE_COLOR: '1' } : {}) },
});
child.stdout.on('data', (d) => { process.stdout.write(d); appendFileSync(outputLog, d); });
child.stderr.on('data', (d) => { process.stderr.write(d); appendFileSync(outputLog, d); });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
const status = await new Promise((resolve) => child.once('close', (code, signal) => resolve(code ?? (signal ? 1 : 0))));

const scan = spawnSync(process.execPath, [join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, 'scan-secrets.mjs'), '--secrets', secretsFile, logDir], { stdio: 'inherit' });
const failed = status !== 0 || scan.status !== 0;
if (failed) console.error(`run-tests: logs kept in ${logDir}`);
else if (!keepLogs) rmSync(logDir, { recursive: true, force: true });
process.exit(status !== 0 ? status : scan.status ?? 1);
