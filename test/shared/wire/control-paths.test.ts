// Path reports on the control channel: `handshaking` marks a path handed to WireGuard that has
// no handshake over it yet (agent/path-confirm.ts); the decoder keeps it, checked.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { decodeClientMessage } from '../../../shared/wire/control.js';

const peer = encodeKey(generateKeyPair().publicKey);
const frame = (report: Record<string, unknown>) => JSON.stringify({ type: 'paths', paths: [{ peer, lastHandshake: 0, ...report }] });

const cases: Array<{ name: string; report: Record<string, unknown>; want: Record<string, unknown> | 'error' }> = [
  { name: 'a working path', report: { kind: 'direct', rttMs: 3 }, want: { peer, kind: 'direct', lastHandshake: 0, rttMs: 3 } },
  { name: 'handshaking', report: { kind: 'direct', handshaking: true }, want: { peer, kind: 'direct', lastHandshake: 0, handshaking: true } },
  { name: 'handshaking over the relay', report: { kind: 'relay', handshaking: true }, want: { peer, kind: 'relay', lastHandshake: 0, handshaking: true } },
  { name: 'false is written as absent', report: { kind: 'lan', handshaking: false }, want: 'error' },
  { name: 'no path cannot be handshaking', report: { kind: 'none', handshaking: true }, want: 'error' },
  { name: 'not a boolean', report: { kind: 'lan', handshaking: 'yes' }, want: 'error' },
];

for (const c of cases) {
  test(`path report: ${c.name}`, () => {
    const r = decodeClientMessage(frame(c.report));
    if (c.want === 'error') return assert.equal(r.ok, false);
    assert.ok(r.ok);
    assert.deepEqual(r.value, { type: 'paths', paths: [c.want] });
  });
}
