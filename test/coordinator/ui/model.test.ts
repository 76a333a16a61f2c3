/**
 * The console's pure model (coordinator/ui/model.js, plain JS run as is in the
 * browser): feed messages applied as step tables, the matrix, formatting and
 * the token form's validation.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';

// The console's modules are served as they are, not compiled: load the shipped file itself.
const m: any = await import(pathToFileURL(join(process.cwd(), 'coordinator', 'ui', 'model.js')).href);

const peer = (id: number, name: string, extra: object = {}) => ({
  id, name, nodeKey: `k${id}`, discoKey: '', addresses: [`100.96.0.${id}/32`], endpoints: [], natType: 'unknown', online: false, lastSeen: 0, tags: [], ...extra,
});
const edge = (from: number, to: number, kind: string, rttMs?: number) => ({ from, to, kind, lastHandshake: 0, reportedAt: 0, ...(rttMs === undefined ? {} : { rttMs }) });

test('feed messages as steps: state, deltas (every op), paths, removal, a gap asks for a resync', () => {
  const model = m.createModel();
  const steps: { msg: unknown; changed: string[]; check: () => void }[] = [
    { msg: { type: 'state', version: 5, nodes: [peer(1, 'a')], paths: [] }, changed: ['nodes', 'paths'], check: () => assert.equal(model.nodes.size, 1) },
    { msg: { type: 'delta', from: 5, version: 6, changes: [{ op: 'upsert', peer: peer(2, 'b') }] }, changed: ['joined', 'nodes'], check: () => assert.equal(model.version, 6) },
    { msg: { type: 'delta', from: 6, version: 7, changes: [{ op: 'online', id: 1, online: true, lastSeen: 9 }, { op: 'endpoints', id: 2, endpoints: ['127.0.0.1:5'], natType: 'none' }, { op: 'disco', id: 2, discoKey: 'd' }] }, changed: ['nodes'],
      check: () => {
        assert.equal(model.nodes.get(1).online, true);
        assert.deepEqual(model.nodes.get(2).endpoints, ['127.0.0.1:5']);
        assert.equal(model.nodes.get(2).discoKey, 'd');
      } },
    { msg: { type: 'paths', node: 1, edges: [edge(1, 2, 'lan', 0.4)] }, changed: ['paths'], check: () => assert.equal(m.matrix(model).cell(1, 2).kind, 'lan') },
    { msg: { type: 'paths', node: 1, edges: [edge(1, 2, 'none')] }, changed: ['paths'], check: () => assert.equal(m.matrix(model).cell(1, 2).kind, 'none') },
    { msg: { type: 'delta', from: 7, version: 8, changes: [{ op: 'online', id: 99, online: true, lastSeen: 1 }] }, changed: ['nodes'], check: () => assert.equal(model.nodes.has(99), false) },
    { msg: { type: 'delta', from: 8, version: 9, changes: [{ op: 'remove', id: 1 }] }, changed: ['paths', 'nodes'],
      check: () => {
        assert.equal(model.nodes.has(1), false);
        assert.equal(m.matrix(model).cell(1, 2), undefined, 'its reports go with it');
      } },
    { msg: { type: 'delta', from: 3, version: 4, changes: [] }, changed: ['resync'], check: () => assert.equal(model.version, 9, 'nothing applied') },
    { msg: { type: 'error', code: 'X', message: 'y' }, changed: [], check: () => {} },
    { msg: null, changed: [], check: () => {} },
  ];
  for (const [i, s] of steps.entries()) {
    assert.deepEqual([...m.applyMessage(model, s.msg)].sort(), [...s.changed].sort(), `step ${i}`);
    s.check();
  }
});

test('matrix: online first then by name, capped; pair counts take the better view once', () => {
  const model = m.createModel();
  m.applyMessage(model, {
    type: 'state', version: 1,
    nodes: [peer(1, 'c', { online: true }), peer(2, 'a'), peer(3, 'b', { online: true })],
    paths: [edge(1, 3, 'direct', 12), edge(3, 1, 'lan', 0.5), edge(1, 2, 'none'), edge(2, 1, 'relay', 40), edge(3, 77, 'lan')],
  });
  assert.deepEqual(m.matrix(model).nodes.map((n: any) => n.name), ['b', 'c', 'a']);
  const capped = m.matrix(model, 2);
  assert.equal(capped.nodes.length, 2);
  assert.equal(capped.hidden, 1);
  assert.deepEqual(m.pathCounts(model), { lan: 1, direct: 0, relay: 1, none: 0 }, 'b–c is lan (better of lan/direct), a–c relay, unknown node 77 ignored');
});

test('formatting: relative times, expiry, RTT, token status', () => {
  const now = 1_700_000_000_000;
  const cases: [string, string][] = [
    [m.ago(0, now), 'never'], [m.ago(now - 2000, now), 'just now'], [m.ago(now - 42_000, now), '42 s ago'],
    [m.ago(now - 5 * 60_000, now), '5 min ago'], [m.ago(now - 3 * 3600_000, now), '3 h ago'], [m.ago(now - 2 * 86400_000, now), '2 d ago'],
    [m.until(null, now), 'never'], [m.until(now - 1, now), 'expired'], [m.until(now + 30_000, now), 'in 1 min'],
    [m.until(now + 23 * 3600_000 + 5, now), 'in 23 h'], [m.until(now + 6 * 86400_000 + 5, now), 'in 6 d'],
    [m.formatRtt(0.42), '0.4 ms'], [m.formatRtt(12.6), '13 ms'], [m.formatRtt(undefined), ''],
    [m.tokenStatus({ revoked: true, expires: null, usesLeft: 1 }, now), 'revoked'],
    [m.tokenStatus({ revoked: false, expires: now, usesLeft: 1 }, now), 'expired'],
    [m.tokenStatus({ revoked: false, expires: null, usesLeft: 0 }, now), 'used'],
    [m.tokenStatus({ revoked: false, expires: null, usesLeft: null }, now), 'active'],
  ];
  for (const [got, want] of cases) assert.equal(got, want);
});

test('token form: good input becomes the API body; bad input a clear message, nothing sent', () => {
  const base = { reusable: false, uses: '', ephemeral: false, expires: '86400', tags: '' };
  assert.deepEqual(m.tokenRequest(base), { ok: true, body: { expiresInS: 86400 } });
  assert.deepEqual(m.tokenRequest({ ...base, reusable: true, uses: '5', ephemeral: true, expires: 'never', tags: 'web, ci web' }),
    { ok: true, body: { reusable: true, ephemeral: true, uses: 5, tags: ['web', 'ci'] } });
  const bad: [object, RegExp][] = [
    [{ uses: '3' }, /only applies to reusable/], [{ reusable: true, uses: '0' }, /whole number/], [{ reusable: true, uses: '1.5' }, /whole number/],
    [{ tags: 'Bad!' }, /Tag "Bad!"/], [{ tags: 'x'.repeat(33) }, /at most 32/], [{ expires: '99999999' }, /365 days/],
    [{ tags: Array.from({ length: 17 }, (_, i) => `t${i}`).join(',') }, /At most 16/],
  ];
  for (const [f, why] of bad) {
    const r = m.tokenRequest({ ...base, ...f });
    assert.equal(r.ok, false, JSON.stringify(f));
    assert.match(r.error, why);
  }
});
