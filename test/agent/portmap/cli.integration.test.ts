/**
 * The port-mapping flags of `knit up` are validated before anything runs:
 * one clear line on stderr and exit 2 (usage).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const BIN = join(process.cwd(), 'bin', 'knit.js');

function knit(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 15_000 }, (err, _out, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });
}

test('knit up: --port-mapping-protocols and --no-port-mapping are validated', async () => {
  const cases: { args: string[]; match: RegExp }[] = [
    { args: ['up', '--port-mapping-protocols', 'pcp,bogus'], match: /--port-mapping-protocols must be a comma-separated list of pcp, natpmp, upnp/ },
    { args: ['up', '--port-mapping-protocols', 'pcp,pcp'], match: /each at most once/ },
    { args: ['up', '--port-mapping-protocols', ''], match: /--port-mapping-protocols must be/ },
    { args: ['up', '--no-port-mapping', '--port-mapping-protocols', 'upnp'], match: /contradict/ },
    { args: ['up', '--no-port-mapping=yes'], match: /no-port-mapping/ },
  ];
  for (const c of cases) {
    const r = await knit(c.args);
    assert.equal(r.code, 2, `${c.args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, c.match);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
  const help = await new Promise<string>((resolve) => execFile(process.execPath, [BIN, 'up', '--help'], (_e, out) => resolve(out)));
  assert.match(help, /--no-port-mapping/);
});
