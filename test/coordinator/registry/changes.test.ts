import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PeerChange, PeerInfo } from '../../../shared/wire/control.js';
import { ChangeLog, coalesce } from '../../../coordinator/registry/changes.js';

const peer = (id: number, over: Partial<PeerInfo> = {}): PeerInfo => ({
  id, name: `n${id}`, nodeKey: `node-${id}`, discoKey: '', addresses: [`100.64.0.${id}/32`],
  endpoints: [], natType: 'unknown', online: false, lastSeen: 0, tags: [], ...over,
});

test('coalesce: a table of windows and what each becomes', () => {
  const rows: { name: string; window: PeerChange[]; want: PeerChange[] }[] = [
    { name: 'empty window', window: [], want: [] },
    {
      name: 'endpoint changes fold: the last list wins',
      window: [{ op: 'endpoints', id: 1, endpoints: ['1.1.1.1:1'], natType: 'unknown' }, { op: 'endpoints', id: 1, endpoints: ['2.2.2.2:2'], natType: 'endpoint-independent' }],
      want: [{ op: 'endpoints', id: 1, endpoints: ['2.2.2.2:2'], natType: 'endpoint-independent' }],
    },
    {
      name: 'a join and its first endpoints/online in one window become one upsert',
      window: [{ op: 'upsert', peer: peer(2) }, { op: 'online', id: 2, online: true, lastSeen: 5 }, { op: 'endpoints', id: 2, endpoints: ['3.3.3.3:3'], natType: 'none' }],
      want: [{ op: 'upsert', peer: peer(2, { online: true, lastSeen: 5, endpoints: ['3.3.3.3:3'], natType: 'none' }) }],
    },
    {
      name: 'a removal cancels earlier changes to that node',
      window: [{ op: 'endpoints', id: 3, endpoints: ['4.4.4.4:4'], natType: 'unknown' }, { op: 'remove', id: 3 }],
      want: [{ op: 'remove', id: 3 }],
    },
    {
      name: 'different fields of one node both survive, in order; other nodes keep their first-change order',
      window: [{ op: 'online', id: 4, online: true, lastSeen: 1 }, { op: 'disco', id: 5, discoKey: 'k' }, { op: 'endpoints', id: 4, endpoints: [], natType: 'unknown' }, { op: 'online', id: 4, online: false, lastSeen: 2 }],
      want: [{ op: 'online', id: 4, online: false, lastSeen: 2 }, { op: 'endpoints', id: 4, endpoints: [], natType: 'unknown' }, { op: 'disco', id: 5, discoKey: 'k' }],
    },
  ];
  for (const r of rows) assert.deepEqual(coalesce(r.window), r.want, r.name);
});

/** What the hub and the store do with a window: coalesce it, and commit it as the next version if anything is left. */
function commit(log: ChangeLog, window: PeerChange[]) {
  const folded = coalesce(window);
  return folded.length === 0 ? undefined : log.append(log.version + 1, folded);
}

test('change log: versions step by one per committed window; since() serves what a client missed', () => {
  const log = new ChangeLog(10, [], 3);
  const steps: { commit: PeerChange[]; version: number }[] = [
    { commit: [], version: 10 }, // nothing to say: no version
    { commit: [{ op: 'remove', id: 1 }], version: 11 },
    { commit: [{ op: 'remove', id: 2 }], version: 12 },
    { commit: [{ op: 'remove', id: 3 }], version: 13 },
    { commit: [{ op: 'remove', id: 4 }], version: 14 },
  ];
  for (const s of steps) {
    const c = commit(log, s.commit);
    assert.equal(log.version, s.version);
    if (c) assert.deepEqual(JSON.parse(c.bytes.toString()), c.msg);
  }
  assert.deepEqual(log.since(14), []);
  assert.deepEqual(log.since(12)?.map((b) => JSON.parse(b.toString()).from), [12, 13]);
  assert.deepEqual(log.since(11)?.map((b) => JSON.parse(b.toString()).version), [12, 13, 14]);
  assert.equal(log.since(10), undefined, 'older than the log (max 3 entries): snapshot');
  assert.equal(log.since(99), undefined, 'from the future (another database): snapshot');
});

test('delta computation as steps: each window becomes (from, version, changes); resumes replay exactly the missed steps', () => {
  const log = new ChangeLog(100);
  const steps: { window: PeerChange[]; want: { from: number; version: number; changes: PeerChange[] } | undefined }[] = [
    { // a join storm: three nodes in one window, one delta
      window: [{ op: 'upsert', peer: peer(1) }, { op: 'upsert', peer: peer(2) }, { op: 'upsert', peer: peer(3) }],
      want: { from: 100, version: 101, changes: [{ op: 'upsert', peer: peer(1) }, { op: 'upsert', peer: peer(2) }, { op: 'upsert', peer: peer(3) }] },
    },
    { // node 1 connects and reports endpoints twice (roaming mid-window): the last list wins
      window: [{ op: 'online', id: 1, online: true, lastSeen: 7 }, { op: 'endpoints', id: 1, endpoints: ['198.18.0.1:1'], natType: 'unknown' }, { op: 'endpoints', id: 1, endpoints: ['198.18.0.9:9'], natType: 'none' }],
      want: { from: 101, version: 102, changes: [{ op: 'online', id: 1, online: true, lastSeen: 7 }, { op: 'endpoints', id: 1, endpoints: ['198.18.0.9:9'], natType: 'none' }] },
    },
    { window: [], want: undefined }, // a quiet window costs no version
    { // node 2 restarts its agent (new disco key) and node 3 is removed after an update
      window: [{ op: 'disco', id: 2, discoKey: 'k2' }, { op: 'endpoints', id: 3, endpoints: [], natType: 'unknown' }, { op: 'remove', id: 3 }],
      want: { from: 102, version: 103, changes: [{ op: 'disco', id: 2, discoKey: 'k2' }, { op: 'remove', id: 3 }] },
    },
    { // a node joins and leaves within one window: peers still hear of the removal (it was announced nowhere, harmless)
      window: [{ op: 'upsert', peer: peer(4) }, { op: 'remove', id: 4 }],
      want: { from: 103, version: 104, changes: [{ op: 'remove', id: 4 }] },
    },
  ];
  const encoded: Buffer[] = [];
  for (const [i, s] of steps.entries()) {
    const c = commit(log, s.window);
    assert.deepEqual(c && { from: c.msg.from, version: c.msg.version, changes: c.msg.changes }, s.want, `step ${i}`);
    if (c) encoded.push(c.bytes);
  }
  // A client that saw version v gets exactly the encodings after it, in order: the very same Buffers.
  for (const [i, v] of [100, 101, 102, 103, 104].entries()) {
    const got = log.since(v)!;
    assert.equal(got.length, encoded.length - i, `resume from ${v}`);
    got.forEach((b, j) => assert.equal(b, encoded[i + j], `resume from ${v}: delta ${j} is the shared encoding`));
  }
});

test('change log from history: a replica that loaded the feed serves resumes with the same bytes as the one that wrote it', () => {
  const writer = new ChangeLog(0);
  const windows: PeerChange[][] = [[{ op: 'upsert', peer: peer(1) }], [{ op: 'remove', id: 1 }], [{ op: 'disco', id: 2, discoKey: 'k' }]];
  for (const w of windows) commit(writer, w);
  const loaded = new ChangeLog(3, windows.map((changes, i) => ({ version: i + 1, changes })));
  assert.equal(loaded.version, 3);
  for (const v of [0, 1, 2, 3]) {
    assert.deepEqual(loaded.since(v)?.map(String), writer.since(v)?.map(String), `resume from ${v}`);
  }
});

test('change log: a version that skips ahead (the replica fell behind the feed) restarts the log; older clients get a snapshot', () => {
  const log = new ChangeLog(5, [{ version: 5, changes: [{ op: 'remove', id: 1 }] }]);
  assert.deepEqual(log.since(4)?.length, 1);
  log.append(9, [{ op: 'remove', id: 2 }]);
  assert.equal(log.version, 9);
  assert.equal(log.since(4), undefined);
  assert.equal(log.since(5), undefined, 'versions 6-8 were never seen here');
  assert.deepEqual(log.since(8)?.length, 1);
});
