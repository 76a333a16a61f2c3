/**
 * The CLI contract, for every command at once: `knit help <command>` works and
 * is what docs/cli.md shows; an unknown flag is a usage error (exit 2) told in
 * one line that names the command; `--version` is the package's version.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { COMMAND_NAMES } from '../../cli/main.js';

const BIN = join(process.cwd(), 'bin', 'knit.js');
const knit = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
const doc = readFileSync(join(process.cwd(), 'docs', 'cli.md'), 'utf8');

test('every command has help, documented verbatim in docs/cli.md (node scripts/cli-doc.mjs regenerates it)', () => {
  for (const c of COMMAND_NAMES) {
    const r = knit('help', c);
    assert.equal(r.status, 0, `knit help ${c}: ${r.stderr}`);
    assert.match(r.stdout, /usage: knit /, c);
    assert.ok(doc.includes(r.stdout.trimEnd()), `docs/cli.md is out of date for "knit ${c}": run npm run build && node scripts/cli-doc.mjs`);
    assert.equal(knit(c, '--help').stdout, r.stdout, `knit ${c} --help is knit help ${c}`);
  }
});

test('every command refuses an unknown flag: exit 2, one line naming the command', () => {
  for (const c of COMMAND_NAMES) {
    const r = knit(c, '--no-such-flag');
    assert.equal(r.status, 2, `knit ${c}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `knit ${c}: ${r.stderr}`);
    assert.match(lines[0]!, new RegExp(`^knit ${c}: .*--no-such-flag`));
  }
});

test('--version, --help, and unknown commands', () => {
  const pkg = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { version: string };
  assert.equal(knit('--version').stdout.trim(), pkg.version);
  const help = knit('--help');
  assert.equal(help.status, 0);
  for (const c of COMMAND_NAMES) assert.match(help.stdout, new RegExp(`^  ${c} `, 'm'));
  assert.equal(knit().status, 2, 'no command is a usage error');
  const unknown = knit('frobnicate');
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  assert.equal(knit('help', 'frobnicate').status, 2);
});
