/**
 * LAN discovery in the lab: real `knit up` processes with wireguard-go in
 * network namespaces, two of them on one LAN behind a real nftables NAT and
 * one behind another. They find each other by mDNS (224.0.0.251 on their own
 * LAN only: the namespaces are the test's, multicast never leaves them), and
 * mDNS alone reunites them after both reboot onto new LAN addresses and a new
 * tunnel port while the coordinator is gone.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { startMesh, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabRouter } from './netlab.js';

const check = canRunLab();

if (!check.ok) {
  test('LAN discovery through real mDNS', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('LAN discovery through real mDNS (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let home: LabRouter;
    let mesh: LabMesh;
    const hosts = new Map<string, LabHost>();
    /** When each agent's log first said a peer connected over the LAN. */
    const connectedLanAt = new Map<string, number>();
    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number) => mesh.until(what, fn, timeoutMs);
    const status = (name: string) => mesh.status(name);
    const pings = (from: string, to: string) => mesh.pings(from, to);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-lan-'));
      lab = await createLab();
      const coordHost = await lab.addHost('coord');
      home = await lab.addRouter('home', { nat: 'cone' });
      const away = await lab.addRouter('away', { nat: 'cone' });
      mesh = await startMesh(lab, coordHost, dir);
      hosts.set('a', await lab.addHost('a', { behind: home }));
      hosts.set('b', await lab.addHost('b', { behind: home }));
      hosts.set('c', await lab.addHost('c', { behind: away }));
      for (const name of hosts.keys()) start(name, []);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    function start(name: string, extra: string[]): void {
      connectedLanAt.delete(name);
      mesh.start(name, hosts.get(name)!, extra).proc.onLine((line) => {
        if (/peer \w+ connected \(lan\)/.test(line) && !connectedLanAt.has(name)) connectedLanAt.set(name, Date.now());
      });
    }

    it('two hosts behind the same NAT find each other by mDNS and talk over the LAN; mDNS does not cross the NAT', async () => {
      const peer = await mesh.untilPath('a', 'b', 'lan', 60_000);
      assert.equal(peer.endpoint?.split(':')[0], hosts.get('b')!.address, 'b\'s LAN address');
      await until('a pings b', () => pings('a', 'b'));
      // Each agent also reports its LAN address to the coordinator, so the pair may reach `lan`
      // before either heard the other's announcement (the browse schedule is 0, 1, 3, 7 s):
      // wait for mDNS itself rather than race it.
      await until('a learned b from its announcement', async () => ((await status('a')).counters.lanCandidates ?? 0) > 0, 15_000);
      await until('and b learned a', async () => ((await status('b')).counters.lanCandidates ?? 0) > 0, 15_000);
      await until('c knows its peers', async () => (await status('c')).peers.length === 2);
      const sc = await status('c');
      assert.equal(sc.counters.lanCandidates ?? 0, 0, 'no announcement from behind the other NAT reached c');
      assert.equal(sc.counters.lanNotPeer ?? 0, 0);
    });

    it('coordinator down, both agents rebooted onto new LAN addresses and a new port: mDNS reunites them', async (t) => {
      await until('a pings b first', () => pings('a', 'b'), 60_000);
      await mesh.coordProc.stop();
      for (const name of ['a', 'b']) await mesh.agents.get(name)!.proc.stop();
      const before = hosts.get('b')!.address;
      for (const name of ['a', 'b']) await lab.moveHost(hosts.get(name)!, home);
      assert.notEqual(hosts.get('b')!.address, before, 'b has a new LAN address');
      const t0 = Date.now();
      start('a', ['--port', '41700']);
      start('b', ['--port', '41700']);
      await until('a and b connected over the LAN', () => connectedLanAt.has('a') && connectedLanAt.has('b'), 60_000);
      const tookMs = Math.max(connectedLanAt.get('a')!, connectedLanAt.get('b')!) - t0;
      t.diagnostic(`both agents reported a lan path ${tookMs} ms after both were started (node start-up included)`);
      await until('a pings b through the tunnel', () => pings('a', 'b'), 30_000);
      const sa = await status('a');
      assert.notEqual(sa.coordinator.status, 'connected');
      const peer = sa.peers.find((p) => p.name === 'b')!;
      assert.equal(peer.path, 'lan');
      assert.equal(peer.endpoint, `${hosts.get('b')!.address}:41700`, 'the address mDNS announced, not the stale cached one');
    });
  });
}
