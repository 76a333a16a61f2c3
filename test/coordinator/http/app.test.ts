import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { createLogger, silentLogger } from '../../../shared/log.js';
import { createCoordinator } from '../../../coordinator/index.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function setup(joinRatePerMin?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'knit-app-'));
  dirs.push(dir);
  const clock = new ManualClock();
  const c = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin }, { clock, logger: silentLogger });
  const admin = (await c.ensureAdmin())!;
  return { c, admin, clock, auth: { authorization: `Bearer ${admin}` } };
}

/** Changes one character inside the token's secret (bytes 10..42 of the decoded body). */
const flipSecret = (h: string) => { const i = 'Bearer knit_'.length + 20; return h.slice(0, i) + (h[i] === 'A' ? 'B' : 'A') + h.slice(i + 1); };

const key = () => encodeKey(generateKeyPair().publicKey);

test('the admin token is shown once: a second ensureAdmin returns nothing', async () => {
  const { c } = await setup();
  assert.equal(await c.ensureAdmin(), undefined);
  await c.stop();
});

test('admin routes refuse missing, wrong and non-admin credentials with 401 KNIT_ERR_ADMIN_UNAUTHORIZED', async () => {
  const { c, auth } = await setup();
  const joinToken = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: {} })).json().token;
  const routes = [['POST', '/v1/admin/tokens'], ['GET', '/v1/admin/tokens'], ['DELETE', '/v1/admin/tokens/0011223344556677'], ['GET', '/v1/admin/nodes'], ['DELETE', '/v1/admin/nodes/1']] as const;
  for (const [method, url] of routes) {
    for (const headers of [{}, { authorization: 'Bearer knit_nope' }, { authorization: `Bearer ${joinToken}` }, { authorization: flipSecret(auth.authorization) }]) {
      const r = await c.app.inject({ method, url, headers, payload: method === 'POST' ? {} : undefined });
      assert.equal(r.statusCode, 401, `${method} ${url}`);
      assert.equal(r.json().error.code, 'KNIT_ERR_ADMIN_UNAUTHORIZED');
    }
  }
  await c.stop();
});

test('join: happy path, then bad bodies get 400 with a stable code and change nothing', async () => {
  const { c, auth } = await setup();
  const token = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { reusable: true, tags: ['web'] } })).json().token;
  const ok = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'web-1' } });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(ok.json().node.tags, ['web']);
  const bad: unknown[] = [
    'not json at all', {}, { token, nodeKey: 'short', hostname: 'x' }, { token, nodeKey: key(), hostname: 'bad host!' },
    { token, nodeKey: key(), hostname: 'x'.repeat(64) }, { token: 42, nodeKey: key(), hostname: 'x' }, [1, 2],
  ];
  for (const payload of bad) {
    const r = await c.app.inject({ method: 'POST', url: '/v1/join', payload: payload as never, headers: { 'content-type': 'application/json' } });
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    assert.equal(r.json().error.code, 'KNIT_ERR_BAD_REQUEST');
    assert.ok(!r.body.includes(token), 'errors never echo the token');
  }
  assert.equal(c.registry.nodeCount, 1);
  await c.stop();
});

test('join errors carry token codes; failures are counted by reason in /metrics', async () => {
  const { c, auth } = await setup();
  const single = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: {} })).json().token;
  assert.equal((await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: single, nodeKey: key(), hostname: 'a' } })).statusCode, 200);
  const used = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: single, nodeKey: key(), hostname: 'b' } });
  assert.equal(used.statusCode, 401);
  assert.equal(used.json().error.code, 'KNIT_ERR_TOKEN_USED');
  const metrics = (await c.app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /knit_join_failures_total\{reason="token_used"\} 1/);
  assert.match(metrics, /knit_nodes 1/);
  assert.match(metrics, /knit_fanout_latency_seconds_bucket/);
  await c.stop();
});

test('joins are rate-limited per source address (429), and the bucket refills with time', async () => {
  const { c, auth, clock } = await setup(1); // 1/min, burst 2
  const token = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { reusable: true } })).json().token;
  const attempt = () => c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'r' } });
  assert.equal((await attempt()).statusCode, 200);
  assert.equal((await attempt()).statusCode, 200);
  const limited = await attempt();
  assert.equal(limited.statusCode, 429);
  assert.equal(limited.json().error.code, 'KNIT_ERR_RATE_LIMITED');
  clock.advance(60_000);
  assert.equal((await attempt()).statusCode, 200);
  await c.stop();
});

test('token options are validated; tokens list and revoke; nodes list and remove', async () => {
  const { c, auth } = await setup();
  for (const payload of [{ uses: 0, reusable: true }, { uses: 3 }, { tags: ['Bad Tag'] }, { expiresInS: -1 }, { extra: 1 }]) {
    const r = await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload });
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    assert.equal(r.json().error.code, 'KNIT_ERR_BAD_REQUEST');
  }
  const created = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { expiresInS: 3600 } })).json();
  const list = (await c.app.inject({ url: '/v1/admin/tokens', headers: auth })).json().tokens;
  assert.equal(list.length, 1);
  assert.equal(JSON.stringify(list).includes(created.token), false);
  assert.equal((await c.app.inject({ method: 'DELETE', url: `/v1/admin/tokens/${created.id}`, headers: auth })).statusCode, 200);
  assert.equal((await c.app.inject({ method: 'DELETE', url: '/v1/admin/tokens/ffffffffffffffff', headers: auth })).statusCode, 404);

  const t2 = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: {} })).json().token;
  const id = (await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: t2, nodeKey: key(), hostname: 'gone' } })).json().node.id;
  assert.equal((await c.app.inject({ url: '/v1/admin/nodes', headers: auth })).json().nodes.length, 1);
  assert.equal((await c.app.inject({ method: 'DELETE', url: `/v1/admin/nodes/${id}`, headers: auth })).statusCode, 200);
  const again = await c.app.inject({ method: 'DELETE', url: `/v1/admin/nodes/${id}`, headers: auth });
  assert.equal(again.json().error.code, 'KNIT_ERR_NODE_UNKNOWN');
  assert.equal((await c.app.inject({ method: 'DELETE', url: '/v1/admin/nodes/abc', headers: auth })).statusCode, 400);
  await c.stop();
});

test('unknown routes answer 404 in the common error shape; /healthz answers', async () => {
  const { c } = await setup();
  const r = await c.app.inject({ url: '/nope' });
  assert.equal(r.statusCode, 404);
  assert.equal(r.json().error.code, 'KNIT_ERR_NOT_FOUND');
  assert.equal((await c.app.inject({ url: '/healthz' })).json().ok, true);
  await c.stop();
});

test('join refusals by token state: wrong coordinator, expired (test clock), revoked', async () => {
  const { c, auth, clock } = await setup();
  const other = await setup();
  const foreign = (await other.c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: other.auth, payload: {} })).json().token;
  const expiring = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { reusable: true, expiresInS: 60 } })).json().token;
  const revoked = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { reusable: true } })).json();
  await c.app.inject({ method: 'DELETE', url: `/v1/admin/tokens/${revoked.id}`, headers: auth });
  const attempt = (token: string) => c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'x' } });
  assert.equal((await attempt(expiring)).statusCode, 200, 'valid until it expires');
  clock.advance(60_000);
  const rows: [string, number, string][] = [
    [foreign, 400, 'KNIT_ERR_TOKEN_WRONG_COORDINATOR'],
    [expiring, 401, 'KNIT_ERR_TOKEN_EXPIRED'],
    [revoked.token, 401, 'KNIT_ERR_TOKEN_INVALID'],
  ];
  for (const [token, status, code] of rows) {
    const r = await attempt(token);
    assert.equal(r.statusCode, status, code);
    assert.equal(r.json().error.code, code);
  }
  assert.equal(c.registry.nodeCount, 1);
  await c.stop();
  await other.c.stop();
});

test('a created token comes back with its id and settings; its expiry is absolute wall time', async () => {
  const { c, auth, clock } = await setup();
  const r = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: { reusable: true, uses: 5, ephemeral: true, expiresInS: 3600, tags: ['ci', 'build_1'] } })).json();
  assert.match(r.token, /^knit_/);
  assert.match(r.id, /^[0-9a-f]{16}$/);
  assert.deepEqual({ reusable: r.reusable, usesLeft: r.usesLeft, ephemeral: r.ephemeral, tags: r.tags, expires: r.expires }, { reusable: true, usesLeft: 5, ephemeral: true, tags: ['ci', 'build_1'], expires: clock.wallNow() + 3_600_000 });
  assert.equal('secretHash' in r, false);
  await c.stop();
});

test('bodies that are too large, not JSON, or of the wrong type get the common 400 error shape', async () => {
  const { c } = await setup();
  const cases = [
    { payload: JSON.stringify({ token: 'x'.repeat(20_000), nodeKey: key(), hostname: 'a' }), headers: { 'content-type': 'application/json' } },
    { payload: '{"token":', headers: { 'content-type': 'application/json' } },
    { payload: 'token=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
  ];
  for (const k of cases) {
    const r = await c.app.inject({ method: 'POST', url: '/v1/join', ...k });
    assert.equal(r.statusCode, 400, k.payload.slice(0, 20));
    assert.deepEqual(Object.keys(r.json()), ['error']);
    assert.equal(r.json().error.code, 'KNIT_ERR_BAD_REQUEST');
    assert.equal(typeof r.json().error.message, 'string');
  }
  await c.stop();
});

test('/metrics speaks Prometheus text with every metric the issue names', async () => {
  const { c } = await setup();
  const r = await c.app.inject({ url: '/metrics' });
  assert.match(r.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
  for (const [name, type] of [
    ['knit_nodes', 'gauge'], ['knit_nodes_online', 'gauge'], ['knit_connections', 'gauge'], ['knit_deltas_sent_total', 'counter'],
    ['knit_fanout_latency_seconds', 'histogram'], ['knit_stun_requests_total', 'counter'], ['knit_join_failures_total', 'counter'],
  ]) assert.match(r.body, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), name);
  assert.match(r.body, /^knit_fanout_latency_seconds_bucket\{le="\+Inf"\} 0$/m);
  await c.stop();
});

test('logs never carry a token: joins, token creation and refusals', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-app-'));
  dirs.push(dir);
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', write: (l) => lines.push(l) });
  const c = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [] }, { clock: new ManualClock(), logger });
  const admin = (await c.ensureAdmin())!;
  const auth = { authorization: `Bearer ${admin}` };
  const token = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: auth, payload: {} })).json().token;
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'a' } });
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'b' } });
  await c.app.inject({ method: 'GET', url: '/v1/admin/nodes', headers: { authorization: 'Bearer knit_forged' } });
  await c.stop();
  assert.ok(lines.length >= 2, 'something was logged');
  const all = lines.join('\n');
  assert.ok(!all.includes('knit_'), 'no token text in the log');
  assert.ok(!all.includes(token.slice(5, 40)) && !all.includes(admin.slice(5, 40)));
});
