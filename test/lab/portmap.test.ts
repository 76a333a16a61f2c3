/**
 * Port mapping against a real implementation: Debian's miniupnpd (nftables
 * backend) on a lab NAT router. A host behind it maps its "tunnel port" by
 * PCP, by NAT-PMP and by UPnP-IGD (each forced in turn), the mapping is
 * verified by the coordinator's STUN observer echoing through it, a packet
 * from another internet host reaches the inner port through the mapped port
 * (the router drops unsolicited input otherwise), the mapping is renewed,
 * and it is deleted when the mapper stops.
 *
 * miniupnpd refuses to map when its WAN address is private or reserved
 * (198.18.0.0/15 is), unless STUN shows the router unfiltered and 1:1; so it
 * runs with ext_perform_stun against the coordinator's observer on the lab
 * internet, which is exactly that. Everything stays inside the lab's
 * namespaces; SSDP multicast only ever crosses the router's LAN bridge.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { StatusDocument } from '../../agent/status.js';
import { until } from '../helpers/until.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabProcess, type LabRouter } from './netlab.js';
import { startUdpProbe } from './udp-probe.js';

const MINIUPNPD = '/usr/sbin/miniupnpd';
const BIN = join(process.cwd(), 'bin', 'knit.js');
const DRIVER = fileURLToPath(new URL('./portmap-driver.js', import.meta.url));
/** Short, so a renewal (at half-life) happens within the test. */
const LIFETIME_S = 6;

function check(): { ok: true } | { ok: false; reason: string } {
  const lab = canRunLab();
  if (!lab.ok) return lab;
  const r = spawnSync(MINIUPNPD, ['--version'], { encoding: 'utf8', timeout: 5_000 });
  if (r.error || !/miniupnpd/i.test(`${r.stdout}${r.stderr}`)) return { ok: false, reason: 'miniupnpd is not installed (apt-get install miniupnpd-nftables)' };
  if (!/nftables/i.test(`${r.stdout}${r.stderr}`)) return { ok: false, reason: 'this miniupnpd is not the nftables build (install miniupnpd-nftables)' };
  return { ok: true };
}

/** The router's own ruleset: the lab's NAT and filtering plus the chains miniupnpd fills (its DNAT and accept rules). */
function routerRuleset(): string {
  return [
    'table inet knit_upnp {',
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    '    ct state established,related accept',
    '    jump miniupnpd',
    '    iifname "br0" oifname "wan0" accept',
    '  }',
    '  chain miniupnpd {',
    '  }',
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    '    jump prerouting_miniupnpd',
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    '    jump postrouting_miniupnpd',
    '    oifname "wan0" masquerade',
    '  }',
    '  chain prerouting_miniupnpd {',
    '  }',
    '  chain postrouting_miniupnpd {',
    '  }',
    // Like the lab's routers (and home routers): unsolicited traffic to the router itself is dropped.
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    '    iifname "wan0" ct state established,related accept',
    '    iifname "wan0" drop',
    '  }',
    '}',
  ].join('\n') + '\n';
}

function miniupnpdConf(router: LabRouter, stunHost: string): string {
  return [
    'ext_ifname=wan0',
    'listening_ip=br0',
    'http_port=0',
    'enable_natpmp=yes', // NAT-PMP and PCP share the port; this build has PCP
    'enable_upnp=yes',
    'secure_mode=yes', // a client may map only to itself
    'ext_perform_stun=yes',
    `ext_stun_host=${stunHost}`,
    'ext_stun_port=3478',
    'upnp_table_name=knit_upnp',
    'upnp_nat_table_name=knit_upnp',
    'upnp_forward_chain=miniupnpd',
    'upnp_nat_chain=prerouting_miniupnpd',
    'upnp_nat_postrouting_chain=postrouting_miniupnpd',
    'min_lifetime=2',
    'max_lifetime=3600',
    'system_uptime=yes',
    'uuid=3f1a8c2e-5b7d-4e9a-9c1f-2a6b8d0e4f11',
    `allow 1024-65535 ${router.lanPrefix} 1024-65535`,
    'deny 0-65535 0.0.0.0/0 0-65535',
  ].join('\n') + '\n';
}

interface DriverEvent { event: string; mapping?: { protocol: string; external: string; externalAddress: string; externalPort: number; expiresAt: number } | null; from?: string; data?: string; counters?: { renewals: number }; status?: { verified: boolean } }

const ok = check();
if (!ok.ok) {
  test('port mapping against miniupnpd', (t) => { t.skip(`skipped: ${ok.reason}`); });
} else {
  describe('port mapping against miniupnpd (PCP, NAT-PMP, UPnP-IGD)', () => {
    let lab: Lab;
    let dir: string;
    let coord: LabHost;
    let outside: LabHost;
    let router: LabRouter;
    let host: LabHost;
    let upnpd: LabProcess;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-portmap-'));
      lab = await createLab();
      coord = await lab.addHost('coord');
      outside = await lab.addHost('out');
      router = await lab.addRouter('igd', { nat: 'cone' });
      host = await lab.addHost('h', { behind: router });
      await lab.run(router.ns, ['nft', 'delete', 'table', 'ip', 'knit_lab']);
      await lab.run(router.ns, ['nft', '-f', '-'], { input: routerRuleset() });
      // The coordinator's STUN observer: miniupnpd's public-address check, and our verification echo.
      const c = lab.spawn(coord.ns, [process.execPath, BIN, 'coordinator', '--listen', `${coord.address}:8080`, '--stun', `${coord.address}:3478`, '--data', join(dir, 'coord')]);
      await until('coordinator ready', () => c.output().includes('coordinator ready'), { timeoutMs: 15_000 });
      writeFileSync(join(dir, 'miniupnpd.conf'), miniupnpdConf(router, coord.address));
      upnpd = lab.spawn(router.ns, [MINIUPNPD, '-d', '-f', join(dir, 'miniupnpd.conf')]);
      await until('miniupnpd listening', () => upnpd.output().includes('Listening for NAT-PMP/PCP traffic'), {
        timeoutMs: 15_000, explain: () => upnpd.output().slice(-2000),
      });
      assert.match(upnpd.output(), /Port forwarding is now enabled/);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function miniupnpdRules(): Promise<string> {
      return (await lab.run(router.ns, ['nft', 'list', 'chain', 'inet', 'knit_upnp', 'prerouting_miniupnpd'])).stdout;
    }

    function startDriver(port: number, protocol: string) {
      const events: DriverEvent[] = [];
      const proc = lab.spawn(host.ns, [process.execPath, DRIVER, JSON.stringify({ port, protocols: [protocol], lifetimeS: LIFETIME_S, observer: `${coord.address}:3478` })]);
      proc.onLine((line) => {
        if (!line.startsWith('{"event"')) return;
        try { events.push(JSON.parse(line) as DriverEvent); } catch { /* a partial line */ }
      });
      const explain = () => `driver:\n${proc.output().slice(-3000)}\nminiupnpd:\n${upnpd.output().slice(-1500)}`;
      return { proc, events, explain, last: (e: string) => events.filter((x) => x.event === e).at(-1) };
    }

    it('knit up: the verified mapping is the first endpoint candidate, shown in status, deleted by knit down', async (t) => {
      const token = (await lab.run(coord.ns, [process.execPath, BIN, 'token', 'create', '--reusable', '--data', join(dir, 'coord')])).stdout.trim();
      const state = join(dir, 'agent');
      const agent = lab.spawn(host.ns, [process.execPath, BIN, 'up', '--token', token, '--engine', 'memory', '--port', '41650', '--state', state, '--hostname', 'pm']);
      const status = async () => JSON.parse((await lab.run(host.ns, [process.execPath, BIN, 'status', '--json', '--state', state])).stdout) as StatusDocument;
      const t0 = Date.now();
      const st = await until('the agent reports a verified port mapping', async () => {
        const s = await status();
        return s.portMapping?.verified && s.self.endpoints[0] === s.portMapping.external ? s : undefined;
      }, { timeoutMs: 20_000, explain: () => agent.output().slice(-3000) });
      t.diagnostic(`knit up: ${st.portMapping!.protocol} mapping ${st.portMapping!.external} first among ${st.self.endpoints.join(' ')} after ${Date.now() - t0} ms`);
      assert.equal(st.portMapping!.protocol, 'pcp', 'PCP is tried first');
      assert.equal(st.portMapping!.external, `${router.wanAddress}:41650`);
      assert.ok(st.portMapping!.expiresAt! > Date.now(), 'the expiry is in the future (wall clock)');
      assert.ok((st.counters.portmapVerified ?? 0) >= 1);
      await lab.run(host.ns, [process.execPath, BIN, 'down', '--state', state]);
      await until('the agent exits', () => agent.exited(), { timeoutMs: 10_000, explain: () => agent.output().slice(-2000) });
      assert.ok(!(await miniupnpdRules()).includes('dport 41650 '), 'knit down deleted the mapping');
    });

    for (const [i, protocol] of (['pcp', 'natpmp', 'upnp'] as const).entries()) {
      it(`${protocol}: mapped, verified, reachable from the internet, renewed, deleted on stop`, async (t) => {
        const port = 41641 + i;
        const d = startDriver(port, protocol);
        const t0 = Date.now();
        const cand = await until(`a verified ${protocol} mapping`, () => d.last('candidate')?.mapping ?? undefined, { timeoutMs: 20_000, explain: d.explain });
        t.diagnostic(`${protocol}: verified mapping ${cand.external} after ${Date.now() - t0} ms`);
        assert.equal(cand.protocol, protocol);
        assert.equal(cand.externalAddress, router.wanAddress, 'the router\'s public address');
        assert.match(await miniupnpdRules(), new RegExp(`dport ${cand.externalPort} dnat ip to ${host.address.replace(/\./g, '\\.')}:${port}`));

        // From another host on the internet, unsolicited: through the mapped port to the inner port.
        const out = await startUdpProbe(lab, outside.ns, 7000);
        try {
          await until('a datagram from the internet through the mapping', async () => {
            await out.send(cand.external, `hello ${protocol}`);
            return d.events.find((e) => e.event === 'datagram' && e.data === `hello ${protocol}`);
          }, { timeoutMs: 5_000, intervalMs: 300, explain: d.explain });
        } finally {
          await out.stop();
        }

        // Renewal at half of the 6 s lifetime keeps the mapping (and the candidate).
        await until('a renewal', () => (d.last('status')?.counters?.renewals ?? 0) >= 1, { timeoutMs: 10_000, explain: d.explain });
        assert.equal(d.last('status')?.status?.verified, true);

        // Stop: the mapping is deleted from the router, and unsolicited traffic is dropped again.
        await d.proc.stop();
        assert.ok(d.events.some((e) => e.event === 'stopped'), `the driver stopped cleanly\n${d.explain()}`);
        await until('the router forgot the mapping', async () => !(await miniupnpdRules()).includes(`dport ${cand.externalPort} `), { timeoutMs: 5_000 });
        await lab.flushConntrack(router);
        const inner = await startUdpProbe(lab, host.ns, port);
        const out2 = await startUdpProbe(lab, outside.ns, 7001);
        try {
          for (let k = 0; k < 3; k++) await out2.send(cand.external, 'after delete');
          await new Promise((r) => setTimeout(r, 1000));
          assert.equal(inner.received().length, 0, 'nothing gets in once the mapping is gone');
        } finally {
          await inner.stop();
          await out2.stop();
        }
      });
    }
  });
}
