/**
 * Path MTU in the lab: one router's uplink has an MTU of 1280 (a tunnel in a tunnel, some
 * mobile and IPv6-era links), one has PPPoE's 1492, one is ordinary. The lab internet is a
 * Linux bridge: a frame bigger than a port's MTU is dropped there without a word (no ICMP),
 * so only probing tells. Verdict: a 1,300-byte ping and a 1 MiB TCP transfer through the
 * tunnel, both ways, and status showing what each path carries.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { startMesh, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabRouter } from './netlab.js';

const check = canRunLab();

/** Sets the MTU of a router's uplink on both ends of its veth: wan0 and its bridge port on the segment above. */
async function setUplinkMtu(lab: Lab, router: LabRouter, mtu: number): Promise<void> {
  const above = router.behind ? router.behind.ns : lab.internetNs;
  const [wan] = JSON.parse((await lab.run(router.ns, ['ip', '-j', 'link', 'show', 'dev', 'wan0'])).stdout) as { link_index: number }[];
  const ports = JSON.parse((await lab.run(above, ['ip', '-j', 'link', 'show'])).stdout) as { ifindex: number; ifname: string }[];
  const port = ports.find((l) => l.ifindex === wan!.link_index);
  assert.ok(port, `${router.name}'s bridge port`);
  await lab.run(router.ns, ['ip', 'link', 'set', 'dev', 'wan0', 'mtu', String(mtu)]);
  await lab.run(above, ['ip', 'link', 'set', 'dev', port.ifname, 'mtu', String(mtu)]);
}

if (!check.ok) {
  test('path MTU through real NAT', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('path MTU: a 1280 uplink and a 1492 (PPPoE) uplink (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let mesh: LabMesh;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-mtu-'));
      lab = await createLab();
      const coordHost = await lab.addHost('coord');
      const ordinary = await lab.addRouter('home1', { nat: 'cone' });
      const small = await lab.addRouter('tun1280', { nat: 'cone' });
      const pppoe = await lab.addRouter('pppoe', { nat: 'cone' });
      await setUplinkMtu(lab, small, 1280);
      await setUplinkMtu(lab, pppoe, 1492);
      const a = await lab.addHost('a', { behind: ordinary });
      const b = await lab.addHost('b', { behind: small });
      const c = await lab.addHost('c', { behind: pppoe });
      mesh = await startMesh(lab, coordHost, dir);
      mesh.start('a', a);
      mesh.start('b', b, ['--port-mode', 'proxy']); // proxy mode carries WireGuard's packets itself: it must keep their size
      mesh.start('c', c);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const rows = [
      { from: 'a', to: 'b', mtu: 1216, pathMtu: 1280 },
      { from: 'b', to: 'a', mtu: 1216, pathMtu: 1280 },
      { from: 'a', to: 'c', mtu: 1420, pathMtu: 1480 },
      { from: 'c', to: 'a', mtu: 1420, pathMtu: 1480 },
      { from: 'b', to: 'c', mtu: 1216, pathMtu: 1280 },
    ];

    it('status shows what each direct path carries, and the mtu check warns about the 1280 path', async () => {
      for (const r of rows) {
        await mesh.untilPath(r.from, r.to, 'direct', 60_000);
        const p = await mesh.until(`${r.from} knows the path MTU to ${r.to}`, async () => {
          const peer = await mesh.peer(r.from, r.to);
          return peer?.pathMtu !== undefined && peer;
        });
        assert.deepEqual({ mtu: p.mtu, pathMtu: p.pathMtu }, { mtu: r.mtu, pathMtu: r.pathMtu }, `${r.from} → ${r.to}`);
      }
      const health = (await mesh.status('b')).health.find((h) => h.check === 'mtu');
      assert.equal(health?.level, 'warn', JSON.stringify(health));
      assert.equal((await mesh.status('a')).health.find((h) => h.check === 'mtu')?.level, 'warn', 'a sees its 1280 path to b');
    });

    it('a 1,300-byte ping and a 1 MiB TCP transfer cross every path, both ways', async () => {
      for (const r of rows) {
        await mesh.until(`${r.from} pings ${r.to} with 1,300 bytes`, () => mesh.pings(r.from, r.to, 1300), 20_000);
        const got = await mesh.transfer(r.from, r.to, 1 << 20, 20_000);
        assert.equal(got, 1 << 20, `${r.from} → ${r.to}: 1 MiB`);
      }
    });
  });
}
