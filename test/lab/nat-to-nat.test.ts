/**
 * The ground truth: real `knit` processes with wireguard-go in network
 * namespaces behind real nftables NAT routers. A coordinator sits on the lab
 * internet (198.18.0.0/15); each host gets nothing but one token; the verdict
 * is a real `ping` between mesh addresses through the tunnel.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { BIN, startMesh, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabRouter } from './netlab.js';

const check = canRunLab();

if (!check.ok) {
  test('NAT-to-NAT through real NAT', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('NAT-to-NAT through real NAT (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let coordHost: LabHost;
    let coneC: LabRouter;
    let mesh: LabMesh;
    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number) => mesh.until(what, fn, timeoutMs);
    const status = (name: string) => mesh.status(name);
    const pings = (from: string, to: string) => mesh.pings(from, to);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-n2n-'));
      lab = await createLab();
      coordHost = await lab.addHost('coord');
      const coneA = await lab.addRouter('cone1', { nat: 'cone' });
      const coneB = await lab.addRouter('cone2', { nat: 'cone' });
      coneC = await lab.addRouter('cone3', { nat: 'cone' });
      const outer = await lab.addRouter('cgn', { nat: 'cone' });
      const inner = await lab.addRouter('home', { nat: 'cone', behind: outer });
      const sym = await lab.addRouter('sym1', { nat: 'symmetric' });
      const hosts: [string, LabHost][] = [
        ['a', await lab.addHost('a', { behind: coneA })],
        ['b', await lab.addHost('b', { behind: coneB })],
        ['c', await lab.addHost('c', { behind: coneA })], // same LAN as a
        ['s', await lab.addHost('s', { behind: sym })],
        ['d', await lab.addHost('d', { behind: inner })], // double NAT: home router behind a carrier NAT
        // Big-mesh mode (--eager-peers 0): e, f, g punch each other only on demand.
        ['e', await lab.addHost('e', { behind: await lab.addRouter('cone4', { nat: 'cone' }) })],
        ['f', await lab.addHost('f', { behind: await lab.addRouter('cone5', { nat: 'cone' }) })],
        ['g', await lab.addHost('g', { behind: await lab.addRouter('cone6', { nat: 'cone' }) })],
      ];
      mesh = await startMesh(lab, coordHost, dir);
      for (const [name, host] of hosts) {
        // b runs the portable proxy mode, the others the default (shared, zero-copy): both must interoperate.
        mesh.start(name, host, ['--port-mode', name === 'b' || name === 'f' ? 'proxy' : 'auto', ...(['e', 'f', 'g'].includes(name) ? ['--eager-peers', '0'] : [])]);
      }
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function meshIp(name: string): Promise<string> {
      return until(`${name} up`, async () => (await status(name)).self.ips[0]);
    }

    it('cone ↔ cone: two hosts behind two NATs ping each other over a direct path', async (t) => {
      const t0 = Date.now();
      await until('a pings b', () => pings('a', 'b'), 60_000);
      t.diagnostic(`first ping reply a→b ${Date.now() - t0} ms after the test began waiting`);
      assert.ok(await pings('b', 'a'));
      const peer = await mesh.untilPath('a', 'b', 'direct', 20_000);
      assert.equal((await status('a')).engine.portMode, 'shared', 'shared is the default where nftables works');
      assert.equal((await status('b')).engine.portMode, 'proxy');
      assert.match(peer.endpoint ?? '', /^198\.18\./, 'the endpoint is b\'s NAT mapping on the internet');
      await until('the handshake shows in status', async () => (await status('a')).peers.find((p) => p.name === 'b')!.lastHandshake > 0, 10_000);
    });

    it('two hosts behind the same NAT talk over the LAN, not a hairpin', async () => {
      await until('a pings c', () => pings('a', 'c'), 60_000);
      const peer = await mesh.untilPath('a', 'c', 'lan', 20_000);
      assert.match(peer.endpoint ?? '', /^10\./);
    });

    it('double NAT (home router behind a carrier NAT) ↔ cone: direct', async () => {
      await until('d pings b', () => pings('d', 'b'), 60_000);
      await mesh.untilPath('d', 'b', 'direct', 20_000);
    });

    it('roaming: a host moved behind another NAT recovers its path', async (t) => {
      await until('a pings b before the move', () => pings('a', 'b'), 60_000);
      const b = mesh.agents.get('b')!;
      const moved = await lab.moveHost(b.host, coneC);
      const t0 = Date.now();
      await until('a pings b after the move', () => pings('a', 'b'), 60_000);
      t.diagnostic(`b moved to ${moved} behind another NAT; ping through the tunnel again after ${Date.now() - t0} ms`);
      const peer = await mesh.untilPath('a', 'b', 'direct', 20_000);
      assert.equal(peer.endpoint?.split(':')[0], coneC.wanAddress, 'a now reaches b through its new NAT');
    });

    it('roaming: the carrier NAT\'s public address changes under a double-NATed host; the path recovers', async (t) => {
      await until('d pings b before the renumbering', () => pings('d', 'b'), 60_000);
      const carrier = mesh.agents.get('d')!.host.behind!.behind!;
      const fresh = await lab.setRouterPublicAddress(carrier);
      await lab.flushConntrack(carrier);
      const t0 = Date.now();
      await until('d pings b after the renumbering', () => pings('d', 'b'), 60_000);
      t.diagnostic(`carrier NAT renumbered to ${fresh}; ping through the tunnel again after ${Date.now() - t0} ms`);
      await until('b follows d to its new public address', async () => (await status('b')).peers.find((p) => p.name === 'd')!.endpoint?.split(':')[0] === fresh, 15_000);
    });

    it('on demand: lazy peers stay idle until traffic asks, then connect (shared-mode waker, proxy stand-in)', async () => {
      await meshIp('e');
      await meshIp('f');
      await meshIp('g');
      const idle = (await status('e')).peers.find((p) => p.name === 'f')!;
      assert.equal(idle.path, 'none');
      assert.match(idle.why ?? '', /on demand/);
      // e is in shared mode: its WireGuard's handshake to f goes to the waker, which asks for a punch.
      await until('e pings f (shared-mode waker)', () => pings('e', 'f'), 30_000);
      await until('e reports a direct path to f', async () => (await status('e')).peers.find((p) => p.name === 'f')!.path === 'direct', 10_000);
      assert.ok(((await status('e')).counters.wakerWakes ?? 0) >= 1, 'the waker saw WireGuard ask for f');
      // f is in proxy mode: its WireGuard's packets to g reach g's stand-in, which asks for a punch.
      assert.equal((await status('f')).peers.find((p) => p.name === 'g')!.path, 'none');
      await until('f pings g (proxy stand-in)', () => pings('f', 'g'), 30_000);
      await until('f reports a direct path to g', async () => (await status('f')).peers.find((p) => p.name === 'g')!.path === 'direct', 10_000);
    });

    it('port-restricted cone ↔ symmetric (random ports): relayed at once, then direct by birthday probing', async (t) => {
      // Port-restricted filtering admits only the exact port a host sent to, and the symmetric
      // NAT picks a random port per destination: no ordinary punch can meet. The coordinator's
      // relay carries the pair at once (docs/relay.md); meanwhile the hard side opens extra
      // sockets and the easy side probes random ports of its NAT (docs/disco.md, hard NATs).
      await until('a pings s', () => pings('a', 's'), 60_000);
      const first = (await status('a')).peers.find((p) => p.name === 's')!;
      // Relayed or already direct; either may still wait for its own handshake (docs/disco.md).
      assert.match(first.path, /^(relay|direct)( \(handshaking\))?$/);
      if (first.path.startsWith('relay')) assert.equal(first.endpoint?.split(':')[0], coordHost.address, 'relayed by the coordinator\'s relay');
      assert.equal((await status('s')).self.natType, 'endpoint-dependent');
      assert.equal((await status('a')).self.natType, 'endpoint-independent');
      const t0 = Date.now();
      const direct = await until('a reaches s directly', async () => {
        const p = (await status('a')).peers.find((x) => x.name === 's')!;
        return p.path === 'direct' ? p : undefined;
      }, 90_000);
      t.diagnostic(`direct ${Date.now() - t0} ms after the first ping (via ${direct.endpoint}); a probed ${(await status('a')).counters.hardNatProbes} ports`);
      assert.match(direct.endpoint ?? '', /^198\.18\./, 's\'s NAT, on a port found by probing');
      assert.ok(((await status('s')).counters.hardNatSockets ?? 0) > 0, 's opened extra sockets (the birthday side)');
      assert.ok(await pings('a', 's'), 'and the tunnel works over it');
    });

    it('a tunnel port already taken on the host: `knit up` says so and exits, leaving nothing behind', async () => {
      // The agent holds the engine's port from the start (agent/cli/up.ts), so a port taken by
      // another program is refused at once, in plain words, before any interface or rule exists.
      const host = await lab.addHost('p', { behind: coneC });
      const blocker = lab.spawn(host.ns, [process.execPath, '-e', "require('dgram').createSocket('udp4').bind(41800, () => console.log('bound'))"]);
      await until('the blocker holds 41800', () => blocker.output().includes('bound'), 10_000);
      const r = await lab.run(host.ns, [process.execPath, BIN, 'up', '--token', mesh.token, '--engine', 'wireguard-go', '--iface', 'knitp',
        '--state', join(dir, 'p'), '--hostname', 'p', '--port', '41800'], { allowFailure: true, timeoutMs: 30_000 });
      await blocker.stop();
      assert.equal(r.code, 2, 'a usage error');
      assert.match(r.stderr, /cannot use UDP port 41800/);
      assert.equal((await lab.run(host.ns, ['ip', 'link', 'show', 'dev', 'knitp'], { allowFailure: true })).code === 0, false, 'no interface left');
      assert.equal((await lab.run(host.ns, ['nft', 'list', 'table', 'inet', 'knit_knitp'], { allowFailure: true })).code === 0, false, 'no steering rules left');
    });
  });
}
