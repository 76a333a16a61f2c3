/**
 * The console's static routes through app.inject(): content types, the CSP and
 * other headers, ETag revalidation, and that no path reaches a file outside
 * the console's folder.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { KnitError } from '../../../shared/errors.js';
import { createCoordinator } from '../../../coordinator/index.js';
import { defaultUiRoot, loadUiAssets, registerUi, UI_CSP } from '../../../coordinator/http/ui.js';
import { silentLogger } from '../../../shared/log.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A bare fastify app with the coordinator's error shape, for a console folder of the test's own. */
function bareApp(): FastifyInstance {
  const app = Fastify();
  app.setErrorHandler((e, _req, reply) => { void reply.status(e instanceof KnitError ? e.status : 500).send(e instanceof KnitError ? e.toJSON() : {}); });
  return app;
}

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'knit-ui-'));
  dirs.push(dir);
  const c = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [] }, { clock: new ManualClock(), logger: silentLogger });
  return c;
}

test('the console ships in coordinator/ui and is found from the compiled module', () => {
  const root = defaultUiRoot();
  assert.equal(root, join(process.cwd(), 'coordinator', 'ui'));
  const assets = loadUiAssets(root);
  for (const f of ['index.html', 'app.js', 'api.js', 'model.js', 'qr.js', 'console.css', 'icon.svg']) assert.ok(assets.has(f), f);
});

test('GET /ui, /ui/ and each asset: the right content type, a strict CSP, nosniff, no framing', async () => {
  const c = await setup();
  const cases: [string, RegExp][] = [
    ['/ui', /^text\/html; charset=utf-8$/], ['/ui/', /^text\/html; charset=utf-8$/], ['/ui/index.html', /^text\/html/],
    ['/ui/app.js', /^text\/javascript; charset=utf-8$/], ['/ui/model.js', /^text\/javascript/], ['/ui/console.css', /^text\/css; charset=utf-8$/],
    ['/ui/icon.svg', /^image\/svg\+xml$/], ['/ui/vendor/qrcode.mjs', /^text\/javascript/],
  ];
  for (const [url, type] of cases) {
    const r = await c.app.inject({ url });
    assert.equal(r.statusCode, 200, url);
    assert.match(String(r.headers['content-type']), type, url);
    assert.equal(r.headers['content-security-policy'], UI_CSP, url);
    assert.match(UI_CSP, /^default-src 'self';/);
    assert.doesNotMatch(UI_CSP, /unsafe-inline|unsafe-eval|\*|data:|http/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(r.headers['x-frame-options'], 'DENY', url);
    assert.equal(r.headers['referrer-policy'], 'no-referrer', url);
    assert.ok(r.headers.etag, url);
  }
  const index = (await c.app.inject({ url: '/ui' })).body;
  assert.equal(index, readFileSync(join(process.cwd(), 'coordinator', 'ui', 'index.html'), 'utf8'));
  assert.doesNotMatch(index, /<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=|https?:\/\//i, 'no inline script, inline style, handler attribute or external URL');
  assert.match((await c.app.inject({ url: '/ui/vendor/qrcode.mjs' })).body, /export default qrcode/);
  await c.stop();
});

test('HEAD works and an ETag match is answered 304 without a body', async () => {
  const c = await setup();
  const first = await c.app.inject({ url: '/ui/app.js' });
  const head = await c.app.inject({ method: 'HEAD', url: '/ui/app.js' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.body, '');
  const again = await c.app.inject({ url: '/ui/app.js', headers: { 'if-none-match': String(first.headers.etag) } });
  assert.equal(again.statusCode, 304);
  assert.equal(again.body, '');
  assert.equal(again.headers['content-security-policy'], UI_CSP);
  await c.stop();
});

test('traversal and unknown files get the 404 JSON, never another file', async () => {
  const c = await setup();
  const urls = [
    '/ui/../package.json', '/ui/..%2f..%2fpackage.json', '/ui/%2e%2e/%2e%2e/package.json', '/ui/%2e%2e%2f%2e%2e%2fpackage.json',
    '/ui/vendor/../../../package.json', '/ui/..\\..\\package.json', '/ui/%5c..%5cpackage.json', '/ui/app.js%00.html',
    '/ui//etc/passwd', '/ui/%2fetc%2fpasswd', '/ui/nope.js', '/ui/vendor/', '/ui/vendor', '/ui/.hidden',
    '/ui/index.html/', '/ui/APP.JS', '/uix', '/ui.html',
  ];
  for (const url of urls) {
    const r = await c.app.inject({ url });
    assert.ok(r.statusCode === 404 || r.statusCode === 400, `${url} → ${r.statusCode}`);
    assert.match(r.json().error.code, /^KNIT_ERR_(NOT_FOUND|BAD_REQUEST)$/, url);
    assert.doesNotMatch(r.body, /"name":\s*"knit"|root:/, url);
  }
  const post = await c.app.inject({ method: 'POST', url: '/ui/app.js' });
  assert.equal(post.statusCode, 404);
  assert.equal(post.json().error.code, 'KNIT_ERR_NOT_FOUND');
  await c.stop();
});

test('only files listed at start-up with a known type are served: symlinks out, other types and dotfiles are not', async () => {
  const root = mkdtempSync(join(tmpdir(), 'knit-ui-root-'));
  dirs.push(root);
  const outside = mkdtempSync(join(tmpdir(), 'knit-ui-outside-'));
  dirs.push(outside);
  writeFileSync(join(outside, 'secret.js'), 'secret');
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'index.html'), '<!doctype html>');
  writeFileSync(join(root, 'sub', 'a.js'), 'a');
  writeFileSync(join(root, 'notes.md'), 'no type');
  writeFileSync(join(root, '.env'), 'X=1');
  symlinkSync(outside, join(root, 'escape'));
  const app = bareApp();
  registerUi(app, { root });
  assert.equal((await app.inject({ url: '/ui/sub/a.js' })).body, 'a');
  for (const url of ['/ui/notes.md', '/ui/.env', '/ui/escape/secret.js']) {
    assert.equal((await app.inject({ url })).statusCode, 404, url);
  }
  await app.close();
});

test('without the console folder every /ui path is a clear 404', async () => {
  const app = bareApp();
  registerUi(app, { root: join(tmpdir(), 'knit-no-such-ui-folder') });
  const r = await app.inject({ url: '/ui' });
  assert.equal(r.statusCode, 404);
  assert.equal(r.json().error.code, 'KNIT_ERR_NOT_FOUND');
  assert.match(r.json().error.message, /not installed/);
  await app.close();
});
