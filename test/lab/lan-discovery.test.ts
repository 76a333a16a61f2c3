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
import type { StatusDocument } from '../../agent/status.js';
import { until as untilHelper } from '../helpers/until.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabProcess, type LabRouter } from './netlab.js';

const check = canRunLab();
const BIN = join(process.cwd(), 'bin', 'knit.js');

if (!check.ok) {
  test('LAN discovery through real mDNS', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('LAN discovery through real mDNS (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let home: LabRouter;
    let coordProc: LabProcess;
    let token = '';
    const agents = new Map<string, { host: LabHost; proc?: LabProcess; state: string; connectedLanAt?: number }>();

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-lan-'));
      lab = await createLab();
      const coordHost = await lab.addHost('coord');
      home = await lab.addRouter('home', { nat: 'cone' });
      const away = await lab.addRouter('away', { nat: 'cone' });
      coordProc = lab.spawn(coordHost.ns, [process.execPath, BIN, 'coordinator', '--listen', `${coordHost.address}:8080`,
        '--stun', `${coordHost.address}:3478`, '--stun2', `${coordHost.address}:3479`, '--data', join(dir, 'coord')]);
      await until('coordinator ready', () => coordProc.output().includes('coordinator ready'));
      token = (await lab.run(coordHost.ns, [process.execPath, BIN, 'token', 'create', '--reusable', '--data', join(dir, 'coord')])).stdout.trim();
      agents.set('a', { host: await lab.addHost('a', { behind: home }), state: join(dir, 'a') });
      agents.set('b', { host: await lab.addHost('b', { behind: home }), state: join(dir, 'b') });
      agents.set('c', { host: await lab.addHost('c', { behind: away }), state: join(dir, 'c') });
      for (const name of agents.keys()) start(name, ['--token', token]);
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    function start(name: string, extra: string[]): void {
      const a = agents.get(name)!;
      a.connectedLanAt = undefined;
      a.proc = lab.spawn(a.host.ns, [process.execPath, BIN, 'up', '--engine', 'wireguard-go', '--iface', 'knit0', '--state', a.state,
        '--hostname', name, '--keepalive', '10', ...extra]);
      a.proc.onLine((line) => {
        if (/peer \w+ connected \(lan\)/.test(line) && a.connectedLanAt === undefined) a.connectedLanAt = Date.now();
      });
    }

    async function explain(): Promise<string> {
      const logs: string[] = [];
      for (const [n, a] of agents) {
        const st = await status(n).catch((e: Error) => e.message);
        logs.push(`--- ${n}\n${a.proc?.output().slice(-1500)}\n${typeof st === 'string' ? st : JSON.stringify({ self: st.self, peers: st.peers.map((p) => [p.name, p.path, p.endpoint, p.why]), counters: st.counters })}`);
      }
      return logs.join('\n');
    }

    function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
      return untilHelper(what, fn, { timeoutMs, intervalMs: 250, explain });
    }

    async function status(name: string): Promise<StatusDocument> {
      const a = agents.get(name)!;
      return JSON.parse((await lab.run(a.host.ns, [process.execPath, BIN, 'status', '--json', '--state', a.state])).stdout) as StatusDocument;
    }

    async function pings(from: string, to: string): Promise<boolean> {
      const ip = (await status(to)).self.ips[0]!;
      return (await lab.run(agents.get(from)!.host.ns, ['ping', '-c', '1', '-W', '1', ip], { allowFailure: true })).code === 0;
    }

    it('two hosts behind the same NAT find each other by mDNS and talk over the LAN; mDNS does not cross the NAT', async () => {
      await until('a pings b', () => pings('a', 'b'), 60_000);
      const sa = await status('a');
      const peer = sa.peers.find((p) => p.name === 'b')!;
      assert.equal(peer.path, 'lan');
      assert.equal(peer.endpoint?.split(':')[0], agents.get('b')!.host.address, 'b\'s LAN address');
      assert.ok((sa.counters.lanCandidates ?? 0) > 0, 'a learned b from its announcement');
      assert.ok(((await status('b')).counters.lanCandidates ?? 0) > 0, 'and b learned a');
      await until('c knows its peers', async () => (await status('c')).peers.length === 2);
      const sc = await status('c');
      assert.equal(sc.counters.lanCandidates ?? 0, 0, 'no announcement from behind the other NAT reached c');
      assert.equal(sc.counters.lanNotPeer ?? 0, 0);
    });

    it('coordinator down, both agents rebooted onto new LAN addresses and a new port: mDNS reunites them', async (t) => {
      await until('a pings b first', () => pings('a', 'b'), 60_000);
      await coordProc.stop();
      for (const name of ['a', 'b']) await agents.get(name)!.proc!.stop();
      const before = agents.get('b')!.host.address;
      for (const name of ['a', 'b']) await lab.moveHost(agents.get(name)!.host, home);
      assert.notEqual(agents.get('b')!.host.address, before, 'b has a new LAN address');
      const t0 = Date.now();
      start('a', ['--port', '41700']);
      start('b', ['--port', '41700']);
      await until('a and b connected over the LAN', () => agents.get('a')!.connectedLanAt !== undefined && agents.get('b')!.connectedLanAt !== undefined, 60_000);
      const tookMs = Math.max(agents.get('a')!.connectedLanAt!, agents.get('b')!.connectedLanAt!) - t0;
      t.diagnostic(`both agents reported a lan path ${tookMs} ms after both were started (node start-up included)`);
      await until('a pings b through the tunnel', () => pings('a', 'b'), 30_000);
      const sa = await status('a');
      assert.notEqual(sa.coordinator.status, 'connected');
      const peer = sa.peers.find((p) => p.name === 'b')!;
      assert.equal(peer.path, 'lan');
      assert.equal(peer.endpoint, `${agents.get('b')!.host.address}:41700`, 'the address mDNS announced, not the stale cached one');
    });
  });
}
