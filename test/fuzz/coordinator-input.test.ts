/**
 * Fuzzing the coordinator where the network reaches it, through its real
 * entry points rather than the codecs alone:
 *   - control frames into hub sessions, before and after hello: the hub never
 *     throws, every refusal is an error frame plus a 44xx close, and a refused
 *     frame changes nothing (the map and the store are compared);
 *   - HTTP requests of every shape to every route: never a 5xx, always the
 *     {"error":{"code","message"}} body on refusal, nothing changed;
 *   - datagrams into the STUN observer core: never throws, answers stay small.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { silentLogger } from '../../shared/log.js';
import { controlAuthKey, helloProof } from '../../shared/wire/control.js';
import { encodeBindingRequest, STUN_MAX_RESPONSE_LEN } from '../../shared/wire/stun.js';
import { createCoordinator } from '../../coordinator/index.js';
import { createObserverCore } from '../../coordinator/observer/core.js';
import { ManualClock, seededBytes } from '../helpers/manual-clock.js';
import { fuzzIterations } from './budget.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function setup() {
  const dataDir = mkdtempSync(join(tmpdir(), 'knit-fuzz-'));
  dirs.push(dataDir);
  const clock = new ManualClock();
  const c = await createCoordinator({ dataDir, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin: 1e9 }, { clock, logger: silentLogger });
  const admin = (await c.ensureAdmin())!;
  const token = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: { authorization: `Bearer ${admin}` }, payload: { reusable: true } })).json().token as string;
  const kp = generateKeyPair();
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: encodeKey(kp.publicKey), hostname: 'fuzzed' } });
  clock.advance(100);
  return { c, clock, admin, token, kp };
}

const rnd = seededBytes(77);
const pick = <T>(xs: readonly T[]): T => xs[rnd(1)[0]! % xs.length]!;

/** A JSON-ish value built from hostile pieces: wrong types, huge numbers, prototype keys, deep nesting. */
function hostile(depth = 0): unknown {
  const r = rnd(1)[0]! % 12;
  if (depth > 3 && r > 5) return null;
  switch (r) {
    case 0: return pick([0, -1, 1e308, -0, 2 ** 53, 1.5, NaN]);
    case 1: return pick(['', 'x'.repeat(70_000), '198.18.0.1:41641', '[::1]:1', '127.0.0.1:0', '224.0.0.1:5353', '\u0000', '__proto__', 'knit_AAAA']);
    case 2: return pick([true, false, null]);
    case 3: return Array.from({ length: rnd(1)[0]! % 20 }, () => hostile(depth + 1));
    case 4: return Object.fromEntries([['__proto__', { admin: true }], ['constructor', 'x'], ['type', pick(['hello', 'endpoints', 'call-me-maybe', 'x'])]]);
    case 5: return encodeKey(generateKeyPair().publicKey);
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rnd(1)[0]! % 6; i > 0; i--) o[pick(['type', 'v', 'nodeKey', 'discoKey', 'clientNonce', 'proof', 'lastVersion', 'endpoints', 'natType', 'to', 'from', 'id'])] = hostile(depth + 1);
      return o;
    }
  }
}

test('control frames: hostile frames into sessions (before and after hello) never throw, close with 44xx, change nothing', async () => {
  const { c, clock, kp } = await setup();
  const state = async () => JSON.stringify({ nodes: [...c.registry.peers()].map((p) => ({ ...p, online: undefined, lastSeen: undefined })), stored: (await c.store.nodes()).length });
  const before = await state();
  let closedWith = 0;
  for (let i = 0; i < fuzzIterations(1500); i++) {
    const sent: string[] = [];
    let close: number | undefined;
    const h = c.hub.connect({ send: (t) => sent.push(String(t)), close: (code) => { close = code; }, remoteAddress: '198.18.0.1' });
    const challenge = JSON.parse(sent[0]!) as { serverNonce: string; coordinatorKey: string };
    if (i % 2 === 1) {
      // Authenticated first, so the frame reaches the post-hello handlers.
      const nodeKey = encodeKey(kp.publicKey);
      const discoKey = encodeKey(generateKeyPair().publicKey);
      const k = controlAuthKey(kp.privateKey, challenge.coordinatorKey)!;
      const clientNonce = Buffer.from(rnd(32)).toString('base64');
      h.receive(JSON.stringify({ type: 'hello', v: 1, nodeKey, discoKey, clientNonce, proof: helloProof(k, challenge.serverNonce, clientNonce, nodeKey, discoKey), lastVersion: 0 }));
      assert.equal(close, undefined);
    }
    const frame = i % 5 === 0 ? Buffer.from(rnd(rnd(1)[0]!)).toString('latin1') : JSON.stringify(hostile());
    assert.doesNotThrow(() => h.receive(frame));
    if (close !== undefined) {
      closedWith++;
      assert.ok(close >= 4400 && close < 4500, `close ${close}`);
      const last = JSON.parse(sent.at(-1)!) as { type: string; code: string };
      assert.equal(last.type, 'error');
      assert.match(last.code, /^KNIT_ERR_/);
    }
    h.closed();
    clock.advance(60);
  }
  assert.ok(closedWith > 0);
  // Only the fuzzed node's soft state may have moved (an accepted endpoint report); nothing else.
  const after = JSON.parse(await state()) as { nodes: { endpoints: unknown; natType: unknown; discoKey: unknown }[]; stored: number };
  const was = JSON.parse(before) as typeof after;
  assert.equal(after.stored, was.stored);
  assert.deepEqual(after.nodes.map((n) => ({ ...n, endpoints: 0, natType: 0, discoKey: 0 })), was.nodes.map((n) => ({ ...n, endpoints: 0, natType: 0, discoKey: 0 })));
  await c.stop();
});

test('HTTP: hostile requests to every route never get a 5xx; refusals have the common error body and change nothing', async () => {
  const { c, admin, token } = await setup();
  const state = async () => JSON.stringify({ nodes: await c.store.nodes(), tokens: await c.registry.listTokens() });
  const before = await state();
  const routes = ['/v1/join', '/v1/admin/tokens', '/v1/admin/tokens/0011223344556677', '/v1/admin/nodes', '/v1/admin/nodes/1', '/healthz', '/metrics', '/v1/control', '/%00', '/v1/admin/nodes/99999999999999999999'];
  const methods = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'] as const;
  for (let i = 0; i < fuzzIterations(600); i++) {
    const method = pick(methods);
    const url = pick(routes);
    const body = hostile();
    const headers: Record<string, string> = { 'content-type': pick(['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']) };
    // Never the real admin token on a mutating route (that would legitimately change things).
    if (rnd(1)[0]! % 3 === 0) headers.authorization = pick(['Bearer ', `Bearer ${token}`, 'Bearer knit_x', `Basic ${admin}`, `Bearer ${admin.slice(0, 50)}`]);
    if (url === '/v1/join' && rnd(1)[0]! % 2 === 0 && typeof body === 'object' && body) (body as Record<string, unknown>).token = pick([token.slice(0, -2), 'knit_', admin]);
    const payload = typeof body === 'string' ? body : JSON.stringify(body);
    const r = await c.app.inject({ method, url, headers, payload: method === 'GET' ? undefined : payload });
    assert.ok(r.statusCode < 500, `${method} ${url} → ${r.statusCode} ${r.body.slice(0, 200)}`);
    if (r.statusCode >= 400) {
      const e = r.json() as { error: { code: string; message: string } };
      assert.match(e.error.code, /^KNIT_ERR_/);
      assert.equal(typeof e.error.message, 'string');
      assert.ok(!r.body.includes(token.slice(5, 40)) && !r.body.includes(admin.slice(5, 40)), 'no token echoed');
    }
  }
  assert.equal(await state(), before);
  await c.stop();
});

test('STUN observer: hostile datagrams never throw; an answer is never larger than the largest Binding answer', () => {
  const core = createObserverCore();
  const seedReq = encodeBindingRequest(rnd(12), { software: true });
  for (let i = 0; i < fuzzIterations(20_000); i++) {
    let b: Uint8Array;
    if (i % 3 === 0) b = rnd(rnd(1)[0]! * 6);
    else {
      b = new Uint8Array(seedReq);
      for (let k = rnd(1)[0]! % 4; k >= 0; k--) b[rnd(1)[0]! % b.length]! ^= rnd(1)[0]!;
    }
    const from = i % 2 ? { address: `198.18.${i & 255}.1`, port: 1 + (i % 65535) } : { address: `2001:db8::${(i % 65535).toString(16)}`, port: 2 };
    const v = core.handle(b, from, i);
    if ('answer' in v) assert.ok(v.answer.length <= STUN_MAX_RESPONSE_LEN);
  }
});
