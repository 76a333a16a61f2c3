/**
 * The Store contract (coordinator/store/store.ts), one suite run on every
 * engine: SQLite (a fresh file per test) and PostgreSQL (a throwaway server,
 * test/support/postgres.ts, with a fresh database per test). What only
 * PostgreSQL promises — several replicas on one database: the write lock and
 * the change feed across store instances, commit hints between them,
 * concurrent migrations, a LISTEN connection that comes back — runs on it
 * alone, with two PostgresStore instances standing in for two replicas.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { inspect } from 'node:util';
import pg from 'pg';
import { KnitError } from '../../../shared/errors.js';
import type { PeerChange } from '../../../shared/wire/control.js';
import { PG_MIGRATIONS } from '../../../coordinator/store/postgres-schema.js';
import { PostgresStore } from '../../../coordinator/store/postgres.js';
import { SqliteStore } from '../../../coordinator/store/sqlite.js';
import { MAX_BROADCAST_BYTES, type NewNode, type NewToken, type Store } from '../../../coordinator/store/store.js';
import { until } from '../../helpers/until.js';
import { freePort } from '../../../sim/bench/postgres-server.js';
import { startPostgres, type PostgresServer } from '../../support/postgres.js';

interface Engine {
  name: 'sqlite' | 'postgres';
  /** A fresh, empty store, closed when the test ends; `again()` opens a second instance on the same data. */
  open(t: TestContext): Promise<{ store: Store; again(): Promise<Store> }>;
}

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const sqlite: Engine = {
  name: 'sqlite',
  async open(t) {
    const dir = mkdtempSync(join(tmpdir(), 'knit-contract-'));
    dirs.push(dir);
    const path = join(dir, 'knit.db');
    const opened: Store[] = [];
    t.after(() => Promise.all(opened.map((s) => s.close())));
    const make = async () => { const s: Store = new SqliteStore(path); opened.push(s); return s; };
    return { store: await make(), again: make };
  },
};

function postgresEngine(server: PostgresServer): Engine {
  let n = 0;
  return {
    name: 'postgres',
    async open(t) {
      const url = await server.createDatabase(`contract_${++n}`);
      const opened: Store[] = [];
      t.after(() => Promise.all(opened.map((s) => s.close())));
      const make = async () => { const s = await PostgresStore.open(url, { poolSize: 4 }); opened.push(s); return s; };
      return { store: await make(), again: make };
    },
  };
}

let seq = 0;
function node(over: Partial<NewNode> = {}): NewNode {
  const i = ++seq;
  return {
    nodeKey: `nodekey-${i}`, discoKey: `disco-${i}`, name: `host-${i}`, ipIndex: i,
    ipv4: `100.96.${Math.floor(i / 250)}.${i % 250}`, ipv6: `fd7a::${i.toString(16)}`, tags: ['tag:a', 'tag:b'],
    ephemeral: false, created: 1_700_000_000_000 + i, lastSeen: 0, tokenId: null, ...over,
  };
}

function token(over: Partial<NewToken> = {}): NewToken {
  const i = ++seq;
  return {
    id: `tok${i}`, secretHash: `hash-${i}`, reusable: false, usesLeft: 1, ephemeral: false,
    expires: null, tags: [], created: 1_700_000_000_000 + i, ...over,
  };
}

const change = (id: number): PeerChange[] => [{ op: 'remove', id }];

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KnitError) return err.code;
    throw err;
  }
  assert.fail('expected a rejection');
}

function contract(engine: Engine): void {
  describe(`Store contract: ${engine.name}`, () => {
    test('engine and where', async (t) => {
      const { store } = await engine.open(t);
      assert.equal(store.engine, engine.name);
      assert.ok(store.where.length > 0);
    });

    test('meta: get, set, bumpMeta returns the value before the increment', async (t) => {
      const { store } = await engine.open(t);
      assert.equal(await store.getMeta('k'), undefined);
      const seen = await store.write(async (tx) => {
        const before = await tx.getMeta('k');
        await tx.setMeta('k', 'v1');
        await tx.setMeta('k', 'v2');
        return [before, await tx.getMeta('k'), await tx.bumpMeta('n'), await tx.bumpMeta('n'), await tx.bumpMeta('n')];
      });
      assert.deepEqual(seen, [undefined, 'v2', 0, 1, 2]);
      assert.equal(await store.getMeta('k'), 'v2');
      assert.equal(await store.getMeta('n'), '3');
    });

    test('admin credentials: insert, count, hash', async (t) => {
      const { store } = await engine.open(t);
      const count = await store.write(async (tx) => {
        const before = await tx.adminCount();
        await tx.insertAdmin('a1', 'hash-a1', 1000);
        await tx.insertAdmin('a2', 'hash-a2', 2000);
        return [before, await tx.adminCount()];
      });
      assert.deepEqual(count, [0, 2]);
      assert.equal(await store.adminHash('a2'), 'hash-a2');
      assert.equal(await store.adminHash('nope'), undefined);
    });

    test('tokens: insert, get, list (oldest first), revoke', async (t) => {
      const { store } = await engine.open(t);
      const a = token({ reusable: true, usesLeft: null, ephemeral: true, expires: 1_800_000_000_000, tags: ['tag:x', 'tag:y'], created: 2000 });
      const b = token({ created: 1000 });
      await store.write(async (tx) => { await tx.insertToken(a); await tx.insertToken(b); });
      const got = await store.write((tx) => tx.token(a.id));
      assert.deepEqual(got, { ...a, revoked: false, joins: 0 });
      assert.deepEqual(await store.tokens(), [{ ...b, revoked: false, joins: 0 }, { ...a, revoked: false, joins: 0 }]);
      assert.equal(await store.write((tx) => tx.token('nope')), undefined);
      assert.equal(await store.write((tx) => tx.revokeToken(b.id)), true);
      assert.equal(await store.write((tx) => tx.revokeToken('nope')), false);
      assert.equal((await store.tokens()).find((x) => x.id === b.id)?.revoked, true);
    });

    test('useToken: counts joins, spends uses, refuses revoked and used-up tokens', async (t) => {
      const { store } = await engine.open(t);
      const limited = token({ reusable: true, usesLeft: 2 });
      const unlimited = token({ reusable: true, usesLeft: null });
      const revoked = token();
      await store.write(async (tx) => {
        for (const x of [limited, unlimited, revoked]) await tx.insertToken(x);
        await tx.revokeToken(revoked.id);
      });
      const results = await store.write(async (tx) => [
        await tx.useToken(limited.id), await tx.useToken(limited.id), await tx.useToken(limited.id),
        await tx.useToken(unlimited.id), await tx.useToken(unlimited.id),
        await tx.useToken(revoked.id), await tx.useToken('nope'),
      ]);
      assert.deepEqual(results, [true, true, false, true, true, false, false]);
      const byId = new Map((await store.tokens()).map((x) => [x.id, x]));
      assert.deepEqual([byId.get(limited.id)?.usesLeft, byId.get(limited.id)?.joins], [0, 2]);
      assert.deepEqual([byId.get(unlimited.id)?.usesLeft, byId.get(unlimited.id)?.joins], [null, 2]);
      assert.deepEqual([byId.get(revoked.id)?.usesLeft, byId.get(revoked.id)?.joins], [1, 0]);
    });

    test('useToken is atomic: a single-use token used by 20 concurrent writes joins once', async (t) => {
      const { store } = await engine.open(t);
      const single = token();
      await store.write((tx) => tx.insertToken(single));
      const results = await Promise.all(Array.from({ length: 20 }, () => store.write((tx) => tx.useToken(single.id))));
      assert.equal(results.filter(Boolean).length, 1);
      assert.equal((await store.tokens())[0]!.joins, 1);
    });

    test('writes from one process run one after another (read-modify-write never loses an update)', async (t) => {
      const { store } = await engine.open(t);
      await Promise.all(Array.from({ length: 20 }, () => store.write(async (tx) => {
        const v = Number((await tx.getMeta('counter')) ?? '0');
        await new Promise((r) => setImmediate(r));
        await tx.setMeta('counter', String(v + 1));
      })));
      assert.equal(await store.getMeta('counter'), '20');
    });

    test('nodes: insert, look up, update, list, delete; ids are never reused', async (t) => {
      const { store } = await engine.open(t);
      const a = node({ tokenId: 'tok-a', ephemeral: true });
      const b = node();
      const [ida, idb] = await store.write(async (tx) => [await tx.insertNode(a), await tx.insertNode(b)]);
      assert.ok(Number.isInteger(ida) && Number.isInteger(idb) && idb! > ida!);
      const fresh = { ...a, id: ida!, endpoints: [], natType: 'unknown', onlineReplica: null };
      assert.deepEqual(await store.write((tx) => tx.nodeById(ida!)), fresh);
      assert.deepEqual(await store.write((tx) => tx.nodeByKey(a.nodeKey)), fresh);
      assert.equal(await store.write((tx) => tx.nodeByKey('nope')), undefined);
      assert.equal(await store.write((tx) => tx.nodeById(999_999)), undefined);
      assert.deepEqual(await store.write(async (tx) => [await tx.nameTaken(a.name), await tx.nameTaken('free-name')]), [true, false]);

      const written = await store.write((tx) => tx.saveSessionState([
        { id: ida!, endpoints: ['192.0.2.1:41641', '[2001:db8::1]:41641'], natType: 'endpoint-independent', discoKey: 'disco-new', lastSeen: 1_750_000_000_123 },
        { id: idb!, endpoints: [], natType: 'none', discoKey: 'disco-b', lastSeen: 5 },
        { id: 999_999, endpoints: ['192.0.2.9:1'], natType: 'none', discoKey: 'x', lastSeen: 1 }, // gone: skipped
      ]));
      assert.deepEqual(written, [ida, idb], 'the ids written; the missing one is not among them');
      let nodes = await store.nodes();
      assert.deepEqual(nodes.map((x) => x.id), [ida, idb]);
      assert.deepEqual(nodes[0], {
        ...fresh, endpoints: ['192.0.2.1:41641', '[2001:db8::1]:41641'], natType: 'endpoint-independent',
        discoKey: 'disco-new', lastSeen: 1_750_000_000_123,
      });
      assert.deepEqual([nodes[1]!.endpoints, nodes[1]!.natType, nodes[1]!.discoKey, nodes[1]!.lastSeen], [[], 'none', 'disco-b', 5]);
      await store.write(async (tx) => { await tx.saveSessionState([]); await tx.setLastSeen([ida!, idb!], 77); await tx.setLastSeen([], 1); });
      nodes = await store.nodes();
      assert.deepEqual(nodes.map((x) => x.lastSeen), [77, 77]);

      assert.equal(await store.write((tx) => tx.deleteNode(idb!)), true);
      assert.equal(await store.write((tx) => tx.deleteNode(idb!)), false);
      const idc = await store.write((tx) => tx.insertNode(node()));
      assert.ok(idc > idb!, `a new node gets a new id (${idc} > ${idb})`);
    });

    test('unique node key, name, address index and addresses: the write rejects and nothing changes', async (t) => {
      const { store } = await engine.open(t);
      const first = node();
      await store.write((tx) => tx.insertNode(first));
      const clashes: Partial<NewNode>[] = [
        { nodeKey: first.nodeKey }, { name: first.name }, { ipIndex: first.ipIndex }, { ipv4: first.ipv4 }, { ipv6: first.ipv6 },
      ];
      for (const clash of clashes) {
        const code = await codeOf(store.write(async (tx) => {
          await tx.setMeta('touched', 'yes');
          await tx.insertNode(node());
          await tx.insertNode(node(clash));
        }));
        assert.equal(code, 'KNIT_ERR_STORE', JSON.stringify(clash));
      }
      assert.equal((await store.nodes()).length, 1);
      assert.equal(await store.getMeta('touched'), undefined);
    });

    test('savepoint: undoes only its own changes and rethrows; the transaction goes on', async (t) => {
      const { store } = await engine.open(t);
      const [a, b, c] = [node(), node(), node()];
      const boom = new Error('boom');
      const outcome = await store.write(async (tx) => {
        await tx.insertNode(a);
        const caught = await tx.savepoint(async () => { await tx.insertNode(b); await tx.setMeta('sp', '1'); throw boom; }).catch((e: unknown) => e);
        // A statement that fails inside a savepoint (a clash) leaves the transaction usable.
        const clash = await tx.savepoint(() => tx.insertNode(node({ nodeKey: a.nodeKey }))).catch((e: unknown) => e);
        const kept = await tx.savepoint(async () => { await tx.insertNode(c); return 'kept'; });
        return { caught, clash, kept };
      });
      assert.equal(outcome.caught, boom);
      assert.equal((outcome.clash as KnitError).code, 'KNIT_ERR_STORE');
      assert.equal(outcome.kept, 'kept');
      assert.deepEqual((await store.nodes()).map((x) => x.nodeKey), [a.nodeKey, c.nodeKey]);
      assert.equal(await store.getMeta('sp'), undefined);
    });

    test('write: a function that throws rolls everything back and the error comes out unchanged', async (t) => {
      const { store } = await engine.open(t);
      await store.write((tx) => tx.appendChange(change(1)));
      const boom = new Error('boom');
      const err = await store.write(async (tx) => {
        await tx.setMeta('k', 'v');
        await tx.insertNode(node());
        await tx.insertToken(token());
        await tx.heartbeat('r1');
        await tx.freeIpIndex(9);
        await tx.appendChange(change(2));
        throw boom;
      }).catch((e: unknown) => e);
      assert.equal(err, boom);
      assert.equal(await store.getMeta('k'), undefined);
      assert.deepEqual(await store.nodes(), []);
      assert.deepEqual(await store.tokens(), []);
      assert.equal(await store.latestVersion(), 1);
      assert.deepEqual(await store.write(async (tx) => [await tx.replicaBeats(), await tx.takeFreeIpIndex()]), [[], undefined]);
      // The rolled-back version was not used up.
      assert.equal(await store.write((tx) => tx.appendChange(change(3))), 2);
    });

    test('appendChange: versions 1, 2, 3… in commit order; changesSince returns them oldest first, with limit', async (t) => {
      const { store } = await engine.open(t);
      assert.equal(await store.latestVersion(), 0);
      assert.deepEqual(await store.changesSince(0, 10), []);
      const changes: PeerChange[][] = [
        [{ op: 'remove', id: 1 }],
        [{ op: 'online', id: 2, online: true, lastSeen: 5 }, { op: 'disco', id: 2, discoKey: 'dk' }],
        [{ op: 'endpoints', id: 3, endpoints: ['192.0.2.7:1'], natType: 'none' }],
      ];
      const versions = await Promise.all(changes.map((c) => store.write((tx) => tx.appendChange(c))));
      assert.deepEqual(versions, [1, 2, 3]);
      assert.equal(await store.latestVersion(), 3);
      assert.deepEqual(await store.changesSince(0, 10), changes.map((c, i) => ({ version: i + 1, changes: c, origin: '' })));
      assert.deepEqual(await store.changesSince(1, 1), [{ version: 2, changes: changes[1], origin: '' }]);
      assert.deepEqual(await store.changesSince(3, 10), []);
      await store.write((tx) => tx.appendChange(change(9), 'replica-a'));
      assert.equal((await store.changesSince(3, 1))[0]!.origin, 'replica-a', 'the row says which replica made it');
      // Two in one write: two versions.
      assert.deepEqual(await store.write(async (tx) => [await tx.appendChange(change(4)), await tx.appendChange(change(5))]), [5, 6]);
    });

    test('onCommit: listeners hear a committed version; the remover stops them', async (t) => {
      const { store } = await engine.open(t);
      let heard = 0;
      const remove = store.onCommit(() => { heard++; });
      await store.write((tx) => tx.appendChange(change(1)));
      await until('the listener hears the commit', () => heard >= 1, { timeoutMs: 5_000 });
      remove();
      const before = heard;
      await store.write((tx) => tx.appendChange(change(2)));
      // A commit hint after removal would arrive as quickly as the first one did.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(heard, before);
    });

    test('replicas: heartbeat counts beats per replica; dropReplica forgets one', async (t) => {
      const { store } = await engine.open(t);
      const seen = await store.write(async (tx) => {
        await tx.heartbeat('r2');
        await tx.heartbeat('r1');
        const first = await tx.replicaBeats();
        await tx.heartbeat('r1');
        await tx.heartbeat('r1');
        const second = await tx.replicaBeats();
        await tx.dropReplica('r2');
        await tx.dropReplica('never-seen');
        return [first, second, await tx.replicaBeats()];
      });
      assert.deepEqual(seen, [
        [{ id: 'r1', beat: 1 }, { id: 'r2', beat: 1 }],
        [{ id: 'r1', beat: 3 }, { id: 'r2', beat: 1 }],
        [{ id: 'r1', beat: 3 }],
      ]);
    });

    test('recordSessions: a replica claims sessions and lets go only of those it still holds; it hears which moved away', async (t) => {
      const { store } = await engine.open(t);
      const [x, y, z] = await store.write(async (tx) => [await tx.insertNode(node()), await tx.insertNode(node()), await tx.insertNode(node())]);
      const holders = async () => (await store.nodes()).map((n) => n.onlineReplica);
      assert.deepEqual(await store.write((tx) => tx.recordSessions('r1', [x!, y!, z!], [])), []);
      assert.deepEqual(await holders(), ['r1', 'r1', 'r1']);
      await store.write((tx) => tx.recordSessions('r2', [y!], [])); // y's agent reconnected to r2
      // r1 sees all three sessions end: x and z go offline, y is r2's now and stays online.
      assert.deepEqual(await store.write((tx) => tx.recordSessions('r1', [], [x!, y!, z!, 999_999])), [y]);
      assert.deepEqual(await holders(), [null, 'r2', null]);
      assert.deepEqual(await store.write((tx) => tx.recordSessions('r1', [], [x!])), [], 'already offline: nothing moved away');
    });

    test('releaseReplicas: marks offline every node of the given replicas and returns their ids', async (t) => {
      const { store } = await engine.open(t);
      const ids = await store.write(async (tx) => {
        const out: number[] = [];
        for (const holder of ['r1', 'r2', 'r1', null, 'r3']) {
          const id = await tx.insertNode(node());
          if (holder) await tx.recordSessions(holder, [id], []);
          out.push(id);
        }
        return out;
      });
      const released = await store.write((tx) => tx.releaseReplicas(['r1', 'r3', 'unknown']));
      assert.deepEqual([...released].sort((a, b) => a - b), [ids[0], ids[2], ids[4]]);
      assert.deepEqual((await store.nodes()).map((x) => x.onlineReplica), [null, 'r2', null, null, null]);
      assert.deepEqual(await store.write((tx) => tx.releaseReplicas([])), []);
    });

    test('free address indexes: the lowest comes back first, each once', async (t) => {
      const { store } = await engine.open(t);
      const taken = await store.write(async (tx) => {
        const none = await tx.takeFreeIpIndex();
        for (const i of [7, 3, 5, 3]) await tx.freeIpIndex(i);
        return [none, await tx.takeFreeIpIndex(), await tx.takeFreeIpIndex(), await tx.takeFreeIpIndex(), await tx.takeFreeIpIndex()];
      });
      assert.deepEqual(taken, [undefined, 3, 5, 7, undefined]);
    });

    test('pruneChanges: keeps the newest versions; latestVersion is unchanged', async (t) => {
      const { store } = await engine.open(t);
      for (let i = 1; i <= 5; i++) await store.write((tx) => tx.appendChange(change(i)));
      await store.pruneChanges(10);
      assert.equal((await store.changesSince(0, 100)).length, 5);
      await store.pruneChanges(2);
      assert.deepEqual((await store.changesSince(0, 100)).map((c) => c.version), [4, 5]);
      assert.equal(await store.latestVersion(), 5);
      assert.equal(await store.write((tx) => tx.appendChange(change(6))), 6);
    });

    test('close is idempotent', async (t) => {
      const { store } = await engine.open(t);
      await store.close();
      await store.close();
    });
  });
}

contract(sqlite);

const server = await startPostgres();
if ('skip' in server) {
  test('Store contract: postgres', (t) => { t.skip(`skipped: ${server.skip}`); });
} else {
  after(() => server.stop());
  const postgres = postgresEngine(server);
  contract(postgres);
  postgresOnly(server, postgres);
}

/** Runs one SQL statement as the server's superuser on a database. */
async function sql(url: string, text: string, params?: unknown[]): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

function postgresOnly(server: PostgresServer, engine: Engine): void {
  const password = new URL(server.url()).password;
  const noPassword = (err: unknown) => {
    assert.ok(password.length >= 16);
    assert.ok(!(err as Error).message.includes(password), `the message holds the password: ${(err as Error).message}`);
    assert.ok(!inspect(err, { depth: 10 }).includes(password), 'the error (cause included) holds the password');
  };

  describe('PostgreSQL store: replicas on one database', () => {
    test('where is the URL with the password as ***', async (t) => {
      const { store } = await engine.open(t);
      assert.match(store.where, /^postgres:\/\/knit:\*\*\*@127\.0\.0\.1:\d+\/contract_\d+$/);
    });

    test('useToken is atomic across replicas: 2 × 10 concurrent uses of a single-use token join once', async (t) => {
      const { store: a, again } = await engine.open(t);
      const b = await again();
      const single = token();
      await a.write((tx) => tx.insertToken(single));
      const uses = [a, b].flatMap((s) => Array.from({ length: 10 }, () => s.write((tx) => tx.useToken(single.id))));
      assert.equal((await Promise.all(uses)).filter(Boolean).length, 1);
      assert.equal((await b.tokens())[0]!.joins, 1);
    });

    test('two replicas appending 50 changes each at once: versions 1..100, no gap, no duplicate, in commit order', async (t) => {
      const { store: a, again } = await engine.open(t);
      const b = await again();
      const run = (s: Store, who: number) => Promise.all(Array.from({ length: 50 }, (_, i) => s.write((tx) => tx.appendChange(change(who * 1000 + i)))));
      const [va, vb] = await Promise.all([run(a, 1), run(b, 2)]);
      assert.deepEqual([...va, ...vb].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i + 1));
      // Each replica's own writes run in its queue order, so its versions rise.
      for (const v of [va, vb]) assert.deepEqual(v, [...v].sort((x, y) => x - y));
      const feed = await b.changesSince(0, 1000);
      assert.deepEqual(feed.map((c) => c.version), Array.from({ length: 100 }, (_, i) => i + 1));
      const byVersion = new Map(feed.map((c) => [c.version, c.changes]));
      va.forEach((v, i) => assert.deepEqual(byVersion.get(v), change(1000 + i)));
      vb.forEach((v, i) => assert.deepEqual(byVersion.get(v), change(2000 + i)));
      assert.equal(await a.latestVersion(), 100);
    });

    test('onCommit: a commit by another replica wakes this one', async (t) => {
      const { store: a, again } = await engine.open(t);
      const b = await again();
      let heard = 0;
      b.onCommit(() => { heard++; });
      const v = await a.write((tx) => tx.appendChange(change(1)));
      await until('replica b hears replica a commit', () => heard >= 1, { timeoutMs: 5_000 });
      assert.deepEqual((await b.changesSince(0, 10)).map((c) => c.version), [v]);
    });

    test('broadcast: a message from one replica reaches every replica at once, the sender too; too long is refused', async (t) => {
      const { store: a, again } = await engine.open(t);
      const b = await again();
      const heard: string[][] = [[], []];
      a.onBroadcast((m) => heard[0]!.push(m));
      const off = b.onBroadcast((m) => heard[1]!.push(m));
      await a.broadcast('{"to":7}');
      await until('both replicas hear it', () => heard.every((h) => h.length === 1), { timeoutMs: 5_000 });
      assert.deepEqual(heard, [['{"to":7}'], ['{"to":7}']]);
      off();
      await assert.rejects(a.broadcast('x'.repeat(MAX_BROADCAST_BYTES + 1)));
      await b.broadcast('second');
      await until('a hears the second', () => heard[0]!.length === 2, { timeoutMs: 5_000 });
      assert.equal(heard[1]!.length, 1, 'the remover stops b');
    });

    test('a write that throws sends no commit hint', async (t) => {
      const { store: a, again } = await engine.open(t);
      const b = await again();
      let heard = 0;
      b.onCommit(() => { heard++; });
      await a.write(async (tx) => { await tx.appendChange(change(1)); throw new Error('no'); }).catch(() => {});
      await a.write((tx) => tx.appendChange(change(2)));
      await until('the committed version is heard', () => heard >= 1, { timeoutMs: 5_000 });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(heard, 1);
    });

    test('the LISTEN connection comes back after it is cut, and then wakes the listeners once', async (t) => {
      const url = await server.createDatabase('listen_drop');
      const a = await PostgresStore.open(url, { applicationName: 'knit-listen-drop' });
      const b = await PostgresStore.open(url);
      t.after(() => Promise.all([a.close(), b.close()]));
      let heard = 0;
      a.onCommit(() => { heard++; });
      const cut = await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'knit-listen-drop' AND query LIKE 'LISTEN%'");
      assert.equal(cut.rowCount, 1, 'the LISTEN connection was found and cut');
      await until('the listener is woken after the reconnect', () => heard >= 1, { timeoutMs: 5_000 });
      assert.equal(heard, 1);
      await b.write((tx) => tx.appendChange(change(1)));
      await until('commits are heard again', () => heard >= 2, { timeoutMs: 5_000 });
    });

    test('pooled connections cut by the server: no crash, the next statement uses a new one', async (t) => {
      const url = await server.createDatabase('pool_drop');
      const a = await PostgresStore.open(url, { applicationName: 'knit-pool-drop' });
      t.after(() => a.close());
      await Promise.all([a.nodes(), a.tokens(), a.write((tx) => tx.setMeta('k', 'v'))]);
      const cut = await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'knit-pool-drop'");
      assert.ok((cut.rowCount ?? 0) >= 2);
      // The idle clients' errors arrive as the server closes them.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await a.getMeta('k'), 'v');
      await a.write((tx) => tx.setMeta('k', 'w'));
      assert.equal(await a.getMeta('k'), 'w');
    });

    test('migrations: two replicas opening an empty database at once both succeed; the schema is made once', async () => {
      const url = await server.createDatabase('migrate_race');
      const stores = await Promise.all([PostgresStore.open(url), PostgresStore.open(url), PostgresStore.open(url)]);
      try {
        await stores[0]!.write((tx) => tx.appendChange(change(1)));
        assert.equal(await stores[2]!.latestVersion(), 1);
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
      const r = await sql(url, 'SELECT version FROM schema_version');
      assert.deepEqual(r.rows, [{ version: PG_MIGRATIONS.length }]);
      const again = await PostgresStore.open(url);
      assert.equal(await again.latestVersion(), 1);
      await again.close();
    });

    test('a database written by a newer Knit is refused (KNIT_ERR_STORE) and left alone', async () => {
      const url = await server.createDatabase('newer_schema');
      await (await PostgresStore.open(url)).close();
      await sql(url, 'UPDATE schema_version SET version = 999');
      const err = await PostgresStore.open(url).catch((e: unknown) => e);
      assert.ok(err instanceof KnitError);
      assert.equal(err.code, 'KNIT_ERR_STORE');
      assert.match(err.message, /newer Knit \(schema 999\); upgrade Knit/);
      noPassword(err);
      assert.deepEqual((await sql(url, 'SELECT version FROM schema_version')).rows, [{ version: 999 }]);
    });

    test('an unreachable server, a wrong password, an unknown database: KNIT_ERR_STORE, and never the password', async () => {
      const good = new URL(server.url());
      const closed = new URL(server.url('knit'));
      closed.port = String(await freePort()); // nothing listens there
      const wrongPassword = new URL(server.url());
      wrongPassword.password = 'not-the-password-' + password.slice(0, 4);
      const unknownDb = server.url('no_such_database');
      const cases: [string, string, RegExp][] = [
        ['unreachable', closed.toString(), /ECONNREFUSED/],
        ['wrong password', wrongPassword.toString(), /password authentication failed/],
        ['unknown database', unknownDb, /does not exist/],
      ];
      for (const [what, url, reason] of cases) {
        const err = await PostgresStore.open(url).catch((e: unknown) => e);
        assert.ok(err instanceof KnitError, what);
        assert.equal(err.code, 'KNIT_ERR_STORE', what);
        assert.match(err.message, /^cannot use the PostgreSQL store postgres:\/\/knit:\*\*\*@127\.0\.0\.1:\d+\/\w+: /, what);
        assert.match(err.message, reason, what);
        noPassword(err);
        assert.ok(!err.message.includes(new URL(url).password), `${what}: the message holds the URL's password`);
      }
      assert.equal(good.hostname, '127.0.0.1');
    });

    test('after close, reads fail with KNIT_ERR_STORE', async (t) => {
      const { store } = await engine.open(t);
      await store.close();
      assert.equal(await codeOf(store.nodes()), 'KNIT_ERR_STORE');
      assert.equal(await codeOf(store.write((tx) => tx.setMeta('k', 'v'))), 'KNIT_ERR_STORE');
    });
  });
}

