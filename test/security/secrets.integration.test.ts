/**
 * Secrets never reach a log line or an error message.
 *   1. End to end: a coordinator and two agents (memory engine, loopback only)
 *      run at debug log level, plus the error paths a user hits (a forged join
 *      token, a wrong admin token, an unreachable coordinator). Every log and
 *      error they print is searched for each token, node private key and the
 *      coordinator's private key, in every encoding — and saved for the CI scan.
 *   2. The scanner itself (scripts/scan-secrets.mjs, run by `npm test` over all
 *      saved logs) finds planted secrets and passes clean logs.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { generateKeyPair, encodeKey } from '../../shared/crypto/keys.js';
import { encodeToken, parseToken } from '../../shared/token.js';
import { until } from '../helpers/until.js';
import { coordinatorTestFlags, registerSecret, saveTestLog } from './log-secrets.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'knit.js');
const SCANNER = join(process.cwd(), 'scripts', 'scan-secrets.mjs');
const root = mkdtempSync(join(tmpdir(), 'knit-secrets-'));
const procs = new Set<ChildProcess>();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

const env = { ...process.env, KNIT_LOG_LEVEL: 'debug' };

interface Proc { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> }
function start(args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  procs.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { procs.delete(child); r(code); }));
  return { child, out: () => out, err: () => err, exited };
}

async function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [BIN, ...args], { env: { ...env, ...extraEnv } }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/** Every text form a secret could be logged in. */
function forms(secret: string): string[] {
  const out = [secret];
  if (secret.startsWith('knit_')) {
    const s = Buffer.from(parseToken(secret)!.secret);
    out.push(secret.slice(5, 45), s.toString('hex'), s.toString('base64'), s.toString('base64url'));
  } else {
    const b = Buffer.from(secret, 'base64');
    out.push(b.toString('hex'), b.toString('base64url'));
  }
  return out;
}

test('a coordinator and two agents at debug level, and the error paths users hit, never print a token or private key', async () => {
  const coordDir = join(root, 'coord');
  const coord = start(['coordinator', '--listen', '127.0.0.1:0', '--stun', '127.0.0.1:0', ...coordinatorTestFlags(BIN), '--data', coordDir, '--allow-loopback-endpoints']);
  const ready = await until('coordinator ready', () => coord.err().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.msg === 'coordinator ready'), { timeoutMs: 20_000 });
  const url = `http://${ready.http}`;
  const admin = /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(coord.out())![1]!;
  const made = await cli(['token', 'create', '--reusable', '--data', coordDir]);
  assert.equal(made.code, 0, made.stderr);
  const token = made.stdout.trim();
  registerSecret(admin, token);

  const agents = ['ant', 'bee'].map((name) => ({ name, state: join(root, name), p: start(['up', '--token', token, '--engine', 'memory', '--port', '0', '--state', join(root, name), '--interfaces', 'lo', '--hostname', name]) }));
  await until('both agents see each other on a direct path', async () => {
    for (const a of agents) {
      const s = await cli(['status', '--json', '--state', a.state]);
      if (s.code !== 0) return undefined;
      const doc = JSON.parse(s.stdout) as { peers: { path: string }[] };
      if (doc.peers.length !== 1 || !['lan', 'direct'].includes(doc.peers[0]!.path)) return undefined;
    }
    return true;
  }, { timeoutMs: 30_000, explain: () => agents.map((a) => a.p.err()).join('\n') });

  // The error paths: each prints one line, and none of them prints the secret it was given.
  const t = parseToken(token)!;
  const forged = encodeToken({ kind: 'join', id: Buffer.from(t.id, 'hex'), secret: new Uint8Array(32).fill(1), coordinatorKey: Buffer.from(t.coordinatorKey, 'base64'), url: t.url });
  const wrongAdmin = encodeToken({ kind: 'admin', id: new Uint8Array(8).fill(2), secret: new Uint8Array(32).fill(3), coordinatorKey: Buffer.from(t.coordinatorKey, 'base64'), url: t.url });
  const unreachable = encodeToken({ kind: 'join', id: new Uint8Array(8).fill(4), secret: new Uint8Array(32).fill(5), coordinatorKey: Buffer.from(t.coordinatorKey, 'base64'), url: 'http://127.0.0.1:1' });
  registerSecret(forged, wrongAdmin, unreachable);
  const errors = [
    await cli(['up', '--token', forged, '--engine', 'memory', '--port', '0', '--state', join(root, 'forged'), '--interfaces', 'lo', '--hostname', 'forged']),
    await cli(['up', '--token', unreachable, '--engine', 'memory', '--port', '0', '--state', join(root, 'unreach'), '--interfaces', 'lo', '--hostname', 'unreach']),
    await cli(['nodes', '--json', '--coordinator', url], { KNIT_ADMIN_TOKEN: wrongAdmin }),
    await cli(['nodes', '--json', '--coordinator', url], { KNIT_ADMIN_TOKEN: 'knit_garbage' }),
    await cli(['up', '--token', token.slice(0, 60), '--state', join(root, 'cut')]),
  ];
  for (const e of errors) assert.notEqual(e.code, 0, e.stderr);

  // The node keys (files written by the agents) and the coordinator's key (in its database).
  const nodeKeys = agents.map((a) => readFileSync(join(a.state, 'node.key'), 'utf8').trim());
  for (const a of agents) {
    await cli(['down', '--state', a.state]);
    await a.p.exited;
  }
  coord.child.kill('SIGTERM');
  assert.equal(await coord.exited, 0);
  const db = new Database(join(coordDir, 'knit.db'), { readonly: true });
  const coordKey = (db.prepare("SELECT value FROM meta WHERE key = 'coordinator_private_key'").get() as { value: string }).value;
  db.close();
  registerSecret(...nodeKeys, coordKey);

  const logs: [string, string][] = [
    ['coordinator stderr', coord.err()],
    ['coordinator stdout without the admin token it prints once by design', coord.out().replace(admin, '[admin token]')],
    ['token create stderr', made.stderr],
    ...agents.flatMap((a) => [[`${a.name} stderr`, a.p.err()], [`${a.name} stdout`, a.p.out()]] as [string, string][]),
    ...errors.map((e, i) => [`error path ${i}`, e.stdout + e.stderr] as [string, string]),
  ];
  for (const [name, text] of logs) saveTestLog(`secrets-e2e-${name.split(' ').slice(0, 2).join('-')}`, text);
  assert.ok(coord.err().split('\n').length > 5 && agents.every((a) => a.p.err().length > 0), 'there were logs to search');
  for (const secret of [admin, token, forged, wrongAdmin, unreachable, ...nodeKeys, coordKey]) {
    for (const form of forms(secret)) {
      for (const [name, text] of logs) assert.ok(!text.includes(form), `${name} contains a secret (${form.slice(0, 8)}…)`);
    }
  }
  const { scan } = (await import(pathToFileURL(SCANNER).href)) as { scan: (paths: string[], secrets: string[]) => unknown[] };
  const dir = join(root, 'logs');
  mkdirSync(dir);
  logs.forEach(([, text], i) => writeFileSync(join(dir, `${i}.log`), text));
  assert.deepEqual(scan([dir], [admin, token, forged, wrongAdmin, unreachable, ...nodeKeys, coordKey]), [], 'the CI scanner agrees');
});

test('the scanner fails on a planted token, private key or registered secret, and passes clean logs', async () => {
  const dir = join(root, 'planted');
  mkdirSync(dir);
  const kp = generateKeyPair();
  const priv = encodeKey(kp.privateKey);
  const token = encodeToken({ kind: 'join', id: new Uint8Array(8).fill(9), secret: new Uint8Array(32).fill(10), coordinatorKey: kp.publicKey, url: 'http://198.18.0.1:8080' });
  const secretsFile = join(dir, 'secrets.txt');
  writeFileSync(secretsFile, `${priv}\n`);
  const scanDir = async (name: string, text: string) => {
    const d = join(dir, name);
    mkdirSync(d);
    writeFileSync(join(d, 'run.log'), `{"level":"info","msg":"ok"}\n${text}\n`);
    return run(process.execPath, [SCANNER, '--secrets', secretsFile, d]).then(
      (r) => ({ code: 0, stderr: r.stderr }), (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }));
  };
  const clean = await scanDir('clean', '{"level":"info","msg":"node joined","node":3,"key":"' + encodeKey(kp.publicKey) + '"}');
  assert.equal(clean.code, 0, clean.stderr);
  const cases: [string, string, RegExp][] = [
    ['token', `{"msg":"join","token":"${token}"}`, /knit token/],
    ['registered base64 key', `error: bad key ${priv}`, /registered secret #1/],
    ['registered key as hex', `private_key ${Buffer.from(kp.privateKey).toString('hex')}`, /registered secret #1/],
    ['uapi line', `set: private_key=${Buffer.from(generateKeyPair().privateKey).toString('hex')}`, /UAPI private_key/],
    ['pem block', '-----BEGIN PRIVATE KEY-----', /PEM private key/],
    ['json field', `{"privateKey":"${encodeKey(generateKeyPair().privateKey)}"}`, /privateKey field/],
  ];
  for (const [name, text, want] of cases) {
    const r = await scanDir(name.replace(/\s/g, '-'), text);
    assert.equal(r.code, 1, name);
    assert.match(r.stderr, want, name);
    assert.ok(!r.stderr.includes(priv) && !r.stderr.includes(token), `${name}: the report doesn't repeat the secret`);
  }
});
