#!/usr/bin/env node
// Runs every compiled *.test.js under dist/ with node's built-in test runner.
// Node 20's `node --test DIR` would also run every .js file under a folder
// named `test` (helpers included), so the list is built here explicitly.
// KNIT_TEST_FILTER=a,b narrows the run to files whose path contains any of the substrings.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

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
const args = ['--test', '--test-concurrency=2', ...process.argv.slice(2), ...files];
const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(result.status ?? 1);
