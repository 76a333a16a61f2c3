/**
 * Authorization, negatively: every HTTP route against every kind of wrong
 * credential, and every control message against a node that tries to be
 * another node (or no node at all). Each refusal must carry its stable code and
 * change nothing — checked by comparing the registry and the store before and
 * after. Runs in-process (app.inject and the hub with a recording transport).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { encodeKey, generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { silentLogger } from '../../shared/log.js';
import { encodeToken, parseToken } from '../../shared/token.js';
import { controlAuthKey, helloProof } from '../../shared/wire/control.js';
import { createCoordinator } from '../../coordinator/index.js';
import type { ControlHub } from '../../coordinator/control/hub.js';
import { ManualClock, seededBytes } from '../helpers/manual-clock.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-authz-'));
  dirs.push(d);
  return d;
}

async function setup(dataDir = tmp()) {
  const clock = new ManualClock();
  const c = await createCoordinator({ dataDir, listen: { host: '127.0.0.1', port: 0 }, stun: [], joinRatePerMin: 100_000 }, { clock, logger: silentLogger });
  const admin = await c.ensureAdmin();
  return { c, clock, admin, dataDir };
}

const key = () => encodeKey(generateKeyPair().publicKey);
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

/** Everything an attacker could change: the store's rows and the in-memory map. */
async function snapshot(c: Awaited<ReturnType<typeof setup>>['c']): Promise<string> {
  return JSON.stringify({ nodes: [...c.registry.peers()], tokens: await c.registry.listTokens(), stored: await c.store.nodes() });
}

function errorOf(r: { statusCode: number; json(): unknown }): { status: number; code: string; message: string } {
  const body = r.json() as { error?: { code?: unknown; message?: unknown } };
  assert.equal(typeof body.error?.code, 'string', `error body shape: ${JSON.stringify(body)}`);
  assert.equal(typeof body.error?.message, 'string');
  return { status: r.statusCode, code: body.error!.code as string, message: body.error!.message as string };
}

test('every admin route refuses every wrong credential with 401 KNIT_ERR_ADMIN_UNAUTHORIZED and changes nothing', async () => {
  const { c, admin } = await setup();
  const good = bearer(admin!);
  const joinToken = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: good, payload: { reusable: true } })).json().token as string;
  const node = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: joinToken, nodeKey: key(), hostname: 'victim' } });
  assert.equal(node.statusCode, 200);
  const tokenId = parseToken(joinToken)!.id;
  const adminParsed = parseToken(admin)!;
  const rnd = seededBytes(5);
  const other = await setup(); // another coordinator's admin token
  await other.c.stop();
  const credentials: [string, Record<string, string>][] = [
    ['missing', {}],
    ['empty bearer', { authorization: 'Bearer ' }],
    ['wrong scheme', { authorization: `Basic ${admin}` }],
    ['lower-case scheme with garbage', { authorization: 'bearer knit_nope' }],
    ['not a token', bearer('hunter2')],
    ['a join token', bearer(joinToken)],
    ['the admin id with a guessed secret', bearer(encodeToken({ kind: 'admin', id: Buffer.from(adminParsed.id, 'hex'), secret: rnd(32), coordinatorKey: Buffer.from(adminParsed.coordinatorKey, 'base64'), url: adminParsed.url }))],
    ['the admin secret re-labelled as a join token', bearer(encodeToken({ kind: 'join', id: Buffer.from(adminParsed.id, 'hex'), secret: adminParsed.secret, coordinatorKey: Buffer.from(adminParsed.coordinatorKey, 'base64'), url: adminParsed.url }))],
    ['another coordinator\'s admin token', bearer(other.admin!)],
    ['the admin token cut inside its secret', bearer(admin!.slice(0, 40))],
    ['the admin token twice', bearer(admin! + admin!)],
  ];
  const routes: [string, string, object?][] = [
    ['POST', '/v1/admin/tokens', { reusable: true }],
    ['GET', '/v1/admin/tokens'],
    ['DELETE', `/v1/admin/tokens/${tokenId}`],
    ['GET', '/v1/admin/nodes'],
    ['DELETE', `/v1/admin/nodes/${node.json().node.id}`],
  ];
  const before = await snapshot(c);
  for (const [method, url, payload] of routes) {
    for (const [what, headers] of credentials) {
      const r = await c.app.inject({ method: method as 'GET', url, headers, payload: payload as object });
      const e = errorOf(r);
      assert.deepEqual([e.status, e.code], [401, 'KNIT_ERR_ADMIN_UNAUTHORIZED'], `${method} ${url} with ${what}`);
      assert.ok(!r.body.includes('knit_'), 'a refusal never echoes a token');
    }
  }
  assert.equal(await snapshot(c), before, 'nothing changed');
  // The real credential still works on every route (so the table above tested refusals, not broken routes).
  for (const [method, url, payload] of routes) {
    const r = await c.app.inject({ method: method as 'GET', url, headers: good, payload: payload as object });
    assert.equal(r.statusCode, 200, `${method} ${url}`);
  }
  await c.stop();
});

test('a rotated admin credential (the row deleted, a new one made) is refused at once', async () => {
  const first = await setup();
  const oldAdmin = first.admin!;
  await first.c.stop();
  // Admin tokens don't expire; rotating is how one is retired (docs/coordinator.md).
  const db = new Database(join(first.dataDir, 'knit.db'));
  db.exec('DELETE FROM admin_credentials');
  db.close();
  const second = await setup(first.dataDir);
  assert.match(second.admin!, /^knit_/, 'a new admin token is printed');
  const r = await second.c.app.inject({ method: 'GET', url: '/v1/admin/nodes', headers: bearer(oldAdmin) });
  assert.deepEqual([r.statusCode, errorOf(r).code], [401, 'KNIT_ERR_ADMIN_UNAUTHORIZED']);
  assert.equal((await second.c.app.inject({ method: 'GET', url: '/v1/admin/nodes', headers: bearer(second.admin!) })).statusCode, 200);
  await second.c.stop();
});

test('join refuses every unusable token with its code, changes nothing, and never echoes the token', async () => {
  const { c, admin, clock } = await setup();
  const good = bearer(admin!);
  const mk = async (payload: object) => (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: good, payload })).json().token as string;
  const single = await mk({});
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: single, nodeKey: key(), hostname: 'first' } });
  const expiring = await mk({ expiresInS: 60 });
  const revoked = await mk({ reusable: true });
  await c.app.inject({ method: 'DELETE', url: `/v1/admin/tokens/${parseToken(revoked)!.id}`, headers: good });
  const valid = parseToken(await mk({ reusable: true }))!;
  const foreign = await setup();
  const foreignToken = (await foreign.c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: bearer(foreign.admin!), payload: {} })).json().token as string;
  await foreign.c.stop();
  clock.advance(61_000);
  const forged = encodeToken({ kind: 'join', id: Buffer.from(valid.id, 'hex'), secret: new Uint8Array(32), coordinatorKey: Buffer.from(valid.coordinatorKey, 'base64'), url: valid.url });
  const cases: [string, string, number, string][] = [
    ['the admin token', admin!, 401, 'KNIT_ERR_TOKEN_INVALID'],
    ['a used single-use token', single, 401, 'KNIT_ERR_TOKEN_USED'],
    ['an expired token', expiring, 401, 'KNIT_ERR_TOKEN_EXPIRED'],
    ['a revoked token', revoked, 401, 'KNIT_ERR_TOKEN_INVALID'],
    ['a valid id with a forged secret', forged, 401, 'KNIT_ERR_TOKEN_INVALID'],
    ['another coordinator\'s token', foreignToken, 400, 'KNIT_ERR_TOKEN_WRONG_COORDINATOR'],
    ['not a token', 'knit_AAAA', 401, 'KNIT_ERR_TOKEN_INVALID'],
  ];
  const before = await snapshot(c);
  for (const [what, token, status, code] of cases) {
    const r = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'intruder' } });
    assert.deepEqual([r.statusCode, errorOf(r).code], [status, code], what);
    assert.ok(!r.body.includes(token.slice(5, 30)), `${what}: the answer doesn't echo the token`);
  }
  assert.equal(await snapshot(c), before, 'no refused join left a trace');
  await c.stop();
});

// ---- the control channel ----------------------------------------------------------------

/** An agent on the hub that speaks by hand and records what it is sent. */
function session(hub: ControlHub) {
  const sent: any[] = [];
  let closed: { code: number; reason: string } | undefined;
  const h = hub.connect({ send: (t) => sent.push(JSON.parse(String(t))), close: (code, reason) => { closed = { code, reason }; }, remoteAddress: '127.0.0.1' });
  const challenge = sent[0];
  return {
    sent, h, challenge,
    get closed() { return closed; },
    send: (m: object) => h.receive(JSON.stringify(m)),
    helloFrame(node: KeyPair, o: { proofKey?: Uint8Array; claimKey?: string; discoKey?: string; serverNonce?: string } = {}) {
      const nodeKey = o.claimKey ?? encodeKey(node.publicKey);
      const discoKey = o.discoKey ?? key();
      const k = controlAuthKey(o.proofKey ?? node.privateKey, challenge.coordinatorKey)!;
      const clientNonce = Buffer.alloc(32, 9).toString('base64');
      return { type: 'hello', v: 1, nodeKey, discoKey, clientNonce, proof: helloProof(k, o.serverNonce ?? challenge.serverNonce, clientNonce, nodeKey, discoKey), lastVersion: 0 };
    },
  };
}

async function mesh() {
  const s = await setup();
  const token = (await s.c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: bearer(s.admin!), payload: { reusable: true } })).json().token as string;
  const enroll = async (name: string) => {
    const kp = generateKeyPair();
    const r = await s.c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: encodeKey(kp.publicKey), hostname: name } });
    return { kp, id: r.json().node.id as number, key: encodeKey(kp.publicKey) };
  };
  const victim = await enroll('victim');
  const mallory = await enroll('mallory');
  s.clock.advance(100);
  const v = session(s.c.hub);
  v.send(v.helloFrame(victim.kp));
  v.send({ type: 'endpoints', endpoints: ['198.18.0.10:41641'], natType: 'endpoint-independent' });
  s.clock.advance(100);
  return { ...s, token, victim, mallory, v };
}

test('the node key must be proven: wrong key, claimed key, replayed hello and a second hello are all refused and change nothing', async () => {
  const { c, clock, victim, mallory, v } = await mesh();
  const before = await snapshot(c);
  const cases: [string, (s: ReturnType<typeof session>) => void, number, string][] = [
    ['the victim\'s key, proof made with mallory\'s private key', (s) => s.send(s.helloFrame(victim.kp, { proofKey: mallory.kp.privateKey })), 4403, 'KNIT_ERR_AUTH_FAILED'],
    ['mallory\'s proof, the victim\'s key claimed', (s) => { const f = s.helloFrame(mallory.kp); s.send({ ...f, nodeKey: victim.key }); }, 4403, 'KNIT_ERR_AUTH_FAILED'],
    ['the victim\'s hello replayed on a new connection (other server nonce)', (s) => s.send(v.helloFrame(victim.kp)), 4403, 'KNIT_ERR_AUTH_FAILED'],
    ['a valid proof, then the disco key swapped (the proof binds it)', (s) => { const f = s.helloFrame(mallory.kp); s.send({ ...f, discoKey: key() }); }, 4403, 'KNIT_ERR_AUTH_FAILED'],
    ['an unregistered key with a wrong proof learns nothing (4403, not 4404)', (s) => s.send(s.helloFrame(generateKeyPair(), { proofKey: mallory.kp.privateKey })), 4403, 'KNIT_ERR_AUTH_FAILED'],
    ['endpoints before hello', (s) => s.send({ type: 'endpoints', endpoints: ['198.18.0.66:1'] }), 4400, 'KNIT_ERR_PROTOCOL'],
    ['call-me-maybe before hello', (s) => s.send({ type: 'call-me-maybe', to: victim.key, endpoints: ['198.18.0.66:1'] }), 4400, 'KNIT_ERR_PROTOCOL'],
    ['a second hello switching to the victim after authenticating as mallory', (s) => { s.send(s.helloFrame(mallory.kp)); s.send(s.helloFrame(victim.kp, { proofKey: mallory.kp.privateKey })); }, 4400, 'KNIT_ERR_PROTOCOL'],
  ];
  for (const [what, act, close, code] of cases) {
    const s = session(c.hub);
    act(s);
    assert.equal(s.closed?.code, close, what);
    assert.equal(s.sent.at(-1).type, 'error', what);
    assert.equal(s.sent.at(-1).code, code, what);
    clock.advance(100);
  }
  assert.equal(v.closed, undefined, 'the victim\'s own session was never replaced');
  const after = JSON.parse(await snapshot(c)) as { nodes: { id: number; online: boolean; discoKey: string; endpoints: string[] }[] };
  const was = JSON.parse(before) as typeof after;
  const vNow = after.nodes.find((n) => n.id === victim.id)!;
  const vWas = was.nodes.find((n) => n.id === victim.id)!;
  assert.deepEqual([vNow.discoKey, vNow.endpoints, vNow.online], [vWas.discoKey, vWas.endpoints, true], 'the victim is untouched');
  await c.stop();
});

test('a node can only speak for itself: endpoints, call-me-maybe and removal of another node', async () => {
  const { c, clock, victim, mallory, v } = await mesh();
  const m = session(c.hub);
  m.send(m.helloFrame(mallory.kp));
  clock.advance(100);
  const victimBefore = JSON.stringify(c.registry.peer(victim.id));
  // Endpoints naming the victim: the message has no field for whose endpoints they are, so
  // extra fields are ignored and the report lands on the sender, whatever it claims.
  m.send({ type: 'endpoints', endpoints: ['198.18.0.66:41641'], natType: 'unknown', id: victim.id, nodeKey: victim.key, node: victim.id });
  clock.advance(100);
  assert.equal(JSON.stringify(c.registry.peer(victim.id)), victimBefore, 'the victim\'s endpoints are its own');
  assert.deepEqual(c.registry.peer(mallory.id)!.endpoints, ['198.18.0.66:41641']);
  // call-me-maybe claiming to be from the victim: relayed with mallory's proven key.
  m.send({ type: 'call-me-maybe', to: victim.key, endpoints: ['198.18.0.66:41641'], from: victim.key });
  const relayed = v.sent.filter((x) => x.type === 'call-me-maybe');
  assert.equal(relayed.length, 1);
  assert.equal(relayed[0].from, mallory.key, 'from is the authenticated sender, never the claim');
  // call-me-maybe aimed at a victim's loopback services or a multicast group: the endpoint is
  // dropped (it costs that endpoint, not the session: issue 16), and with nothing left, nothing is relayed.
  for (const ep of ['127.0.0.1:22', '224.0.0.251:5353', '0.0.0.0:1', '255.255.255.255:9']) {
    const s2 = session(c.hub);
    s2.send(s2.helloFrame(mallory.kp));
    s2.send({ type: 'call-me-maybe', to: victim.key, endpoints: [ep] });
    assert.equal(s2.closed, undefined, ep);
  }
  assert.equal(v.sent.filter((x) => x.type === 'call-me-maybe').length, 1, 'nothing more reached the victim');
  // There is no control message that removes, renames or re-keys a node: any such type is refused.
  for (const type of ['remove', 'delete', 'admin', 'upsert', 'rename', 'disco', 'token']) {
    const s3 = session(c.hub);
    s3.send(s3.helloFrame(mallory.kp));
    s3.send({ type, id: victim.id, nodeKey: victim.key });
    assert.equal(s3.closed?.code, 4400, type);
    assert.equal(s3.sent.at(-1).code, 'KNIT_ERR_PROTOCOL', type);
  }
  assert.ok(c.registry.peer(victim.id), 'the victim is still in the mesh');
  await c.stop();
});

test('a removed node can neither reconnect nor re-join with its spent or revoked token', async () => {
  const { c, clock, admin, victim, v } = await mesh();
  const single = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: bearer(admin!), payload: {} })).json().token as string;
  const kp = generateKeyPair();
  const joined = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: single, nodeKey: encodeKey(kp.publicKey), hostname: 'gone' } });
  const id = joined.json().node.id as number;
  const s = session(c.hub);
  s.send(s.helloFrame(kp));
  clock.advance(100);
  assert.equal((await c.app.inject({ method: 'DELETE', url: `/v1/admin/nodes/${id}`, headers: bearer(admin!) })).statusCode, 200);
  assert.equal(s.closed?.code, 4404, 'its session is closed for good');
  // Reconnecting with a valid proof: 4404 (only the key's holder learns it was removed).
  const again = session(c.hub);
  again.send(again.helloFrame(kp));
  assert.deepEqual([again.closed?.code, again.sent.at(-1).code], [4404, 'KNIT_ERR_NODE_UNKNOWN']);
  // Re-joining with the single-use token it spent: used.
  const rejoin = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: single, nodeKey: encodeKey(kp.publicKey), hostname: 'gone' } });
  assert.deepEqual([rejoin.statusCode, errorOf(rejoin).code], [401, 'KNIT_ERR_TOKEN_USED']);
  // A node that joined with a reusable token is locked out once the token is revoked too.
  const { token: reusable } = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: bearer(admin!), payload: { reusable: true } })).json() as { token: string };
  const kp2 = generateKeyPair();
  const id2 = (await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: reusable, nodeKey: encodeKey(kp2.publicKey), hostname: 'gone2' } })).json().node.id as number;
  await c.app.inject({ method: 'DELETE', url: `/v1/admin/nodes/${id2}`, headers: bearer(admin!) });
  await c.app.inject({ method: 'DELETE', url: `/v1/admin/tokens/${parseToken(reusable)!.id}`, headers: bearer(admin!) });
  const rejoin2 = await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token: reusable, nodeKey: encodeKey(kp2.publicKey), hostname: 'gone2' } });
  assert.deepEqual([rejoin2.statusCode, errorOf(rejoin2).code], [401, 'KNIT_ERR_TOKEN_INVALID']);
  assert.equal(c.registry.peer(id), undefined);
  assert.equal(c.registry.peer(id2), undefined);
  assert.ok(c.registry.peer(victim.id) && v.closed === undefined, 'bystanders unaffected');
  await c.stop();
});

test('public routes reveal no secrets: /healthz and /metrics carry counts only; unknown routes are 404 in the common shape', async () => {
  const { c, admin } = await setup();
  const token = (await c.app.inject({ method: 'POST', url: '/v1/admin/tokens', headers: bearer(admin!), payload: {} })).json().token as string;
  await c.app.inject({ method: 'POST', url: '/v1/join', payload: { token, nodeKey: key(), hostname: 'a' } });
  for (const url of ['/healthz', '/metrics']) {
    const body = (await c.app.inject({ method: 'GET', url })).body;
    assert.ok(!body.includes('knit_') || url === '/metrics', url);
    assert.ok(!body.includes(token.slice(5, 40)) && !body.includes(admin!.slice(5, 40)), url);
    assert.ok(!/nodeKey|100\.96\./.test(body), `${url} names no node`);
  }
  for (const [method, url] of [['GET', '/v1/admin'], ['POST', '/v1/admin/nodes'], ['PUT', '/v1/admin/tokens'], ['GET', '/v1/join'], ['GET', '/../etc/passwd']] as const) {
    const r = await c.app.inject({ method, url, headers: bearer(admin!) });
    assert.deepEqual([r.statusCode, errorOf(r).code], [404, 'KNIT_ERR_NOT_FOUND'], `${method} ${url}`);
  }
  await c.stop();
});
