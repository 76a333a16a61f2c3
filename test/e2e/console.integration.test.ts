/**
 * The web console end to end, as an admin uses it: the real `knit coordinator`
 * process and two real agents (`knit up --engine memory --interfaces lo`) on
 * loopback, Debian's Chromium driven by playwright-core (no browser download).
 *
 * Sign in (a wrong token first), create a join token in the UI (shown once,
 * copy button, QR), see each agent appear live, see the path between them in
 * the matrix go lan → none (one agent stopped) → lan (restarted), revoke the
 * token, remove a node. Screenshots go to test-artifacts/screenshots/ (gitignored; KNIT_SCREENSHOT_DIR overrides) (their
 * paths are printed as test diagnostics).
 *
 * Network rule: every request the page makes is checked against the
 * coordinator's 127.0.0.1 origin; anything else is aborted and fails the test.
 * Chromium's background networking is off (it would otherwise try Google's
 * hosts). Every wait has a deadline.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { registerSecret, saveTestLog } from '../security/log-secrets.js';
import { until } from '../helpers/until.js';

const run = promisify(execFile);
const CHROMIUM = process.env.KNIT_CHROMIUM ?? '/usr/bin/chromium';
const BIN = join(process.cwd(), 'bin', 'knit.js');
export const SCREENSHOT_DIR = process.env.KNIT_SCREENSHOT_DIR ?? join(process.cwd(), 'test-artifacts', 'screenshots');
/** The flags a closed network needs (no background fetches, no QUIC, no first-run work). */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions'];

const root = mkdtempSync(join(tmpdir(), 'knit-console-e2e-'));
const procs = new Set<ChildProcess>();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

interface Proc { child: ChildProcess; out: () => string; log: () => string; exited: Promise<number | null> }

function start(name: string, args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(child);
  let out = '';
  let log = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; log += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => {
    procs.delete(child);
    saveTestLog(`console-e2e-${name}`, log); // the log (stderr) is scanned for secrets after the run
    r(code);
  }));
  return { child, out: () => out, log: () => log, exited };
}

const stateOf = (name: string) => join(root, name);
const upArgs = (name: string, token?: string) => ['up', ...(token ? ['--token', token] : []), '--engine', 'memory', '--port', '0', '--state', stateOf(name), '--interfaces', 'lo', '--hostname', name, '--no-port-mapping'];

const skip = existsSync(CHROMIUM) ? false : `skipped: ${CHROMIUM} is not installed (Debian: apt-get install chromium)`;

test('console: sign in, create a token (once, copy, QR), nodes appear live, a path changes, revoke, remove', { skip, timeout: 180_000 }, async (t) => {
  const { chromium } = await import('playwright-core');
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  let shot = 0;
  const screenshot = async (page: Page, name: string) => {
    const path = join(SCREENSHOT_DIR, `console-${String(++shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    t.diagnostic(`screenshot: ${path}`);
  };

  // The coordinator: port 0, its address from the ready line, the admin token from stdout. No relay:
  // the path between the agents is then lan while both run and none once one stops.
  const coord = start('coordinator', ['coordinator', '--listen', '127.0.0.1:0', '--stun', '127.0.0.1:0', '--relay', 'off', '--data', join(root, 'coord'), '--allow-loopback-endpoints']);
  const http = await until('coordinator ready', () => /"msg":"coordinator ready".*?"http":"127\.0\.0\.1:(\d+)"/.exec(coord.out())?.[1], { explain: coord.out });
  const admin = /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(coord.out())?.[1];
  assert.ok(admin, 'the first start prints an admin token');
  registerSecret(admin);
  const origin = `http://127.0.0.1:${http}`;

  const profile = mkdtempSync(join(root, 'chromium-'));
  let context: BrowserContext | undefined;
  const agents: Record<string, Proc> = {};
  let token = '';
  let page: Page | undefined;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 860 },
      timeout: 30_000, serviceWorkers: 'block',
    });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    // Only the coordinator on loopback: anything else is aborted and fails the test.
    const offOrigin: string[] = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin) return route.continue();
      offOrigin.push(url);
      return route.abort();
    });
    page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(20_000);
    const problems: string[] = []; // console errors (CSP violations show up here) and uncaught exceptions
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));

    // ---- sign in -------------------------------------------------------------
    await page.goto(`${origin}/ui`);
    await page.locator('#login').waitFor();
    await screenshot(page, 'login');
    await page.fill('#admin-token', 'knit_notatoken');
    await page.click('#login-submit');
    await page.locator('#login-error').getByText(/not this coordinator's admin token/).waitFor();
    problems.splice(0); // the refused sign-in logs the 401 fetch as a console error: expected
    await page.fill('#admin-token', admin);
    await page.click('#login-submit');
    await page.locator('#live[data-state="live"]').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('knit.adminToken') !== null), true, 'kept for this tab');
    assert.equal(await page.inputValue('#admin-token'), '', 'the login field is cleared');
    await screenshot(page, 'signed-in-empty');

    // ---- create a join token: shown once, copy button, QR --------------------
    await page.check('#tf-reusable');
    await page.fill('#tf-tags', 'e2e');
    await page.click('#create-token');
    await page.locator('#token-dialog[open]').waitFor();
    token = (await page.textContent('#new-token'))?.trim() ?? '';
    assert.match(token, /^knit_[A-Za-z0-9_-]{40,}$/);
    registerSecret(token);
    const qr = page.locator('#token-qr svg[role="img"] path');
    await qr.waitFor();
    assert.ok(Number(await page.getAttribute('#token-qr svg', 'data-modules')) >= 21, 'a QR code of at least version 1');
    assert.ok(((await qr.getAttribute('d')) ?? '').length > 100, 'the QR has dark modules');
    await page.click('#copy-token');
    await page.locator('#copy-token', { hasText: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token, 'the copy button copies the token');
    await screenshot(page, 'token-created');
    await page.click('#token-done');
    await page.locator('#token-dialog[open]').waitFor({ state: 'detached' });
    assert.ok(!(await page.content()).includes(token), 'once the dialog is closed the token is gone from the page');
    const tokenRow = page.locator('#tokens tbody tr').first();
    await tokenRow.locator('.badge', { hasText: 'active' }).waitFor();
    const tokenId = await tokenRow.getAttribute('data-token-id');
    assert.match(tokenId ?? '', /^[0-9a-f]{16}$/);
    const listed = await (await fetch(`${origin}/v1/admin/tokens`, { headers: { authorization: `Bearer ${admin}` } })).text();
    assert.ok(!listed.includes(token), 'the API never lists the secret again');

    // ---- nodes appear live ----------------------------------------------------
    agents.alpha = start('alpha', upArgs('alpha', token));
    const alphaRow = page.locator('#nodes tbody tr[data-name="alpha"]');
    await alphaRow.locator('[data-field="state"]', { hasText: 'online' }).waitFor();
    assert.match(await alphaRow.locator('[data-field="addresses"]').innerText(), /100\.\d+\.\d+\.\d+/);
    await alphaRow.locator('[data-field="endpoints"] code').first().waitFor(); // reported by the agent, pushed live
    await screenshot(page, 'first-node');
    assert.equal(await page.locator('#matrix td[data-from="alpha"][data-to="bravo"]').count(), 0, 'no bravo yet');

    agents.bravo = start('bravo', upArgs('bravo', token));
    await page.locator('#nodes tbody tr[data-name="bravo"] [data-field="state"]', { hasText: 'online' }).waitFor();
    const ab = page.locator('#matrix td[data-from="alpha"][data-to="bravo"]');
    const ba = page.locator('#matrix td[data-from="bravo"][data-to="alpha"]');
    // A working path: handed to WireGuard and handshaken over (docs/disco.md), not only punched.
    await ab.and(page.locator('[data-kind="lan"]:not([data-handshaking])')).waitFor();
    await ba.and(page.locator('[data-kind="lan"]:not([data-handshaking])')).waitFor();
    assert.match(await ab.innerText(), /lan\s+[\d.]+ ms/, 'the cell shows the kind and the RTT');
    await screenshot(page, 'two-nodes-lan');

    // ---- a path changes: bravo stops (alpha's path to it dies), then comes back --
    await run(process.execPath, [BIN, 'down', '--state', stateOf('bravo')]);
    assert.equal(await agents.bravo.exited, 0);
    await page.locator('#nodes tbody tr[data-name="bravo"] [data-field="state"]', { hasText: 'offline' }).waitFor();
    await ab.and(page.locator('[data-kind="none"]')).waitFor({ timeout: 30_000 }); // disco declares a path dead after 6.5 s
    await screenshot(page, 'path-none');
    agents.bravo = start('bravo-again', upArgs('bravo')); // same identity, no token needed
    await ab.and(page.locator('[data-kind="lan"]')).waitFor({ timeout: 30_000 });
    await screenshot(page, 'path-back-to-lan');

    // ---- revoke the token ---------------------------------------------------------
    await page.click(`#tokens tbody tr[data-token-id="${tokenId}"] button`);
    await page.locator('#confirm-dialog[open]').waitFor();
    await page.click('#confirm-ok');
    await page.locator(`#tokens tbody tr[data-token-id="${tokenId}"] .badge`, { hasText: 'revoked' }).waitFor();
    const join = await fetch(`${origin}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: 'late' }) });
    assert.equal(join.status, 401, 'a revoked token joins nobody');

    // ---- remove a node ------------------------------------------------------------
    await page.click('#nodes tbody tr[data-name="bravo"] button[aria-label="Remove node bravo"]');
    await page.locator('#confirm-dialog[open]').waitFor();
    await page.click('#confirm-ok');
    await page.locator('#nodes tbody tr[data-name="bravo"]').waitFor({ state: 'detached' });
    await page.locator('#matrix-empty').waitFor({ state: 'visible' });
    await screenshot(page, 'node-removed');
    await until('the removed agent stops retrying', async () => {
      const s = await run(process.execPath, [BIN, 'status', '--json', '--state', stateOf('bravo')]).catch(() => undefined);
      return !s || (JSON.parse(s.stdout) as { coordinator: { status: string } }).coordinator.status === 'removed';
    }, { timeoutMs: 15_000 });

    // ---- sign out forgets the token ---------------------------------------------------
    await page.click('#logout');
    await page.locator('#login').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('knit.adminToken')), null);

    assert.deepEqual(offOrigin, [], 'the page loads nothing from anywhere but the coordinator');
    assert.deepEqual(problems, [], 'no console errors (CSP violations included) and no uncaught exceptions');
  } catch (err) {
    if (page) await screenshot(page, 'failure').catch(() => {});
    throw err;
  } finally {
    await context?.close().catch(() => {});
    for (const [name, a] of Object.entries(agents)) {
      if (a.child.exitCode === null) await run(process.execPath, [BIN, 'down', '--state', stateOf(name)]).catch(() => a.child.kill('SIGKILL'));
    }
    coord.child.kill('SIGTERM');
    await coord.exited;
  }
  assert.ok(!coord.log().includes(admin), 'the admin token is printed once on stdout, never logged');
  assert.ok(token && !coord.out().includes(token), 'the join token never reaches the coordinator\'s output');
});
