/**
 * A host with IPv6 switched off (`net.ipv6.conf.{all,default}.disable_ipv6=1`, common on
 * servers and in containers) behind a cone NAT, meeting an ordinary host behind another:
 * the tunnel carries IPv4 both ways (ping, 1 MiB over TCP), status says IPv6 is missing
 * without calling the engine failed, and once IPv6 is switched back on the mesh's IPv6
 * address appears and carries a ping. docs/engines.md, "Address families".
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { FAMILY_RECHECK_MS } from '../../agent/engine-health.js';
import { STATS_POLL_MS } from '../../agent/engine-stats.js';
import { canonicalAddress } from '../../agent/engine/prefix.js';
import { BIN, startMesh, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost } from './netlab.js';

const check = canRunLab();
const MIB = 1 << 20;

if (!check.ok) {
  test('a host with IPv6 disabled', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('a host with IPv6 disabled (wireguard-go, nftables cone NATs)', () => {
    let lab: Lab;
    let dir: string;
    let mesh: LabMesh;
    let hostA: LabHost;
    const setIpv6 = (host: LabHost, on: boolean) => lab.run(host.ns, ['sysctl', '-qw',
      `net.ipv6.conf.all.disable_ipv6=${on ? 0 : 1}`, `net.ipv6.conf.default.disable_ipv6=${on ? 0 : 1}`]);
    const check = async (name: string, which: string) => (await mesh.status(name)).health.find((c) => c.check === which);
    const meshIp = async (name: string, family: 4 | 6) => {
      const ip = (await mesh.status(name)).self.ips.map((a) => a.split('/')[0]!).find((a) => a.includes(':') === (family === 6));
      assert.ok(ip, `${name} has an IPv${family} mesh address`);
      return ip;
    };

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-nov6-'));
      lab = await createLab();
      const coordHost = await lab.addHost('coord');
      hostA = await lab.addHost('a', { behind: await lab.addRouter('cone1', { nat: 'cone' }) });
      const hostB = await lab.addHost('b', { behind: await lab.addRouter('cone2', { nat: 'cone' }) });
      await setIpv6(hostA, false); // before `knit up`, as on a host configured that way
      mesh = await startMesh(lab, coordHost, dir);
      mesh.start('a', hostA);
      mesh.start('b', hostB);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('IPv4 crosses the tunnel both ways: a direct path, ping, and 1 MiB over TCP each way', async (t) => {
      const t0 = Date.now();
      await mesh.until('a pings b', () => mesh.pings('a', 'b'), 60_000);
      t.diagnostic(`first ping a→b ${Date.now() - t0} ms after the test began waiting`);
      assert.ok(await mesh.pings('b', 'a'), 'b pings a');
      await mesh.untilPath('a', 'b', 'direct', 30_000);
      await mesh.untilPath('b', 'a', 'direct', 30_000);
      assert.equal(await mesh.transfer('a', 'b'), MIB, '1 MiB a→b');
      assert.equal(await mesh.transfer('b', 'a'), MIB, '1 MiB b→a');
    });

    it('status: ipv6 warns that the tunnel carries IPv4 only; the engine is not failed; said once in the log', async () => {
      const ipv6 = await mesh.until('a reports its ipv6 check', () => check('a', 'ipv6'), 10_000);
      assert.equal(ipv6.level, 'warn');
      assert.equal(ipv6.detail, 'IPv6 is disabled on this host; the tunnel carries IPv4 only');
      assert.match(ipv6.fix ?? '', /net\.ipv6\.conf\.all\.disable_ipv6=0/);
      assert.equal((await check('a', 'engine'))?.level, 'ok');
      assert.equal((await check('b', 'ipv6'))?.level, 'ok', 'b has IPv6');
      const a = mesh.agents.get('a')!;
      const text = await lab.run(hostA.ns, [process.execPath, BIN, 'status', '--state', a.state]);
      assert.match(text.stdout, /health warn: .*ipv6: IPv6 is disabled on this host/);
      assert.equal(a.proc.output().match(/IPv6 is switched off on this host/g)?.length, 1, 'one log line, not one per apply');
      assert.doesNotMatch(a.proc.output(), /engine apply failed/);
    });

    it('IPv6 switched back on: the IPv6 mesh address appears, and carries a ping', async (t) => {
      // As `ip` prints it (RFC 5952: no leading zeros in a group); the mesh's random prefix may have some.
      const v6 = canonicalAddress(`${await meshIp('a', 6)}/128`)!.split('/')[0]!;
      const bV6 = await meshIp('b', 6);
      await setIpv6(hostA, true);
      const t0 = Date.now();
      // Picked up by the agent's recheck: one period, plus a stats poll to notice it is due.
      const bound = FAMILY_RECHECK_MS + STATS_POLL_MS + 5_000;
      await mesh.until(`a's knit0 holds ${v6}`, async () => {
        const r = await lab.run(hostA.ns, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'knit0', 'scope', 'global']);
        return r.stdout.includes(`${v6}/`);
      }, bound);
      t.diagnostic(`IPv6 mesh address on the interface ${Date.now() - t0} ms after IPv6 was switched on`);
      await mesh.until('a pings b over IPv6', async () =>
        (await lab.run(hostA.ns, ['ping', '-6', '-c', '1', '-W', '1', bV6], { allowFailure: true })).code === 0, 15_000);
      await mesh.until('a\'s ipv6 check is ok', async () => (await check('a', 'ipv6'))?.level === 'ok', 10_000);
      assert.ok(await mesh.pings('a', 'b'), 'IPv4 still works');
    });
  });
}
