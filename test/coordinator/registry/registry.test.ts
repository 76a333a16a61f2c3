import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { KnitError } from '../../../shared/errors.js';
import { parseToken } from '../../../shared/token.js';
import { joinProof, proofsEqual } from '../../../shared/wire/control.js';
import { Registry } from '../../../coordinator/registry/registry.js';
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
