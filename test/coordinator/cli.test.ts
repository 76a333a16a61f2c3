/**
 * Usage errors of the coordinator's commands, in process: they must be
 * caught before anything is opened, so no store, socket or process is needed.
 * Exit code 2, exactly one line on stderr, nothing on stdout.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR_COMMANDS, parseHostPort, runCoordinatorCli, stunOptions } from '../../coordinator/cli.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Runs the CLI with console output captured (and the admin token variable unset). */
async function capture(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' };
  const { log, error } = console;
  const saved = process.env.KNIT_ADMIN_TOKEN;
  console.log = (...a: unknown[]) => { out.stdout += a.join(' ') + '\n'; };
  console.error = (...a: unknown[]) => { out.stderr += a.join(' ') + '\n'; };
  delete process.env.KNIT_ADMIN_TOKEN;
  try {
    return { code: await runCoordinatorCli(argv), ...out };
  } finally {
    console.log = log;
    console.error = error;
    if (saved !== undefined) process.env.KNIT_ADMIN_TOKEN = saved;
  }
}

test('usage errors: exit 2, exactly one line on stderr, nothing on stdout, nothing created', async () => {
  const d = mkdtempSync(join(tmpdir(), 'knit-cli-'));
  dirs.push(d);
  const data = join(d, 'data');
  const cases = [
    ['coordinator', '--bogus'],
    ['coordinator', '--listen', 'localhost:8080'],
    ['coordinator', '--listen', '127.0.0.1:99999'],
    ['coordinator', '--stun', 'off', '--stun2', '127.0.0.1:3479'],
    ['coordinator', '--stun2', 'localhost:3479'],
    ['coordinator', '--ipv4-prefix', '10.0.0.0/31'],
    ['coordinator', '--ephemeral-timeout', 'soon'],
    ['coordinator', '--url', 'ftp://x'],
    ['coordinator', 'extra-positional'],
    ['token'],
    ['token', 'frobnicate'],
    ['token', 'create', 'extra', '--data', data],
    ['token', 'create', '--uses', '3', '--data', data],
    ['token', 'create', '--reusable', '--uses', 'many', '--data', data],
    ['token', 'create', '--expires', 'tomorrow', '--data', data],
    ['token', 'create', '--expires', '400d', '--data', data],
    ['token', 'create', '--tags', 'Bad Tag', '--data', data],
    ['token', 'revoke', '--data', data],
    ['token', 'list', '--data', data, '--coordinator', 'http://127.0.0.1:1'],
    ['token', 'list', '--coordinator', 'http://127.0.0.1:1'], // no KNIT_ADMIN_TOKEN
    ['token', 'list', '--coordinator', 'not a url'],
    ['nodes', 'remove', '--data', data],
    ['nodes', 'remove', 'x7', '--data', data],
    ['nodes', 'list', 'more', '--data', data],
    ['nodes', 'explode', '--data', data],
    ['nodes', '--json=yes', '--data', data],
    ['launch-missiles'],
    ['coordinator', '--store', 'mysql://knit:hunter2-not-here@db/knit'],
    ['coordinator', '--store', 'postgres://'],
    ['token', 'list', '--store', 'postgres://knit:hunter2-not-here@db/knit', '--data', data],
    ['nodes', 'list', '--store', 'sqlite:./x.db'],
  ];
  for (const argv of cases) {
    const r = await capture(argv);
    const what = argv.join(' ');
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /^knit [a-z-]+: /, what);
    assert.equal(r.stdout, '', what);
    assert.ok(!r.stderr.includes('hunter2'), `${what}: a store password is never echoed`);
  }
  assert.equal(existsSync(data), false, 'no data dir was created by a refused command');
  assert.deepEqual(readdirSync(d), []);
});

test('--help prints the command\'s help on stdout and exits 0', async () => {
  for (const cmd of ['coordinator', 'token', 'nodes'] as const) {
    const r = await capture([cmd, '--help']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), COORDINATOR_COMMANDS[cmd]);
  }
});

test('HOST:PORT parsing for --listen/--stun', () => {
  assert.deepEqual(parseHostPort('0.0.0.0:3478', 'stun'), { host: '0.0.0.0', port: 3478 });
  assert.deepEqual(parseHostPort('[::1]:8080', 'listen'), { host: '::1', port: 8080 });
  for (const bad of ['8080', 'host:80', '1.2.3.4:', '1.2.3.4:65536', '[::1:80', '::1:80']) {
    assert.throws(() => parseHostPort(bad, 'listen'), (e: unknown) => (e as { code?: string }).code === 'KNIT_ERR_USAGE', bad);
  }
});

test('STUN ports: two by default (the second optional, at port + 1), --stun2 to choose or refuse, --stun off for none', () => {
  const cases: { flags: { stun?: string; stun2?: string }; want: ReturnType<typeof stunOptions> }[] = [
    { flags: {}, want: [{ host: '0.0.0.0', port: 3478 }, { host: '0.0.0.0', port: 3479, optional: true }] },
    { flags: { stun: '198.18.0.1:3478' }, want: [{ host: '198.18.0.1', port: 3478 }, { host: '198.18.0.1', port: 3479, optional: true }] },
    { flags: { stun: '127.0.0.1:0' }, want: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0, optional: true }] },
    { flags: { stun: '127.0.0.1:65535' }, want: [{ host: '127.0.0.1', port: 65535 }, { host: '127.0.0.1', port: 0, optional: true }] },
    { flags: { stun: '[::1]:3478' }, want: [{ host: '::1', port: 3478 }, { host: '::1', port: 3479, optional: true }] },
    { flags: { stun2: '0.0.0.0:5000' }, want: [{ host: '0.0.0.0', port: 3478 }, { host: '0.0.0.0', port: 5000 }] },
    { flags: { stun: '127.0.0.1:0', stun2: '127.0.0.1:0' }, want: [{ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }] },
    { flags: { stun2: 'off' }, want: [{ host: '0.0.0.0', port: 3478 }] },
    { flags: { stun: 'off' }, want: [] },
    { flags: { stun: 'off', stun2: 'off' }, want: [] },
  ];
  for (const c of cases) assert.deepEqual(stunOptions(c.flags), c.want, JSON.stringify(c.flags));
  for (const bad of [{ stun: 'off', stun2: '127.0.0.1:3479' }, { stun2: '3479' }, { stun: 'on' }]) {
    assert.throws(() => stunOptions(bad), (e: unknown) => (e as { code?: string }).code === 'KNIT_ERR_USAGE', JSON.stringify(bad));
  }
});
