/**
 * The engine contract suite, run on every engine: memory always
 * (memory.test.ts), wireguard-go and the kernel adapter's `wg` path inside a
 * lab namespace (test/lab/engine-wireguard-go.test.ts).
 *
 * Each engine comes with a harness that watches what it actually writes — the
 * UAPI text, the `wg set` argv, the `ip -batch` runs — so "apply twice is a
 * no-op" and "one endpoint change touches one peer" are checked against the
 * real traffic to WireGuard, not against the engine's own account of itself.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { encodeKey, publicKeyOf } from '../../../shared/crypto/keys.js';
import type { Engine, EngineConfig } from '../../../agent/engine/types.js';

/** One configuration write the engine made: to WireGuard (naming the peers it touched) or to the interface. */
export interface EngineWrite {
  kind: 'peers' | 'interface';
  peers: string[]; // base64 keys, sorted
}

export interface EngineUnderTest {
  engine: Engine;
  writes(): EngineWrite[];
  /** The interface as the system sees it (not as the engine thinks it is). */
  inspect(): Promise<{ exists: boolean; addresses: string[]; routes: string[] }>;
  /** Anything the harness itself started; runs after engine.close(). */
  cleanup?(): Promise<void>;
  /**
   * Switches IPv6 off or on for the engine's interface, as `disable_ipv6` does (the engine is
   * started first where the interface must exist). Absent: the per-family case is skipped.
   */
  setIpv6?(available: boolean): Promise<void>;
}

function fixedKey(seed: number): { priv: string; pub: string } {
  const priv = new Uint8Array(32).map((_, i) => (seed * 31 + i * 7) & 0xff);
  return { priv: encodeKey(priv), pub: encodeKey(publicKeyOf(priv)) };
}

export const CONTRACT_KEYS = { self: fixedKey(1), a: fixedKey(2), b: fixedKey(3), c: fixedKey(4) };
const { self, a, b, c } = CONTRACT_KEYS;
const A = a.pub;
const B = b.pub;
const C = c.pub;

/** The baseline config. Endpoints are lab "internet" addresses nobody holds: packets to them go nowhere. */
export function contractConfig(): EngineConfig {
  return {
    privateKey: self.priv,
    listenPort: 51820,
    addresses: ['100.96.0.1/24'],
    peers: [
      { publicKey: A, allowedIps: ['100.96.0.2/32'], endpoint: '198.18.99.2:51820' },
      { publicKey: B, allowedIps: ['100.96.0.3/32', '10.200.0.0/24'], endpoint: '198.18.99.3:51820', persistentKeepaliveS: 25 },
      { publicKey: C, allowedIps: ['100.96.0.4/32'] },
    ],
  };
}

const sorted = (xs: string[]) => [...xs].sort();
const BASE_ROUTES = sorted(['10.200.0.0/24', '100.96.0.2/32', '100.96.0.3/32', '100.96.0.4/32']);

/** The baseline with a mesh IPv6 address and an IPv6 allowed IP beside the IPv4 ones. */
function dualStackConfig(): EngineConfig {
  const config = contractConfig();
  config.addresses.push('fd7a:115c:a1e0::1/64');
  config.peers[0]!.allowedIps.push('fd7a:115c:a1e0::2/128');
  return config;
}

export function runEngineContract(name: string, makeEngine: () => Promise<EngineUnderTest>): void {
  const withEngine = async (fn: (h: EngineUnderTest) => Promise<void>) => {
    const h = await makeEngine();
    try {
      await fn(h);
    } finally {
      await h.engine.close().catch(() => {});
      await h.cleanup?.();
    }
  };

  describe(`engine contract: ${name}`, () => {
    it('apply sets peers, addresses and routes', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const stats = await h.engine.stats();
        assert.deepEqual(sorted(stats.map((s) => s.publicKey)), sorted([A, B, C]));
        const ep = new Map(stats.map((s) => [s.publicKey, s.endpoint]));
        assert.equal(ep.get(A), '198.18.99.2:51820');
        assert.equal(ep.get(B), '198.18.99.3:51820');
        assert.equal(ep.get(C), undefined);
        const seen = await h.inspect();
        assert.equal(seen.exists, true);
        assert.deepEqual(seen.addresses, ['100.96.0.1/24']);
        assert.deepEqual(seen.routes, BASE_ROUTES);
      }));

    it('apply twice is a no-op (in any peer order)', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        assert.ok(before > 0, 'the first apply wrote something');
        const again = contractConfig();
        again.peers.reverse();
        again.peers[1]!.allowedIps.reverse();
        await h.engine.apply(again);
        await h.engine.apply(contractConfig());
        assert.deepEqual(h.writes().slice(before), []);
      }));

    it("changing one peer's endpoint touches only that peer", () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        const moved = contractConfig();
        moved.peers[0]!.endpoint = '198.18.99.22:41641';
        await h.engine.apply(moved);
        assert.deepEqual(h.writes().slice(before), [{ kind: 'peers', peers: [A] }]);
        const ep = new Map((await h.engine.stats()).map((s) => [s.publicKey, s.endpoint]));
        assert.equal(ep.get(A), '198.18.99.22:41641');
        assert.equal(ep.get(B), '198.18.99.3:51820');
      }));

    it('removing a peer removes it and its routes, and only it', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        const fewer = contractConfig();
        fewer.peers = fewer.peers.filter((p) => p.publicKey !== B);
        await h.engine.apply(fewer);
        const peerWrites = h.writes().slice(before).filter((w) => w.kind === 'peers');
        assert.deepEqual(peerWrites, [{ kind: 'peers', peers: [B] }]);
        assert.deepEqual(sorted((await h.engine.stats()).map((s) => s.publicKey)), sorted([A, C]));
        assert.deepEqual((await h.inspect()).routes, sorted(['100.96.0.2/32', '100.96.0.4/32']));
      }));

    it('keepalive and allowed-IP changes touch only the peer concerned', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        let before = h.writes().length;
        const ka = contractConfig();
        ka.peers[1]!.persistentKeepaliveS = 0;
        await h.engine.apply(ka);
        assert.deepEqual(h.writes().slice(before), [{ kind: 'peers', peers: [B] }]);
        before = h.writes().length;
        const ips = structuredClone(ka);
        ips.peers[2]!.allowedIps = ['100.96.0.4/32', '100.96.1.0/24'];
        await h.engine.apply(ips);
        const w = h.writes().slice(before);
        assert.deepEqual(w.filter((x) => x.kind === 'peers'), [{ kind: 'peers', peers: [C] }]);
        assert.ok(w.some((x) => x.kind === 'interface'), 'the new allowed IP got a route');
        assert.deepEqual((await h.inspect()).routes, sorted([...BASE_ROUTES, '100.96.1.0/24']));
      }));

    it('changing the interface address touches no peer', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        const renumbered = { ...contractConfig(), addresses: ['100.96.0.9/24', 'fd7a:115c:a1e0::9/64'] };
        await h.engine.apply(renumbered);
        const w = h.writes().slice(before);
        assert.ok(w.length > 0 && w.every((x) => x.kind === 'interface'));
        assert.deepEqual((await h.inspect()).addresses, sorted(['100.96.0.9/24', 'fd7a:115c:a1e0::9/64']));
      }));

    it('reassertEndpoints rewrites every known endpoint, once', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        await h.engine.apply(contractConfig(), { reassertEndpoints: true });
        assert.deepEqual(h.writes().slice(before), [{ kind: 'peers', peers: sorted([A, B]) }]);
        await h.engine.apply(contractConfig());
        assert.equal(h.writes().length, before + 1);
      }));

    it('rehandshake re-creates the named peer with the same config, once; a peer with no endpoint is left alone', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        const statsBefore = new Map((await h.engine.stats()).map((s) => [s.publicKey, s.endpoint]));
        await h.engine.apply(contractConfig(), { rehandshake: new Set([A, C]) });
        // One write, naming A (a harness may list it twice: removed, then created).
        assert.deepEqual(h.writes().slice(before).map((w) => ({ kind: w.kind, peers: [...new Set(w.peers)] })), [{ kind: 'peers', peers: [A] }], 'C has no endpoint to write');
        const after = new Map((await h.engine.stats()).map((s) => [s.publicKey, s.endpoint]));
        assert.deepEqual(after, statsBefore, 'the same peers and endpoints');
        await h.engine.apply(contractConfig());
        assert.equal(h.writes().length, before + 1, 'and nothing more to write');
      }));

    it('stats reflect the applied peers, with no handshake yet', () =>
      withEngine(async (h) => {
        assert.deepEqual(await h.engine.stats(), [], 'nothing applied, nothing to report');
        await h.engine.apply(contractConfig());
        const stats = await h.engine.stats();
        assert.equal(stats.length, 3);
        for (const s of stats) {
          assert.equal(s.lastHandshakeMs, 0);
          assert.equal(s.rxBytes, 0);
          assert.ok(Number.isInteger(s.txBytes) && s.txBytes >= 0);
        }
      }));

    it('an invalid config is rejected and changes nothing', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        const before = h.writes().length;
        // Keys and endpoints only: a live engine's byte counters move on their own (keepalives).
        const view = async () => (await h.engine.stats()).map((s) => [s.publicKey, s.endpoint]).sort();
        const statsBefore = await view();
        const badKey = contractConfig();
        badKey.peers[0]!.publicKey = 'not-a-key';
        await assert.rejects(h.engine.apply(badKey), TypeError);
        const clash = contractConfig();
        clash.peers[2]!.allowedIps = ['100.96.0.2/32'];
        await assert.rejects(h.engine.apply(clash), TypeError);
        const injected = contractConfig();
        injected.peers[0]!.endpoint = '198.18.99.2:51820\nremove=true';
        await assert.rejects(h.engine.apply(injected), TypeError);
        assert.equal(h.writes().length, before);
        assert.deepEqual(await view(), statsBefore);
      }));

    it('health: no success before the first apply, a failure reported, and cleared by the next success', () =>
      withEngine(async (h) => {
        assert.deepEqual(h.engine.health(), { lastSuccessMs: 0, unavailableFamilies: [] });
        await h.engine.apply(contractConfig());
        const ok = h.engine.health();
        assert.ok(ok.lastSuccessMs > 0);
        assert.equal(ok.lastError, undefined);
        const bad = contractConfig();
        bad.listenPort = 70_000;
        await assert.rejects(h.engine.apply(bad), TypeError);
        assert.match(h.engine.health().lastError?.message ?? '', /invalid engine config: listenPort/);
        assert.equal(h.engine.health().lastSuccessMs, ok.lastSuccessMs);
        await h.engine.apply(contractConfig());
        assert.equal(h.engine.health().lastError, undefined);
      }));

    it('IPv6 switched off: IPv4 is applied, IPv6 waits and is applied once IPv6 is back', (t: TestContext) =>
      withEngine(async (h) => {
        if (!h.setIpv6) return void t.skip('skipped: this harness cannot switch IPv6 off');
        await h.setIpv6(false);
        await h.engine.apply(dualStackConfig());
        const v4Only = await h.inspect();
        assert.deepEqual(v4Only.addresses, ['100.96.0.1/24']);
        assert.deepEqual(v4Only.routes, BASE_ROUTES);
        assert.equal((await h.engine.stats()).length, 3, 'WireGuard itself has every peer');
        const off = h.engine.health();
        assert.equal(off.lastError, undefined, 'a skipped family is not a failed apply');
        assert.deepEqual(off.unavailableFamilies.map((u) => u.family), [6]);
        assert.match(off.unavailableFamilies[0]!.reason, /IPv6 is disabled/);

        // Pending, not forgotten: every apply tries IPv6 again, and nothing else is rewritten.
        const before = h.writes().length;
        await h.engine.apply(dualStackConfig());
        assert.ok(h.writes().slice(before).every((w) => w.kind === 'interface'));
        assert.deepEqual(h.engine.health().unavailableFamilies.map((u) => u.family), [6]);

        await h.setIpv6(true);
        await h.engine.apply(dualStackConfig());
        const both = await h.inspect();
        assert.deepEqual(both.addresses, sorted(['100.96.0.1/24', 'fd7a:115c:a1e0::1/64']));
        assert.deepEqual(both.routes, sorted([...BASE_ROUTES, 'fd7a:115c:a1e0::2/128']));
        assert.deepEqual(h.engine.health().unavailableFamilies, []);
        const settled = h.writes().length;
        await h.engine.apply(dualStackConfig());
        assert.equal(h.writes().length, settled, 'nothing pending: an apply is a no-op again');
      }));

    it('close removes the interface and is idempotent', () =>
      withEngine(async (h) => {
        await h.engine.apply(contractConfig());
        await h.engine.close();
        await h.engine.close();
        const seen = await h.inspect();
        assert.equal(seen.exists, false);
        assert.deepEqual(seen.routes, []);
        await assert.rejects(h.engine.apply(contractConfig()), { code: 'KNIT_ERR_ENGINE' });
        await assert.rejects(h.engine.stats(), { code: 'KNIT_ERR_ENGINE' });
      }));
  });
}
