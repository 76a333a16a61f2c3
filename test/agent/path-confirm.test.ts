import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FORCE_FIRST_MS, FORCE_MAX, FORCE_RETRY_MS, PathConfirmer, RESPONDER_FORCE_FIRST_MS } from '../../agent/path-confirm.js';

// Monotonic ms and wall ms run side by side, WALL apart.
const WALL = 1_700_000_000_000;
const K = 'peer-key';

describe('PathConfirmer: a path counts once WireGuard handshook over it', () => {
  it('handshaking until a handshake newer than the hand-over; an older one proves nothing', () => {
    const c = new PathConfirmer();
    assert.equal(c.state(K, 'none'), 'none');
    c.pathChanged(K, 'direct', '198.18.1.10:41641', true, 1000, WALL + 1000);
    assert.equal(c.state(K, 'direct'), 'direct (handshaking)');
    assert.equal(c.pending(), true);
    assert.equal(c.handshake(K, WALL + 999), false, 'from before the path: the old path or the relay');
    assert.equal(c.state(K, 'direct'), 'direct (handshaking)');
    assert.equal(c.handshake(K, WALL + 1020), true);
    assert.equal(c.state(K, 'direct'), 'direct');
    assert.equal(c.pending(), false);
    assert.equal(c.handshake(K, WALL + 5000), false, 'confirmed once');
    // The path moves on: handshaking again, whatever came before.
    c.pathChanged(K, 'lan', '10.1.0.11:41641', true, 9000, WALL + 9000);
    assert.equal(c.state(K, 'lan'), 'lan (handshaking)');
    assert.equal(c.state(K, 'direct'), 'direct (handshaking)', 'a kind other than the one handed over is never confirmed');
    c.pathChanged(K, 'none', undefined, true, 9500, WALL + 9500);
    assert.equal(c.state(K, 'none'), 'none');
    assert.equal(c.pending(), false);
  });

  // Step tables: at (monotonic ms), what happens, and which peers are due a forced handshake.
  const steps = (initiator: boolean) => {
    const first = initiator ? FORCE_FIRST_MS : RESPONDER_FORCE_FIRST_MS;
    const rows: Array<{ at: number; due: string[]; wake: number | undefined }> = [
      { at: 0, due: [], wake: first },
      { at: first - 1, due: [], wake: first },
    ];
    for (let i = 0; i < FORCE_MAX; i++) {
      const at = first + i * FORCE_RETRY_MS;
      rows.push({ at, due: [K], wake: i + 1 < FORCE_MAX ? at + FORCE_RETRY_MS : undefined });
    }
    rows.push({ at: first + FORCE_MAX * FORCE_RETRY_MS + 10_000, due: [], wake: undefined });
    return rows;
  };
  for (const initiator of [true, false]) {
    it(`${initiator ? 'initiator' : 'responder'}: forces a handshake at ${initiator ? FORCE_FIRST_MS : RESPONDER_FORCE_FIRST_MS} ms, then every ${FORCE_RETRY_MS} ms, ${FORCE_MAX} times at most`, () => {
      const c = new PathConfirmer();
      c.pathChanged(K, 'direct', '198.18.1.10:41641', initiator, 0, WALL);
      for (const row of steps(initiator)) {
        assert.deepEqual(c.due(row.at), row.due, `due at ${row.at}`);
        assert.equal(c.nextWakeup(), row.wake, `next wakeup after ${row.at}`);
      }
      assert.equal(c.forced, FORCE_MAX);
    });
  }

  it('a restarted peer: the path counts again only after a new handshake, which the initiator forces at once', () => {
    const c = new PathConfirmer();
    c.pathChanged(K, 'direct', '198.18.1.10:41641', true, 0, WALL);
    assert.equal(c.handshake(K, WALL + 10), true);
    c.peerRestarted(K, 'direct', '198.18.1.10:41641', true, 60_000, WALL + 60_000);
    assert.equal(c.state(K, 'direct'), 'direct (handshaking)');
    assert.deepEqual(c.due(60_000), [K], 'at once');
    const r = new PathConfirmer();
    r.peerRestarted(K, 'lan', '10.0.0.2:41641', false, 0, WALL);
    assert.deepEqual(r.due(0), [], 'the responder leaves the first move to the restarted initiator');
    assert.equal(r.nextWakeup(), RESPONDER_FORCE_FIRST_MS);
  });

  it('a handshake stops the forcing; a forgotten peer is gone', () => {
    const c = new PathConfirmer();
    c.pathChanged(K, 'relay', '198.18.0.1:3480', true, 0, WALL);
    c.pathChanged('other', 'direct', '198.18.1.11:41641', true, 100, WALL + 100);
    assert.deepEqual(c.due(FORCE_FIRST_MS), [K]);
    assert.equal(c.handshake(K, WALL + FORCE_FIRST_MS + 5), true);
    assert.equal(c.nextWakeup(), 100 + FORCE_FIRST_MS);
    c.forget('other');
    assert.equal(c.nextWakeup(), undefined);
    assert.deepEqual(c.due(100_000), []);
    assert.equal(c.state(K, 'relay'), 'relay');
  });
});
