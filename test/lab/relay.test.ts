/**
 * The relay in the lab: two hosts behind two symmetric NATs (no punch can
 * meet) ping each other through the coordinator's relay, with real `knit`
 * processes and wireguard-go; when one NAT is switched in place to a full cone
 * (a direct path becomes possible), the pair moves to direct by itself. One
 * side runs the shared port mode (WireGuard sends straight to the relay), the
 * other the proxy mode.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { startSymmetricPair, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabRouter } from './netlab.js';

const check = canRunLab();

if (!check.ok) {
  test('relay through real symmetric NATs', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('relay through real symmetric NATs (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let coordHost: LabHost;
    let sym1: LabRouter;
    let mesh: LabMesh;
    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number) => mesh.until(what, fn, timeoutMs);
    const status = (name: string) => mesh.status(name);
    const pings = (from: string, to: string) => mesh.pings(from, to);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-relay-lab-'));
      lab = await createLab();
      ({ coordHost, sym1, mesh } = await startSymmetricPair(lab, dir));
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const peerOf = (from: string, to: string) => mesh.peer(from, to);

    it('symmetric ↔ symmetric: the hosts ping each other through the relay', async (t) => {
      const t0 = Date.now();
      await until('x pings y', () => pings('x', 'y'), 60_000);
      t.diagnostic(`first ping reply x→y through the relay ${Date.now() - t0} ms after the test began waiting`);
      assert.ok(await pings('y', 'x'));
      for (const [a, b] of [['x', 'y'], ['y', 'x']] as const) {
        const p = (await peerOf(a, b))!;
        assert.equal(p.path, 'relay', `${a} → ${b}`);
        assert.equal(p.endpoint?.split(':')[0], coordHost.address, 'the relay runs on the coordinator host');
      }
      assert.equal((await status('x')).self.natType, 'endpoint-dependent');
      const counters = (await status('x')).counters;
      assert.ok((counters.relayBound ?? 0) >= 1);
    });

    it('one NAT switched to a full cone: the pair moves to direct, and still pings', async (t) => {
      await until('x pings y before the switch', () => pings('x', 'y'), 30_000);
      await lab.setRouterNat(sym1, 'full-cone');
      const t0 = Date.now();
      await until('x and y say direct', async () => (await peerOf('x', 'y'))?.path === 'direct' && (await peerOf('y', 'x'))?.path === 'direct', 30_000);
      t.diagnostic(`relay → direct ${Date.now() - t0} ms after the NAT became a full cone`);
      await until('x pings y over the direct path', () => pings('x', 'y'), 20_000);
      assert.ok(await pings('y', 'x'));
      const p = (await peerOf('y', 'x'))!;
      assert.equal(p.endpoint?.split(':')[0], sym1.wanAddress, "y reaches x at its NAT's public address");
    });
  });
}
