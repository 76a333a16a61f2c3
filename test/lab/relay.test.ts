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
import type { StatusDocument } from '../../agent/status.js';
import { until as untilHelper } from '../helpers/until.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabProcess, type LabRouter } from './netlab.js';

const check = canRunLab();
const BIN = join(process.cwd(), 'bin', 'knit.js');

if (!check.ok) {
  test('relay through real symmetric NATs', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('relay through real symmetric NATs (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let coordHost: LabHost;
    let coordProc: LabProcess;
    let sym1: LabRouter;
    const agents = new Map<string, { host: LabHost; proc: LabProcess; state: string }>();

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-relay-lab-'));
      lab = await createLab();
      coordHost = await lab.addHost('coord');
      sym1 = await lab.addRouter('sym1', { nat: 'symmetric' });
      const sym2 = await lab.addRouter('sym2', { nat: 'symmetric' });
      const hosts: [string, LabHost][] = [['x', await lab.addHost('x', { behind: sym1 })], ['y', await lab.addHost('y', { behind: sym2 })]];
      // The relay runs in the coordinator by default (UDP and TCP 3480 on the listen address).
      coordProc = lab.spawn(coordHost.ns, [process.execPath, BIN, 'coordinator', '--listen', `${coordHost.address}:8080`,
        '--stun', `${coordHost.address}:3478`, '--stun2', `${coordHost.address}:3479`, '--data', join(dir, 'coord')]);
      await until('coordinator ready', () => coordProc.output().includes('coordinator ready'), 15_000);
      const r = await lab.run(coordHost.ns, [process.execPath, BIN, 'token', 'create', '--reusable', '--data', join(dir, 'coord')]);
      const token = r.stdout.trim();
      for (const [name, host] of hosts) {
        const state = join(dir, name);
        const proc = lab.spawn(host.ns, [process.execPath, BIN, 'up', '--token', token, '--engine', 'wireguard-go', '--iface', 'knit0',
          '--state', state, '--hostname', name, '--keepalive', '10', '--port-mode', name === 'y' ? 'proxy' : 'auto']);
        agents.set(name, { host, proc, state });
      }
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function explain(): Promise<string> {
      const logs: string[] = [`--- coordinator\n${coordProc.output().slice(-1500)}`];
      for (const [n, a] of agents) {
        const st = await status(n).catch((e: Error) => e.message);
        logs.push(`--- ${n}\n${a.proc.output().slice(-2500)}\n${typeof st === 'string' ? st : JSON.stringify({ self: st.self, peers: st.peers.map((p) => [p.name, p.path, p.endpoint, p.why]), counters: st.counters })}`);
      }
      return logs.join('\n');
    }

    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000) =>
      untilHelper(what, fn, { timeoutMs, intervalMs: 250, explain });

    async function status(name: string): Promise<StatusDocument> {
      const a = agents.get(name)!;
      const r = await lab.run(a.host.ns, [process.execPath, BIN, 'status', '--json', '--state', a.state]);
      return JSON.parse(r.stdout) as StatusDocument;
    }

    async function pings(from: string, to: string): Promise<boolean> {
      const ip = (await status(to)).self.ips[0];
      if (!ip) return false;
      const r = await lab.run(agents.get(from)!.host.ns, ['ping', '-c', '1', '-W', '1', ip], { allowFailure: true });
      return r.code === 0;
    }

    const peerOf = async (from: string, to: string) => (await status(from)).peers.find((p) => p.name === to);

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
