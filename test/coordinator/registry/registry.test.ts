import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { KnitError } from '../../../shared/errors.js';
import { parseToken } from '../../../shared/token.js';
import { isValidHostname, joinProof, proofsEqual } from '../../../shared/wire/control.js';
import { canonicalIpv4Prefix, DEFAULT_IPV4_PREFIX, Registry } from '../../../coordinator/registry/registry.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';
import { ManualClock } from '../../helpers/manual-clock.js';

function setup(prefix?: string) {
  const clock = new ManualClock();
  const store = new SqliteStore(':memory:');
  const reg = new Registry(store, { clock, url: 'http://127.0.0.1:8080', ipv4Prefix: prefix });
  return { clock, store, reg };
}

const node = () => {
  const kp = generateKeyPair();
  return { kp, nodeKey: encodeKey(kp.publicKey) };
};

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof KnitError) return e.code;
    throw e;
  }
  return undefined;
}

test('token lifecycle: single use, reuse limit, expiry, revocation', () => {
  const { clock, reg } = setup();
  const single = reg.createToken({}).token;
  const t = parseToken(single)!;
  assert.equal(t.kind, 'join');
  assert.equal(t.secret.length * 8, 256, 'a token carries 256 bits of secret');
  assert.equal(t.url, 'http://127.0.0.1:8080');
  assert.equal(t.coordinatorKey, reg.coordinatorKey);

  assert.equal(code(() => reg.join({ token: single, nodeKey: node().nodeKey, hostname: 'a' })), undefined);
  assert.equal(code(() => reg.join({ token: single, nodeKey: node().nodeKey, hostname: 'b' })), 'KNIT_ERR_TOKEN_USED');

  const twice = reg.createToken({ reusable: true, uses: 2 }).token;
  reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'c' });
  reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'd' });
  assert.equal(code(() => reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'e' })), 'KNIT_ERR_TOKEN_USED');

  const expiring = reg.createToken({ reusable: true, expiresInMs: 60_000 }).token;
  reg.join({ token: expiring, nodeKey: node().nodeKey, hostname: 'f' });
  clock.advance(60_000);
  assert.equal(code(() => reg.join({ token: expiring, nodeKey: node().nodeKey, hostname: 'g' })), 'KNIT_ERR_TOKEN_EXPIRED');

  const revoked = reg.createToken({ reusable: true });
  assert.ok(reg.revokeToken(revoked.summary.id));
  assert.equal(code(() => reg.join({ token: revoked.token, nodeKey: node().nodeKey, hostname: 'h' })), 'KNIT_ERR_TOKEN_INVALID');

  // A token with the right id but a wrong secret is invalid (hash compared, not the id).
  const forged = single.slice(0, 30) + (single[30] === 'A' ? 'B' : 'A') + single.slice(31);
  assert.equal(code(() => reg.join({ token: forged, nodeKey: node().nodeKey, hostname: 'i' })), 'KNIT_ERR_TOKEN_INVALID');
  assert.equal(code(() => reg.join({ token: 'knit_garbage', nodeKey: node().nodeKey, hostname: 'j' })), 'KNIT_ERR_TOKEN_INVALID');
});

test('the token list never contains secrets or their hashes', () => {
  const { reg } = setup();
  reg.createToken({ tags: ['web'] });
  const listed = JSON.stringify(reg.listTokens());
  assert.ok(!listed.includes('secretHash') && !listed.includes('secret'));
});

test('joining again with the same node key returns the same node and consumes nothing', () => {
  const { reg } = setup();
  const tok = reg.createToken({}).token;
  const n = node();
  const first = reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'box' });
  const again = reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'box' });
  assert.equal(again.created, false);
  assert.deepEqual(again.response.node, first.response.node);
  const proof = joinProof(n.kp.privateKey, reg.coordinatorKey, n.nodeKey, first.response.node.id, first.response.node.addresses)!;
  assert.ok(proofsEqual(first.response.coordinatorProof, proof), 'the agent can verify the join answer against the pinned key');
});

test('address allocation: sequential, unique names, freed addresses reused, exhaustion reported', () => {
  const { reg } = setup('10.99.0.0/30'); // two usable hosts
  const tok = reg.createToken({ reusable: true }).token;
  const a = reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'same' }).response.node;
  const b = reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'same' }).response.node;
  assert.deepEqual([a.addresses[0], b.addresses[0]], ['10.99.0.1/32', '10.99.0.2/32']);
  assert.deepEqual([a.name, b.name], ['same', 'same-2']);
  assert.notEqual(a.addresses[1], b.addresses[1]);
  assert.equal(code(() => reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'x' })), 'KNIT_ERR_ADDRESS_EXHAUSTED');
  assert.ok(reg.remove(a.id));
  const c = reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'x' }).response.node;
  assert.equal(c.addresses[0], '10.99.0.1/32');
});

test('mutations queue changes for the hub; unchanged values queue nothing', () => {
  const { reg } = setup();
  const tok = reg.createToken({}).token;
  const id = reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'n' }).response.node.id;
  assert.deepEqual(reg.takePending().changes.map((c) => c.op), ['upsert']);
  reg.setEndpoints(id, ['198.18.0.1:41641'], 'endpoint-independent');
  reg.setEndpoints(id, ['198.18.0.1:41641'], 'endpoint-independent');
  reg.setOnline(id, true);
  reg.setOnline(id, true);
  assert.deepEqual(reg.takePending().changes.map((c) => c.op), ['endpoints', 'online']);
});

test('ephemeral nodes expire only after being offline for the timeout', () => {
  const { clock, reg } = setup();
  const tok = reg.createToken({ ephemeral: true }).token;
  const id = reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'eph' }).response.node.id;
  reg.setOnline(id, true);
  clock.advance(3_600_000);
  assert.deepEqual(reg.expiredEphemeral(600_000), [], 'online: never expires');
  reg.setOnline(id, false);
  clock.advance(599_999);
  assert.deepEqual(reg.expiredEphemeral(600_000), []);
  clock.advance(1);
  assert.deepEqual(reg.expiredEphemeral(600_000), [id]);
});

test('mesh prefixes: the default /16 and its first address; a ULA /48 holding each node\'s v6 address', () => {
  const { reg } = setup();
  assert.equal(reg.ipv4PrefixText, DEFAULT_IPV4_PREFIX);
  assert.match(reg.ulaPrefix, /^fd[0-9a-f]{2}:[0-9a-f]{4}:[0-9a-f]{4}::\/48$/);
  const n = reg.join({ token: reg.createToken({}).token, nodeKey: node().nodeKey, hostname: 'first' }).response.node;
  assert.equal(n.addresses[0], '100.96.0.1/32');
  assert.equal(n.addresses[1], `${reg.ulaPrefix.replace('::/48', '')}::1/128`);
});

test('the IPv4 prefix is canonicalised, fixed at creation, and a different one later is a usage error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const first = new SqliteStore(path);
    assert.equal(new Registry(first, { clock, url: 'http://127.0.0.1:1', ipv4Prefix: '10.7.3.9/16' }).ipv4PrefixText, '10.7.0.0/16');
    first.close();
    const same = new SqliteStore(path);
    assert.equal(new Registry(same, { clock, url: 'http://127.0.0.1:1', ipv4Prefix: '10.7.0.0/16' }).ipv4PrefixText, '10.7.0.0/16');
    assert.equal(new Registry(same, { clock, url: 'http://127.0.0.1:1' }).ipv4PrefixText, '10.7.0.0/16', 'left out: the stored one');
    assert.equal(code(() => new Registry(same, { clock, url: 'http://127.0.0.1:1', ipv4Prefix: '10.8.0.0/16' })), 'KNIT_ERR_USAGE');
    same.close();
    assert.equal(canonicalIpv4Prefix('10.0.0.0/31'), undefined);
    assert.equal(canonicalIpv4Prefix('300.0.0.0/16'), undefined);
    assert.equal(code(() => new Registry(new SqliteStore(':memory:'), { clock, url: 'http://127.0.0.1:1', ipv4Prefix: 'nope' })), 'KNIT_ERR_USAGE');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('name collisions get -2, -3 … and names stay hostnames of at most 63 characters', () => {
  const { reg } = setup();
  const tok = reg.createToken({ reusable: true }).token;
  const names = Array.from({ length: 4 }, () => reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'CI' }).response.node.name);
  assert.deepEqual(names, ['ci', 'ci-2', 'ci-3', 'ci-4']);
  const long = 'a'.repeat(63);
  const longNames = Array.from({ length: 3 }, () => reg.join({ token: tok, nodeKey: node().nodeKey, hostname: long }).response.node.name);
  assert.deepEqual(longNames.map((n) => n.length), [63, 63, 63]);
  assert.deepEqual(longNames.slice(1).map((n) => n.slice(-2)), ['-2', '-3']);
  assert.ok(longNames.every(isValidHostname));
});

test('acknowledged joins and re-joins survive reopening the store: same node, same addresses', () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const store = new SqliteStore(path);
    const reg = new Registry(store, { clock, url: 'http://127.0.0.1:1' });
    const tok = reg.createToken({}).token;
    const n = node();
    const first = reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'keeper' }).response;
    store.close();
    const reopened = new Registry(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1' });
    assert.equal(reopened.coordinatorKey, reg.coordinatorKey, 'the coordinator key is stored');
    assert.ok(reopened.startVersion > reg.startVersion, 'each run starts past the last one');
    const again = reopened.join({ token: tok, nodeKey: n.nodeKey, hostname: 'renamed' });
    assert.equal(again.created, false);
    assert.deepEqual(again.response.node, first.node);
    assert.equal(code(() => reopened.join({ token: tok, nodeKey: node().nodeKey, hostname: 'other' })), 'KNIT_ERR_TOKEN_USED');
    reopened.store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after a restart, ephemeral nodes get the whole timeout to come back; online nodes\' last-seen is refreshed without a delta', () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const store = new SqliteStore(path);
    const reg = new Registry(store, { clock, url: 'http://127.0.0.1:1' });
    const eph = reg.join({ token: reg.createToken({ ephemeral: true }).token, nodeKey: node().nodeKey, hostname: 'eph' }).response.node.id;
    const stay = reg.join({ token: reg.createToken({}).token, nodeKey: node().nodeKey, hostname: 'stay' }).response.node.id;
    reg.setOnline(eph, true);
    reg.setOnline(stay, true);
    reg.persistWindow(1);
    reg.takePending();
    clock.advance(300_000);
    reg.refreshLastSeen([eph, stay]);
    assert.equal(reg.hasPending, false, 'last-seen refresh is not news for peers');
    assert.equal(store.nodeById(stay)!.lastSeen, clock.wallNow(), 'written to disk');
    assert.equal(reg.peer(stay)!.lastSeen, clock.wallNow());
    store.close(); // the coordinator dies here, with both nodes online

    clock.advance(3_600_000); // down for an hour
    const back = new Registry(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1' });
    assert.equal(back.peer(eph)!.online, false, 'nobody is online until they reconnect');
    assert.deepEqual(back.expiredEphemeral(600_000), [], 'the outage does not count');
    clock.advance(600_000);
    assert.deepEqual(back.expiredEphemeral(600_000), [eph]);
    back.store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('group commit: a batch of joins is one transaction; each refused join changes nothing and spares the others', () => {
  const { reg, store } = setup();
  const single = reg.createToken({}).token;
  const reusable = reg.createToken({ reusable: true }).token;
  const [a, b, c] = [node(), node(), node()];
  const results = reg.joinMany([
    { token: single, nodeKey: a.nodeKey, hostname: 'a' },
    { token: single, nodeKey: b.nodeKey, hostname: 'b' }, // the single use is gone by now
    { token: 'knit_garbage', nodeKey: c.nodeKey, hostname: 'c' },
    { token: reusable, nodeKey: c.nodeKey, hostname: 'c' },
    { token: reusable, nodeKey: a.nodeKey, hostname: 'a-again' }, // a's key, joined earlier in this very batch
  ]);
  const summary = results.map((r) => (r.ok ? `${r.response.node.name}${r.created ? ' created' : ''}` : (r.error as KnitError).code));
  assert.deepEqual(summary, ['a created', 'KNIT_ERR_TOKEN_USED', 'KNIT_ERR_TOKEN_INVALID', 'c created', 'a']);
  assert.deepEqual(store.nodes().map((n) => n.name), ['a', 'c'], 'on disk: exactly the accepted joins');
  assert.deepEqual([...reg.peers()].map((p) => p.name), ['a', 'c'], 'in memory: the same');
  assert.deepEqual(reg.takePending().changes.map((x) => x.op), ['upsert', 'upsert'], 'one upsert per new node');
  const r0 = results[0]!;
  assert.ok(r0.ok && proofsEqual(r0.response.coordinatorProof, joinProof(a.kp.privateKey, reg.coordinatorKey, a.nodeKey, r0.response.node.id, r0.response.node.addresses)!));
});

test('group commit: when the batch cannot be written, every join in it fails and none enters the map', () => {
  const { reg, store } = setup();
  const reusable = reg.createToken({ reusable: true }).token;
  store.close(); // the disk goes away
  const results = reg.joinMany([node(), node()].map((n, i) => ({ token: reusable, nodeKey: n.nodeKey, hostname: `n${i}` })));
  assert.deepEqual(results.map((r) => r.ok), [false, false]);
  assert.equal(reg.nodeCount, 0);
  assert.equal(reg.hasPending, false);
});
