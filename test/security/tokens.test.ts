/**
 * Tokens as secrets: enough entropy, only a hash at rest, shown once, consumed
 * atomically, and guessing slowed per source with back-off. (The 100-way race
 * across real processes is in faults.integration.test.ts and
 * test/coordinator/registry/join-race.integration.test.ts; here the same
 * race runs through the HTTP layer in one process.)
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { silentLogger } from '../../shared/log.js';
import { encodeToken, parseToken, TOKEN_SECRET_LEN } from '../../shared/token.js';
import { createCoordinator } from '../../coordinator/index.js';
import { JOIN_BACKOFF_MAX_MS, JOIN_FAILURE_MEMORY_MS, JOIN_FREE_FAILURES } from '../../coordinator/http/app.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { registerSecret } from './log-secrets.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function setup(joinRatePerMin?: number) {
  const dataDir = mkdtempSync(join(tmpdir(), 'knit-tok-'));
  dirs.push(dataDir);
  const clock = new ManualClock();
  const c = await createCoordinator({ dataDir, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin }, { clock, logger: silentLogger });
  const admin = (await c.ensureAdmin())!;
  registerSecret(admin);
  const auth = { authorization: `Bearer ${admin}` };
  const mint = async (payload: object = {}) => {
    const t = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload })).json().token as string;
    registerSecret(t);
    return t;
  };
  return { c, clock, admin, auth, mint, dataDir };
}

const key = () => encodeKey(generateKeyPair().publicKey);

test('secrets are 256 random bits (≥ 128 required): distinct, and the bits look uniform', async () => {
  assert.ok(TOKEN_SECRET_LEN * 8 >= 128);
  const { c, mint } = await setup();
  const secrets = new Set<string>();
  const ids = new Set<string>();
  let ones = 0;
  const n = 200;
  for (let i = 0; i < n; i++) {
    const p = parseToken(await mint())!;
    assert.equal(p.secret.length * 8, 256);
    secrets.add(Buffer.from(p.secret).toString('hex'));
    ids.add(p.id);
    for (const b of p.secret) for (let bit = 0; bit < 8; bit++) ones += (b >> bit) & 1;
  }
  assert.equal(secrets.size, n);
  assert.equal(ids.size, n);
  // 51,200 fair coin flips: the share of ones is 0.5 ± 0.0022 (1σ); ±0.03 only catches a broken source.
  const share = ones / (n * 256);
  assert.ok(share > 0.47 && share < 0.53, `share of one bits ${share}`);
  await c.stop();
});

test('only sha256(secret) is at rest: no file in the data dir holds a secret in any encoding', async () => {
  const { c, mint, admin, dataDir } = await setup();
  const tokens = [admin, await mint(), await mint({ reusable: true })];
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: tokens[1], nodeKey: key(), hostname: 'a' } });
  await c.stop();
  const files = readdirSync(dataDir).map((f) => readFileSync(join(dataDir, f)));
  const all = Buffer.concat(files);
  for (const t of tokens) {
    const secret = Buffer.from(parseToken(t)!.secret);
    for (const form of [secret, Buffer.from(secret.toString('hex')), Buffer.from(secret.toString('base64')), Buffer.from(secret.toString('base64url')), Buffer.from(t), Buffer.from(t.slice(5, 50))]) {
      assert.equal(all.indexOf(form), -1, `a secret form is stored (${form.length} bytes)`);
    }
    const hash = createHash('sha256').update(secret).digest('hex');
    assert.notEqual(all.indexOf(Buffer.from(hash)), -1, 'the hash is what is stored (so the scan looked in the right place)');
  }
});

test('a token is shown once: the admin token at first start only; lists and answers never carry a secret or its hash', async () => {
  const { c, mint, auth } = await setup();
  assert.equal(await c.ensureAdmin(), undefined, 'no second admin token');
  const t = await mint({ reusable: true });
  const secret = Buffer.from(parseToken(t)!.secret);
  const hash = createHash('sha256').update(secret).digest('hex');
  const joined = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: t, nodeKey: key(), hostname: 'a' } });
  const bodies = [
    joined.body,
    (await c.app.inject({ method: 'GET', url: '/v1/admin/tokens', headers: auth })).body,
    (await c.app.inject({ method: 'GET', url: '/v1/admin/nodes', headers: auth })).body,
    (await c.app.inject({ method: 'GET', url: '/metrics' })).body,
  ];
  for (const b of bodies) {
    for (const form of [t, t.slice(5, 40), secret.toString('hex'), secret.toString('base64'), hash]) assert.ok(!b.includes(form), b.slice(0, 200));
  }
  await c.stop();
});

test('a secret differing in one bit (first, middle or last byte) is refused: the whole digest is compared', async () => {
  const { c, mint, auth } = await setup();
  const t = parseToken(await mint({ reusable: true }))!;
  for (const i of [0, 15, 31]) {
    const secret = new Uint8Array(t.secret);
    secret[i]! ^= 1;
    const forged = encodeToken({ kind: 'join', id: Buffer.from(t.id, 'hex'), secret, coordinatorKey: Buffer.from(t.coordinatorKey, 'base64'), url: t.url });
    const r = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: forged, nodeKey: key(), hostname: 'x' } });
    assert.equal(r.json().error.code, 'KNIT_ERR_TOKEN_INVALID', `byte ${i}`);
  }
  assert.equal(c.registry.nodeCount, 0);
  void auth;
  await c.stop();
});

test('100 joins racing one single-use token through the HTTP layer: exactly one node, 99 told "used"', async () => {
  const { c, mint } = await setup(100_000);
  const t = await mint();
  const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: t, nodeKey: key(), hostname: `r${i}` } })));
  assert.equal(rs.filter((r) => r.statusCode === 200).length, 1);
  assert.ok(rs.filter((r) => r.statusCode !== 200).every((r) => r.json().error.code === 'KNIT_ERR_TOKEN_USED'));
  assert.equal(c.registry.nodeCount, 1);
  assert.equal((await c.registry.listTokens())[0]!.usesLeft, 0);
  await c.stop();
});

test('guessing backs off per source: free tries, then 1 s, 2 s, 4 s … capped at 15 min, with Retry-After (step table)', async () => {
  const { c, clock, mint } = await setup(100_000);
  const good = await mint({ reusable: true });
  const guess = parseToken(good)!;
  const wrong = encodeToken({ kind: 'join', id: Buffer.from(guess.id, 'hex'), secret: new Uint8Array(32).fill(7), coordinatorKey: Buffer.from(guess.coordinatorKey, 'base64'), url: guess.url });
  const attempt = (token: string, remoteAddress = '198.18.5.5') =>
    c.app.inject({ method: 'POST', url: '/v1/join', remoteAddress, payload: { token, nodeKey: key(), hostname: 'g' } });
  for (let i = 0; i < JOIN_FREE_FAILURES; i++) assert.equal((await attempt(wrong)).statusCode, 401, `free try ${i + 1}`);
  // Each further failure doubles the wait before the next attempt from this source.
  const steps: { wait: number; retryAfter: string }[] = [
    { wait: 1000, retryAfter: '1' }, { wait: 2000, retryAfter: '2' }, { wait: 4000, retryAfter: '4' }, { wait: 8000, retryAfter: '8' },
  ];
  for (const s of steps) {
    assert.equal((await attempt(wrong)).statusCode, 401, 'the guess itself is answered');
    const blocked = await attempt(good); // even a valid token waits: the source is backing off
    assert.equal(blocked.statusCode, 429);
    assert.equal(blocked.json().error.code, 'KNIT_ERR_RATE_LIMITED');
    assert.equal(blocked.headers['retry-after'], s.retryAfter);
    clock.advance(s.wait - 1);
    assert.equal((await attempt(good)).statusCode, 429, 'still waiting 1 ms before the end');
    clock.advance(1);
  }
  // Others are not punished for one source's guesses (IPv6 counts by /64).
  assert.equal((await attempt(good, '198.18.5.6')).statusCode, 200);
  assert.equal((await attempt(wrong, '2001:db8:0:1::1')).statusCode, 401);
  // Keep guessing: the wait never exceeds the cap.
  for (let i = 0; i < 20; i++) {
    await attempt(wrong);
    const r = await attempt(good);
    assert.ok(Number(r.headers['retry-after']) <= JOIN_BACKOFF_MAX_MS / 1000, String(r.headers['retry-after']));
    clock.advance(JOIN_BACKOFF_MAX_MS);
  }
  // A valid join doesn't launder the guesses (a node re-joining with its own key costs nothing)...
  assert.equal((await attempt(good)).statusCode, 200);
  assert.equal((await attempt(wrong)).statusCode, 401);
  assert.equal((await attempt(good)).statusCode, 429);
  // ...but an hour without failures does.
  clock.advance(JOIN_FAILURE_MEMORY_MS);
  for (let i = 0; i < JOIN_FREE_FAILURES; i++) assert.equal((await attempt(wrong)).statusCode, 401);
  assert.equal((await attempt(good)).statusCode, 200, 'free tries again');
  // Only guesses count: expired, used and wrong-coordinator tokens prove their holder had a secret.
  const used = await mint();
  await attempt(used, '198.18.6.6');
  for (let i = 0; i < 3 * JOIN_FREE_FAILURES; i++) assert.equal((await attempt(used, '198.18.6.6')).json().error.code, 'KNIT_ERR_TOKEN_USED');
  await c.stop();
});

test('the per-source rate holds for valid tokens too: 30 a minute, burst 60, then 429 with Retry-After', async () => {
  const { c, clock, mint } = await setup();
  const good = await mint({ reusable: true });
  const attempt = () => c.app.inject({ method: 'POST', url: '/v1/join', remoteAddress: '198.18.7.7', payload: { token: good, nodeKey: key(), hostname: 'b' } });
  for (let i = 0; i < 60; i++) assert.equal((await attempt()).statusCode, 200, `burst ${i}`);
  const r = await attempt();
  assert.equal(r.statusCode, 429);
  assert.equal(r.headers['retry-after'], '2', 'one join every 2 s at 30/min');
  clock.advance(2000);
  assert.equal((await attempt()).statusCode, 200);
  await c.stop();
});

test('a token has one spelling: non-canonical base64url and unclean coordinator URLs are refused', () => {
  const kp = generateKeyPair();
  const make = (url: string) => encodeToken({ kind: 'join', id: new Uint8Array(8).fill(1), secret: new Uint8Array(32).fill(2), coordinatorKey: kp.publicKey, url });
  for (const url of ['http://198.18.0.1:8080', 'https://knit.example.com', 'http://[2001:db8::1]:8080', 'https://münchen.example:443']) {
    assert.equal(parseToken(make(url))?.url, url, url);
  }
  for (const url of ['http://user:pw@198.18.0.1', 'http://198.18.0.1/path', 'http://198.18.0.1?x=1', 'http://198.18.0.1#f', 'http://198.18.0.1\u0000.evil', 'http://a b', 'ftp://198.18.0.1', 'http://']) {
    assert.equal(parseToken(make(url)), undefined, JSON.stringify(url));
  }
  // The same bytes with non-zero trailing bits in the last base64url character: another spelling, refused.
  const good = make('http://198.18.0.1:8080');
  const body = Buffer.from(good.slice(5), 'base64url');
  if (body.length % 3 !== 0) {
    const last = good.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const variant = good.slice(0, -1) + alphabet[(alphabet.indexOf(last) + 1) % 64];
    if (Buffer.from(variant.slice(5), 'base64url').equals(body)) assert.equal(parseToken(variant), undefined);
  }
  // Invalid UTF-8 in the URL bytes.
  const raw = Buffer.from(good.slice(5), 'base64url');
  const bad = Buffer.concat([raw, Buffer.from([0xff])]);
  assert.equal(parseToken('knit_' + bad.toString('base64url')), undefined);
});
