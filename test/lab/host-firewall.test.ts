/**
 * Hosts with their own input firewall (policy drop, established/related and
 * loopback accepted — the default on many servers), behind ordinary cone NATs:
 * nftables native and iptables via iptables-nft (Debian's default backend).
 * The firewalled host must get a direct path, pings and TCP both ways, and its
 * ruleset back exactly as it was after `knit down`. With `--firewall off` the
 * health check names what to open, and opening exactly that is enough
 * (docs/firewall.md).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import type { HealthCheck } from '../../agent/health.js';
import { BIN, startMesh, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost } from './netlab.js';

const check = canRunLab();

const NFT_INPUT_DROP = `table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
  }
}
`;
const IPTABLES_INPUT_DROP = [
  ['iptables', '-P', 'INPUT', 'DROP'],
  ['iptables', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'],
  ['iptables', '-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT'],
];
const MIB = 1 << 20;

if (!check.ok) {
  test('hosts with their own firewall', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('hosts with their own input firewall (policy drop) behind cone NATs', () => {
    let lab: Lab;
    let dir: string;
    let mesh: LabMesh;
    let routers = 0;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-fw-'));
      lab = await createLab();
      mesh = await startMesh(lab, await lab.addHost('coord'), dir);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** A host behind its own cone NAT. */
    const hostBehindCone = async (name: string) => lab.addHost(name, { behind: await lab.addRouter(`cone${++routers}`, { nat: 'cone' }) });
    // Stateless: counters change with traffic, rules and handles must not.
    const ruleset = async (host: LabHost) => (await lab.run(host.ns, ['nft', '-s', 'list', 'ruleset'])).stdout;
    const firewallCheck = async (name: string): Promise<HealthCheck | undefined> => (await mesh.status(name)).health?.find((c) => c.check === 'firewall');

    /** Path direct both ways, pings both ways, 1 MiB of TCP into and out of the firewalled host. */
    async function assertMeshWorks(fw: string, peer: string): Promise<void> {
      await mesh.untilPath(fw, peer, 'direct', 60_000);
      await mesh.untilPath(peer, fw, 'direct', 30_000);
      await mesh.until(`${peer} pings ${fw} (into the firewalled host)`, () => mesh.pings(peer, fw), 15_000);
      await mesh.until(`${fw} pings ${peer}`, () => mesh.pings(fw, peer), 15_000);
      assert.equal(await mesh.transfer(peer, fw, MIB), MIB, `1 MiB ${peer} → ${fw}`);
      assert.equal(await mesh.transfer(fw, peer, MIB), MIB, `1 MiB ${fw} → ${peer}`);
    }

    /** `knit down`, then the process is gone. */
    async function down(name: string): Promise<void> {
      const a = mesh.agents.get(name)!;
      await lab.run(a.host.ns, [process.execPath, BIN, 'down', '--state', a.state]);
      await mesh.until(`${name} exits after knit down`, () => a.proc.exited(), 15_000);
    }

    const cases: { name: string; setup: (host: LabHost) => Promise<void> }[] = [
      { name: 'nftables', setup: async (host) => { await lab.run(host.ns, ['nft', '-f', '-'], { input: NFT_INPUT_DROP }); } },
      { name: 'iptables-nft', setup: async (host) => { for (const argv of IPTABLES_INPUT_DROP) await lab.run(host.ns, argv); } },
    ];
    for (const [i, c] of cases.entries()) {
      it(`${c.name} input policy drop: Knit opens the tunnel by default, and knit down leaves the ruleset as it was`, async (t) => {
        const fw = `fw${i}`;
        const peer = `peer${i}`;
        const fwHost = await hostBehindCone(fw);
        await c.setup(fwHost);
        const rulesBefore = await ruleset(fwHost);
        mesh.start(fw, fwHost);
        mesh.start(peer, await hostBehindCone(peer));
        const t0 = Date.now();
        await assertMeshWorks(fw, peer);
        t.diagnostic(`direct, pings and 1 MiB both ways ${Date.now() - t0} ms after the start`);
        const health = await firewallCheck(fw);
        assert.equal(health?.level, 'ok', JSON.stringify(health));
        assert.match(health!.detail, /Knit's scoped accept rules admit knit0 and UDP port 41641 in /);
        assert.match(await ruleset(fwHost), /comment "knit:knit0"/);
        await down(fw);
        assert.equal(await ruleset(fwHost), rulesBefore, 'after knit down the host\'s ruleset is exactly what it was');
        await mesh.agents.get(peer)!.proc.stop();
      });
    }

    it('--firewall off: health fails with the exact rules; adding exactly those is enough', async () => {
      const fwHost = await hostBehindCone('fwoff');
      await lab.run(fwHost.ns, ['nft', '-f', '-'], { input: NFT_INPUT_DROP });
      const filterBefore = (await lab.run(fwHost.ns, ['nft', '-s', 'list', 'table', 'inet', 'filter'])).stdout;
      mesh.start('fwoff', fwHost, ['--firewall', 'off']);
      mesh.start('peeroff', await hostBehindCone('peeroff'));
      const failing = await mesh.until('fwoff reports its firewall', async () => {
        const c = await firewallCheck('fwoff');
        return c?.level === 'fail' && c;
      });
      assert.match(failing.detail, /inet filter input drops the mesh's traffic on knit0 or UDP port 41641 \(--firewall off\)/);
      assert.equal(failing.fix, 'nft insert rule inet filter input iifname "knit0" accept; nft insert rule inet filter input udp dport 41641 accept');
      assert.equal((await lab.run(fwHost.ns, ['nft', '-s', 'list', 'table', 'inet', 'filter'])).stdout, filterBefore, 'off: Knit does not touch the host\'s chains');
      // What an admin does with that line. These two rules (no ephemeral port, no `ct state untracked`)
      // suffice because the shared-port steering happens after the filter chains (docs/firewall.md).
      for (const cmd of failing.fix!.split('; ')) await lab.run(fwHost.ns, cmd.split(' ').map((w) => w.replace(/^"(.*)"$/, '$1')));
      await assertMeshWorks('fwoff', 'peeroff');
      await mesh.until('fwoff sees the admin\'s rules', async () => (await firewallCheck('fwoff'))?.level === 'ok', 45_000);
      assert.match((await firewallCheck('fwoff'))!.detail, /the admin's rules admit knit0 and UDP port 41641/);
    });
  });
}
