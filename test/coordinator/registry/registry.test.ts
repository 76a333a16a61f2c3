import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { KnitError } from '../../../shared/errors.js';
import { parseToken } from '../../../shared/token.js';
import { isValidHostname, joinProof, proofsEqual } from '../../../shared/wire/control.js';
import { Registry } from '../../../coordinator/registry/registry.js';
import { canonicalIpv4Prefix, DEFAULT_IPV4_PREFIX } from '../../../coordinator/registry/join-rows.js';
import { REPLICA_TIMEOUT_MS } from '../../../coordinator/registry/liveness.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';
import { ManualClock } from '../../helpers/manual-clock.js';

async function setup(prefix?: string) {
  const clock = new ManualClock();
  const store = new SqliteStore(':memory:');
  const reg = await Registry.open(store, { clock, url: 'http://127.0.0.1:8080', ipv4Prefix: prefix, exclusive: true });
  return { clock, store, reg };
}

const open = (store: SqliteStore, clock: ManualClock, more: { ipv4Prefix?: string } = {}) =>
  Registry.open(store, { clock, url: 'http://127.0.0.1:1', exclusive: true, ...more });

const node = () => {
  const kp = generateKeyPair();
  return { kp, nodeKey: encodeKey(kp.publicKey) };
};

async function code(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof KnitError) return e.code;
    throw e;
  }
  return undefined;
}

test('token lifecycle: single use, reuse limit, expiry, revocation', async () => {
  const { clock, reg } = await setup();
  const single = (await reg.createToken({})).token;
  const t = parseToken(single)!;
  assert.equal(t.kind, 'join');
  assert.equal(t.secret.length * 8, 256, 'a token carries 256 bits of secret');
  assert.equal(t.url, 'http://127.0.0.1:8080');
  assert.equal(t.coordinatorKey, reg.coordinatorKey);

  assert.equal(await code(() => reg.join({ token: single, nodeKey: node().nodeKey, hostname: 'a' })), undefined);
  assert.equal(await code(() => reg.join({ token: single, nodeKey: node().nodeKey, hostname: 'b' })), 'KNIT_ERR_TOKEN_USED');

  const twice = (await reg.createToken({ reusable: true, uses: 2 })).token;
  await reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'c' });
  await reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'd' });
  assert.equal(await code(() => reg.join({ token: twice, nodeKey: node().nodeKey, hostname: 'e' })), 'KNIT_ERR_TOKEN_USED');

  const expiring = (await reg.createToken({ reusable: true, expiresInMs: 60_000 })).token;
  await reg.join({ token: expiring, nodeKey: node().nodeKey, hostname: 'f' });
  clock.advance(60_000);
  assert.equal(await code(() => reg.join({ token: expiring, nodeKey: node().nodeKey, hostname: 'g' })), 'KNIT_ERR_TOKEN_EXPIRED');

  const revoked = await reg.createToken({ reusable: true });
  assert.ok(await reg.revokeToken(revoked.summary.id));
  assert.equal(await code(() => reg.join({ token: revoked.token, nodeKey: node().nodeKey, hostname: 'h' })), 'KNIT_ERR_TOKEN_INVALID');

  // A token with the right id but a wrong secret is invalid (hash compared, not the id).
  const forged = single.slice(0, 30) + (single[30] === 'A' ? 'B' : 'A') + single.slice(31);
  assert.equal(await code(() => reg.join({ token: forged, nodeKey: node().nodeKey, hostname: 'i' })), 'KNIT_ERR_TOKEN_INVALID');
  assert.equal(await code(() => reg.join({ token: 'knit_garbage', nodeKey: node().nodeKey, hostname: 'j' })), 'KNIT_ERR_TOKEN_INVALID');
});

test('the token list never contains secrets or their hashes', async () => {
  const { reg } = await setup();
  await reg.createToken({ tags: ['web'] });
  const listed = JSON.stringify(await reg.listTokens());
  assert.ok(!listed.includes('secretHash') && !listed.includes('secret'));
});

test('joining again with the same node key returns the same node and consumes nothing', async () => {
  const { reg } = await setup();
  const tok = (await reg.createToken({})).token;
  const n = node();
  const first = await reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'box' });
  const again = await reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'box' });
  assert.equal(again.created, false);
  assert.deepEqual(again.response.node, first.response.node);
  const proof = joinProof(n.kp.privateKey, reg.coordinatorKey, n.nodeKey, first.response.node.id, first.response.node.addresses)!;
  assert.ok(proofsEqual(first.response.coordinatorProof, proof), 'the agent can verify the join answer against the pinned key');
});

test('address allocation: sequential, unique names, freed addresses reused, exhaustion reported', async () => {
  const { reg } = await setup('10.99.0.0/30'); // two usable hosts
  const tok = (await reg.createToken({ reusable: true })).token;
  const a = (await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'same' })).response.node;
  const b = (await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'same' })).response.node;
  assert.deepEqual([a.addresses[0], b.addresses[0]], ['10.99.0.1/32', '10.99.0.2/32']);
  assert.deepEqual([a.name, b.name], ['same', 'same-2']);
  assert.notEqual(a.addresses[1], b.addresses[1]);
  assert.equal(await code(() => reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'x' })), 'KNIT_ERR_ADDRESS_EXHAUSTED');
  assert.ok(await reg.remove(a.id));
  const c = (await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'x' })).response.node;
  assert.equal(c.addresses[0], '10.99.0.1/32');
});

test('joins commit their change to the feed at once; session changes queue for the window; unchanged values queue nothing', async () => {
  const { reg, store } = await setup();
  const tok = (await reg.createToken({})).token;
  const id = (await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'n' })).response.node.id;
  assert.equal(reg.hasPending, false);
  assert.deepEqual((await store.changesSince(0, 10)).map((r) => r.changes.map((c) => c.op)), [['upsert']]);
  reg.setEndpoints(id, ['198.18.0.1:41641'], 'endpoint-independent');
  reg.setEndpoints(id, ['198.18.0.1:41641'], 'endpoint-independent');
  reg.setOnline(id, true);
  reg.setOnline(id, true);
  assert.deepEqual(reg.takePending().changes.map((c) => c.op), ['endpoints', 'online']);
});

test('ephemeral nodes expire only after being offline for the timeout', async () => {
  const { clock, reg } = await setup();
  const tok = (await reg.createToken({ ephemeral: true })).token;
  const id = (await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'eph' })).response.node.id;
  reg.setOnline(id, true);
  clock.advance(3_600_000);
  assert.deepEqual(reg.expiredEphemeral(600_000), [], 'online: never expires');
  reg.setOnline(id, false);
  clock.advance(599_999);
  assert.deepEqual(reg.expiredEphemeral(600_000), []);
  clock.advance(1);
  assert.deepEqual(reg.expiredEphemeral(600_000), [id]);
});

test('mesh prefixes: the default /16 and its first address; a ULA /48 holding each node\'s v6 address', async () => {
  const { reg } = await setup();
  assert.equal(reg.ipv4PrefixText, DEFAULT_IPV4_PREFIX);
  assert.match(reg.ulaPrefix, /^fd[0-9a-f]{2}:[0-9a-f]{4}:[0-9a-f]{4}::\/48$/);
  const n = (await reg.join({ token: (await reg.createToken({})).token, nodeKey: node().nodeKey, hostname: 'first' })).response.node;
  assert.equal(n.addresses[0], '100.96.0.1/32');
  assert.equal(n.addresses[1], `${reg.ulaPrefix.replace('::/48', '')}::1/128`);
});

test('the IPv4 prefix is canonicalised, fixed at creation, and a different one later is a usage error', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const first = new SqliteStore(path);
    assert.equal((await open(first, clock, { ipv4Prefix: '10.7.3.9/16' })).ipv4PrefixText, '10.7.0.0/16');
    await first.close();
    const same = new SqliteStore(path);
    assert.equal((await open(same, clock, { ipv4Prefix: '10.7.0.0/16' })).ipv4PrefixText, '10.7.0.0/16');
    assert.equal((await open(same, clock)).ipv4PrefixText, '10.7.0.0/16', 'left out: the stored one');
    assert.equal(await code(() => open(same, clock, { ipv4Prefix: '10.8.0.0/16' })), 'KNIT_ERR_USAGE');
    await same.close();
    assert.equal(canonicalIpv4Prefix('10.0.0.0/31'), undefined);
    assert.equal(canonicalIpv4Prefix('300.0.0.0/16'), undefined);
    assert.equal(await code(() => open(new SqliteStore(':memory:'), clock, { ipv4Prefix: 'nope' })), 'KNIT_ERR_USAGE');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('name collisions get -2, -3 … and names stay hostnames of at most 63 characters', async () => {
  const { reg } = await setup();
  const tok = (await reg.createToken({ reusable: true })).token;
  const names: string[] = [];
  for (let i = 0; i < 4; i++) names.push((await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: 'CI' })).response.node.name);
  assert.deepEqual(names, ['ci', 'ci-2', 'ci-3', 'ci-4']);
  const long = 'a'.repeat(63);
  const longNames: string[] = [];
  for (let i = 0; i < 3; i++) longNames.push((await reg.join({ token: tok, nodeKey: node().nodeKey, hostname: long })).response.node.name);
  assert.deepEqual(longNames.map((n) => n.length), [63, 63, 63]);
  assert.deepEqual(longNames.slice(1).map((n) => n.slice(-2)), ['-2', '-3']);
  assert.ok(longNames.every(isValidHostname));
});

test('acknowledged joins and re-joins survive reopening the store: same node, same addresses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const store = new SqliteStore(path);
    const reg = await open(store, clock);
    const tok = (await reg.createToken({})).token;
    const n = node();
    const first = (await reg.join({ token: tok, nodeKey: n.nodeKey, hostname: 'keeper' })).response;
    await store.close();
    const reopened = await open(new SqliteStore(path), clock);
    assert.equal(reopened.coordinatorKey, reg.coordinatorKey, 'the coordinator key is stored');
    assert.equal(reopened.startVersion, 1, 'the version is where the feed left it (the join)');
    assert.deepEqual(reopened.history.map((h) => h.version), [1], 'and the feed is there for agents resuming');
    const again = await reopened.join({ token: tok, nodeKey: n.nodeKey, hostname: 'renamed' });
    assert.equal(again.created, false);
    assert.deepEqual(again.response.node, first.node);
    assert.equal(await code(() => reopened.join({ token: tok, nodeKey: node().nodeKey, hostname: 'other' })), 'KNIT_ERR_TOKEN_USED');
    await reopened.store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after a restart, ephemeral nodes get the whole timeout to come back; online nodes\' last-seen is refreshed without a delta', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  try {
    const path = join(dir, 'knit.db');
    const clock = new ManualClock();
    const store = new SqliteStore(path);
    const reg = await open(store, clock);
    const eph = (await reg.join({ token: (await reg.createToken({ ephemeral: true })).token, nodeKey: node().nodeKey, hostname: 'eph' })).response.node.id;
    const stay = (await reg.join({ token: (await reg.createToken({})).token, nodeKey: node().nodeKey, hostname: 'stay' })).response.node.id;
    reg.setOnline(eph, true);
    reg.setOnline(stay, true);
    await reg.commitWindow(reg.takePending().changes);
    clock.advance(300_000);
    await reg.refreshLastSeen([eph, stay]);
    assert.equal(reg.hasPending, false, 'last-seen refresh is not news for peers');
    assert.equal((await store.nodes()).find((n) => n.id === stay)!.lastSeen, clock.wallNow(), 'written to disk');
    assert.equal(reg.peer(stay)!.lastSeen, clock.wallNow());
    const before = await store.latestVersion();
    await store.close(); // the coordinator dies here, with both nodes online

    clock.advance(3_600_000); // down for an hour
    const back = await open(new SqliteStore(path), clock);
    assert.equal(back.peer(eph)!.online, false, 'nobody is online until they reconnect');
    assert.equal(back.startVersion, before + 1, 'one version says so, for agents resuming from before');
    const offline = back.history.at(-1)!.changes.map((c) => (c.op === 'online' ? `${c.id} ${c.online}` : c.op)).sort();
    assert.deepEqual(offline, [`${eph} false`, `${stay} false`].sort());
    assert.deepEqual(back.expiredEphemeral(600_000), [], 'the outage does not count');
    clock.advance(600_000);
    assert.deepEqual(back.expiredEphemeral(600_000), [eph]);
    await back.store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('group commit: a batch of joins is one transaction; each refused join changes nothing and spares the others', async () => {
  const { reg, store } = await setup();
  const single = (await reg.createToken({})).token;
  const reusable = (await reg.createToken({ reusable: true })).token;
  const [a, b, c] = [node(), node(), node()];
  const results = await reg.joinMany([
    { token: single, nodeKey: a.nodeKey, hostname: 'a' },
    { token: single, nodeKey: b.nodeKey, hostname: 'b' }, // the single use is gone by now
    { token: 'knit_garbage', nodeKey: c.nodeKey, hostname: 'c' },
    { token: reusable, nodeKey: c.nodeKey, hostname: 'c' },
    { token: reusable, nodeKey: a.nodeKey, hostname: 'a-again' }, // a's key, joined earlier in this very batch
  ]);
  const summary = results.map((r) => (r.ok ? `${r.response.node.name}${r.created ? ' created' : ''}` : (r.error as KnitError).code));
  assert.deepEqual(summary, ['a created', 'KNIT_ERR_TOKEN_USED', 'KNIT_ERR_TOKEN_INVALID', 'c created', 'a']);
  assert.deepEqual((await store.nodes()).map((n) => n.name), ['a', 'c'], 'on disk: exactly the accepted joins');
  assert.deepEqual([...reg.peers()].map((p) => p.name), ['a', 'c'], 'in memory: the same');
  assert.deepEqual((await store.changesSince(0, 10)).map((r) => r.changes.map((x) => x.op)), [['upsert', 'upsert']], 'one version, one upsert per new node');
  const r0 = results[0]!;
  assert.ok(r0.ok && proofsEqual(r0.response.coordinatorProof, joinProof(a.kp.privateKey, reg.coordinatorKey, a.nodeKey, r0.response.node.id, r0.response.node.addresses)!));
});

test('group commit: when the batch cannot be written, every join in it fails and none enters the map', async () => {
  const { reg, store } = await setup();
  const reusable = (await reg.createToken({ reusable: true })).token;
  await store.close(); // the disk goes away
  const results = await reg.joinMany([node(), node()].map((n, i) => ({ token: reusable, nodeKey: n.nodeKey, hostname: `n${i}` })));
  assert.deepEqual(results.map((r) => r.ok), [false, false]);
  assert.equal(reg.nodeCount, 0);
  assert.equal(reg.hasPending, false);
});

/** Two registries on one database file in a fresh directory, as two replicas sharing a store; close() removes it all. */
async function twoReplicas() {
  const dir = mkdtempSync(join(tmpdir(), 'knit-reg-'));
  const clock = new ManualClock();
  const path = join(dir, 'knit.db');
  const a = await Registry.open(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1', replica: 'a' });
  const b = await Registry.open(new SqliteStore(path), { clock, url: 'http://127.0.0.1:1', replica: 'b' });
  const id = (await a.join({ token: (await a.createToken({})).token, nodeKey: node().nodeKey, hostname: 'n' })).response.node.id;
  for (const r of (await b.store.changesSince(0, 10)).flatMap((x) => x.changes)) b.applyChange(r);
  const holder = async () => (await a.store.nodes()).find((n) => n.id === id)!.onlineReplica;
  const close = async () => {
    await Promise.all([a.store.close(), b.store.close()]);
    rmSync(dir, { recursive: true, force: true });
  };
  return { clock, a, b, id, holder, close };
}

test('replicas: a session that moved to another replica is not marked offline by the one it left', async () => {
  const { a, b, id, holder, close } = await twoReplicas();
  try {
    a.setOnline(id, true);
    await a.commitWindow(a.takePending().changes);
    assert.equal(await holder(), 'a');
    b.setOnline(id, true); // the agent reconnected to b before a noticed its old connection die
    await b.commitWindow(b.takePending().changes);
    assert.equal(await holder(), 'b');
    const before = await a.store.latestVersion();
    a.setOnline(id, false); // …and now a notices
    assert.equal(await a.commitWindow(a.takePending().changes), undefined, 'nothing to commit: the node is not a\'s to mark offline');
    assert.equal(await a.store.latestVersion(), before);
    assert.equal(await holder(), 'b');
    assert.equal(a.peer(id)!.online, true, 'memory put back');
  } finally {
    await close();
  }
});

test('replicas: the nodes of a replica that stopped stamping itself alive are marked offline in the feed', async () => {
  const { clock, a, b, id, holder, close } = await twoReplicas();
  try {
    a.setOnline(id, true);
    await a.commitWindow(a.takePending().changes);
    await b.heartbeat(); // b first sees a's count
    clock.advance(REPLICA_TIMEOUT_MS / 2);
    await a.heartbeat();
    await b.heartbeat(); // it moved: a lives
    clock.advance(REPLICA_TIMEOUT_MS - 1_000);
    await b.heartbeat();
    assert.equal(await holder(), 'a', 'within the timeout of its last beat: still a\'s');
    clock.advance(2_000); // a was killed: its count stands still
    const before = await b.store.latestVersion();
    await b.heartbeat();
    assert.equal(await holder(), null);
    const [row] = await b.store.changesSince(before, 10);
    assert.deepEqual(row!.changes.map((c) => c.op === 'online' && [c.id, c.online]), [[id, false]]);
  } finally {
    await close();
  }
});

test('replicas: an "offline" from the replica a session left, committed after the session moved, is answered with "online"', async () => {
  const { a, b, id, holder, close } = await twoReplicas();
  try {
    a.setOnline(id, true);
    await a.commitWindow(a.takePending().changes);
    for (const r of await b.store.changesSince(0, 10)) if (r.origin !== 'b') r.changes.forEach((c) => b.applyChange(c));
    b.setOnline(id, true); // the agent reconnected to b: online already, so nothing for peers yet
    const before = await a.store.latestVersion();
    a.setOnline(id, false); // a notices its old connection died, before b has written anything
    await a.commitWindow(a.takePending().changes);
    const [offline] = await b.store.changesSince(before, 10);
    assert.deepEqual(offline!.changes.map((c) => c.op === 'online' && c.online), [false], 'a still held it on disk: its offline went through');
    offline!.changes.forEach((c) => b.applyChange(c)); // b follows the feed
    assert.equal(b.peer(id)!.online, true, 'b serves it: memory stays online');
    const { changes } = b.takePending();
    assert.deepEqual(changes.map((c) => c.op === 'online' && c.online), [true], 'and peers are told again');
    await b.commitWindow(changes);
    assert.equal(await holder(), 'b');
  } finally {
    await close();
  }
});

test('a node removed while its session changes were queued gets none of them in the feed after its removal', async () => {
  const { a, b, id, close } = await twoReplicas();
  try {
    b.setOnline(id, true); // b serves the node; its window is not committed yet…
    b.setEndpoints(id, ['198.18.0.9:41641'], 'none');
    const { changes } = b.takePending();
    assert.ok(await a.remove(id)); // …when an admin removes it through a
    const before = await b.store.latestVersion();
    assert.equal(await b.commitWindow(changes), undefined, 'nothing left to commit');
    assert.equal(await b.store.latestVersion(), before, 'no change for a node peers were told is gone');
  } finally {
    await close();
  }
});
