// The memory engine: the contract suite, then what only the memory engine offers
// (the applied state, the diff history, fed stats).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { diffTouchesInterface, diffTouchesWireGuard } from '../../../agent/engine/diff.js';
import { createMemoryEngine, memoryHandshakes, type MemoryEngine } from '../../../agent/engine/memory.js';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { CONTRACT_KEYS, contractConfig, runEngineContract, type EngineWrite } from './contract.js';

/** What a memory engine wrote, in the contract's terms, derived from its recorded diffs. */
function memoryWrites(engine: MemoryEngine): EngineWrite[] {
  const out: EngineWrite[] = [];
  for (const d of engine.diffs()) {
    if (diffTouchesWireGuard(d)) {
      out.push({ kind: 'peers', peers: [...d.removePeers, ...d.upsertPeers.map((u) => u.publicKey)].sort() });
    }
    if (diffTouchesInterface(d)) out.push({ kind: 'interface', peers: [] });
  }
  return out;
}

runEngineContract('memory', async () => {
  const engine = createMemoryEngine();
  return {
    engine,
    writes: () => memoryWrites(engine),
    inspect: async () => {
      const s = engine.applied();
      return { exists: s !== undefined && !engine.isClosed(), addresses: s?.addresses ?? [], routes: s?.routes ?? [] };
    },
    setIpv6: async (available) => engine.setIpv6Available(available),
  };
});

describe('memory engine', () => {
  const { a, b } = CONTRACT_KEYS;

  it('shows the applied config and counts only applies that changed something', async () => {
    const engine = createMemoryEngine();
    assert.equal(engine.applied(), undefined);
    await engine.apply(contractConfig());
    await engine.apply(contractConfig());
    assert.equal(engine.changes(), 1);
    const applied = engine.applied()!;
    assert.equal(applied.listenPort, 51820);
    assert.deepEqual(applied.addresses, ['100.96.0.1/24']);
    assert.deepEqual(
      applied.peers.find((p) => p.publicKey === b.pub),
      { publicKey: b.pub, allowedIps: ['10.200.0.0/24', '100.96.0.3/32'], endpoint: '198.18.99.3:51820', persistentKeepaliveS: 25 },
    );
    assert.equal(engine.diffs()[0]!.upsertPeers.every((u) => u.create), true);
    await engine.close();
    assert.equal(engine.isClosed(), true);
  });

  it('reports fed stats, the roamed endpoint, and forgets them when the peer goes', async () => {
    const engine = createMemoryEngine();
    await engine.apply(contractConfig());
    engine.setPeerStats(a.pub, { lastHandshakeMs: 1_700_000_000_000, rxBytes: 1480, txBytes: 92, endpoint: '198.18.7.7:1234' });
    engine.setPeerStats('not-applied-key', { rxBytes: 5 });
    const s = (await engine.stats()).find((x) => x.publicKey === a.pub)!;
    assert.deepEqual(s, { publicKey: a.pub, endpoint: '198.18.7.7:1234', lastHandshakeMs: 1_700_000_000_000, rxBytes: 1480, txBytes: 92 });
    assert.equal((await engine.stats()).length, 3);

    const without = contractConfig();
    without.peers = without.peers.filter((p) => p.publicKey !== a.pub);
    await engine.apply(without);
    await engine.apply(contractConfig());
    const back = (await engine.stats()).find((x) => x.publicKey === a.pub)!;
    assert.deepEqual(back, { publicKey: a.pub, endpoint: '198.18.99.2:51820', lastHandshakeMs: 0, rxBytes: 0, txBytes: 0 });
    await engine.close();
  });

  it('keeps the known endpoint when the desired one is unset', async () => {
    const engine = createMemoryEngine();
    await engine.apply(contractConfig());
    const noOpinion = contractConfig();
    delete noOpinion.peers[0]!.endpoint;
    await engine.apply(noOpinion);
    assert.equal(engine.changes(), 1, 'no write: an unset endpoint is not a change');
    assert.equal(engine.applied()!.peers.find((p) => p.publicKey === a.pub)!.endpoint, '198.18.99.2:51820');
    await engine.close();
  });

  it('serialises concurrent applies', async () => {
    const engine = createMemoryEngine();
    const second = contractConfig();
    second.peers[0]!.endpoint = '198.18.99.50:1';
    await Promise.all([engine.apply(contractConfig()), engine.apply(second), engine.apply(contractConfig())]);
    assert.equal(engine.changes(), 3);
    assert.equal(engine.applied()!.peers.find((p) => p.publicKey === a.pub)!.endpoint, '198.18.99.2:51820');
    await engine.close();
  });
});

describe('memory engine: modelled handshakes', () => {
  it('an endpoint handed over shows a handshake on both engines of the set; none without an endpoint', async () => {
    let wall = 5_000;
    const set = memoryHandshakes(() => wall);
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const a = createMemoryEngine({ handshakes: set });
    const b = createMemoryEngine({ handshakes: set });
    const config = (priv: Uint8Array, peer: Uint8Array, addr: string, endpoint?: string) => ({
      privateKey: encodeKey(priv), listenPort: 0, addresses: [], peers: [{ publicKey: encodeKey(peer), allowedIps: [addr], endpoint }],
    });
    await b.apply(config(kb.privateKey, ka.publicKey, '100.96.0.1/32')); // the responder: no endpoint yet
    assert.equal((await b.stats())[0]!.lastHandshakeMs, 0);
    wall = 6_000;
    await a.apply(config(ka.privateKey, kb.publicKey, '100.96.0.2/32', '127.0.0.1:4000'));
    assert.equal((await a.stats())[0]!.lastHandshakeMs, 6_000);
    assert.equal((await b.stats())[0]!.lastHandshakeMs, 6_000, 'the responder saw the initiation');
    wall = 7_000;
    await a.apply(config(ka.privateKey, kb.publicKey, '100.96.0.2/32', '127.0.0.1:4000'), { rehandshake: new Set([encodeKey(kb.publicKey)]) });
    assert.equal((await b.stats())[0]!.lastHandshakeMs, 7_000, 'a forced handshake is a new one');
    await a.close();
    await b.close();
  });
});
