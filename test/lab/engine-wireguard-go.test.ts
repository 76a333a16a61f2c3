// Real engines in lab namespaces: the contract suite on wireguard-go and on the
// kernel adapter's `wg` path (driving a wireguard-go interface, since these
// machines have no kernel module), start/attach/failure cases, and a real
// tunnel between two namespaces that carries ping and survives a renumbered host.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { silentLogger } from '../../shared/log.js';
import type { ExecFn } from '../../agent/engine/exec.js';
import { createKernelEngine } from '../../agent/engine/kernel.js';
import type { EngineConfig } from '../../agent/engine/types.js';
import { keyHexToBase64 } from '../../agent/engine/uapi.js';
import { uapiExchange, waitForUapiSocket, type UapiTransport } from '../../agent/engine/uapi-socket.js';
import { createWireguardGoEngine } from '../../agent/engine/wireguard-go.js';
import { contractConfig, runEngineContract, type EngineUnderTest, type EngineWrite } from '../agent/engine/contract.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabProcess } from './netlab.js';

const check = canRunLab();

if (!check.ok) {
  test('engines in the lab', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('engines in the lab', () => {
    let lab: Lab;
    let eng: LabHost;
    let ifaceCount = 0;
    const nextIface = (stem: string) => `${stem}${++ifaceCount}`;

    before(async () => {
      lab = await createLab();
      eng = await lab.addHost('eng');
    });
    after(async () => {
      await lab?.teardown();
    });

    /** The interface as `ip` shows it, read independently of the engine's own readers. */
    async function inspect(ns: string, iface: string) {
      const link = await lab.run(ns, ['ip', 'link', 'show', 'dev', iface], { allowFailure: true });
      if (link.code !== 0) return { exists: false, addresses: [], routes: [] };
      const addrJson = JSON.parse((await lab.run(ns, ['ip', '-j', 'addr', 'show', 'dev', iface])).stdout) as Array<{
        addr_info: Array<{ local: string; prefixlen: number; scope: string }>;
      }>;
      const addresses = addrJson[0]!.addr_info.filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`);
      const routes: string[] = [];
      for (const fam of ['-4', '-6']) {
        const r = JSON.parse((await lab.run(ns, ['ip', '-j', fam, 'route', 'show', 'dev', iface])).stdout) as Array<{ dst: string; protocol?: string }>;
        for (const x of r) if (x.protocol !== 'kernel') routes.push(x.dst.includes('/') ? x.dst : `${x.dst}/${fam === '-4' ? 32 : 128}`);
      }
      return { exists: true, addresses: addresses.sort(), routes: routes.sort() };
    }

    /** An exec seam that notes every `ip -batch` (interface write) and `wg set` (peer write). */
    function tappedExec(ns: string, writes: EngineWrite[]): ExecFn {
      const exec = lab.exec(ns);
      return (argv, options) => {
        if (argv[0] === 'ip' && argv.includes('-batch')) writes.push({ kind: 'interface', peers: [] });
        if (argv[0] === 'wg' && argv[1] === 'set') {
          writes.push({ kind: 'peers', peers: argv.flatMap((a, i) => (argv[i - 1] === 'peer' ? [a] : [])).sort() });
        }
        return exec(argv, options);
      };
    }

    /** A UAPI transport that notes every set request and the peers it names. */
    function tappedUapi(writes: EngineWrite[], requests: string[] = []): UapiTransport {
      return (path, request, options) => {
        if (request.startsWith('set=1\n')) {
          requests.push(request);
          const keys = request.split('\n').filter((l) => l.startsWith('public_key=')).map((l) => keyHexToBase64(l.slice(11)));
          writes.push({ kind: 'peers', peers: keys.sort() });
        }
        return uapiExchange(path, request, options);
      };
    }

    function wireguardGo(host: LabHost, iface: string, writes: EngineWrite[], requests?: string[]) {
      return createWireguardGoEngine({
        iface,
        runDir: lab.wireguardRunDir(host.ns),
        logger: silentLogger,
        exec: tappedExec(host.ns, writes),
        uapi: tappedUapi(writes, requests),
        spawn: (argv, env) => lab.spawn(host.ns, argv, env).child,
      });
    }

    /** Starts wireguard-go by hand (not through an engine) and waits for its socket. */
    async function startWireguardGo(host: LabHost, iface: string): Promise<LabProcess> {
      const proc = lab.spawn(host.ns, ['wireguard-go', iface], { WG_PROCESS_FOREGROUND: '1' });
      await waitForUapiSocket(join(lab.wireguardRunDir(host.ns), `${iface}.sock`), {
        gaveUp: () => (proc.exited() ? `wireguard-go exited: ${proc.output()}` : undefined),
      });
      return proc;
    }

    /** IPv6 off or on for one interface, the way `disable_ipv6` does it for a whole host. */
    const setIpv6 = (iface: string) => async (available: boolean) => {
      await lab.run(eng.ns, ['sysctl', '-qw', `net.ipv6.conf.${iface}.disable_ipv6=${available ? 0 : 1}`]);
    };

    runEngineContract('wireguard-go (UAPI) in a namespace', async (): Promise<EngineUnderTest> => {
      const writes: EngineWrite[] = [];
      const iface = nextIface('wgc');
      const engine = wireguardGo(eng, iface, writes);
      return {
        engine, writes: () => writes, inspect: () => inspect(eng.ns, iface),
        setIpv6: async (available) => { await engine.start(); await setIpv6(iface)(available); },
      };
    });

    runEngineContract('kernel adapter (wg set / wg show dump) on a wireguard-go interface', async (): Promise<EngineUnderTest> => {
      const writes: EngineWrite[] = [];
      const iface = nextIface('wgk');
      const proc = await startWireguardGo(eng, iface);
      const engine = createKernelEngine({ iface, logger: silentLogger, exec: tappedExec(eng.ns, writes) });
      return { engine, writes: () => writes, inspect: () => inspect(eng.ns, iface), cleanup: () => proc.stop(), setIpv6: setIpv6(iface) };
    });

    describe('start, attach, failure', () => {
      it('starts wireguard-go as its child, up with MTU 1420, and stops it on close', async () => {
        const iface = nextIface('wgs');
        const engine = wireguardGo(eng, iface, []);
        await engine.start();
        const pid = engine.pid();
        assert.ok(pid !== undefined && pid > 0);
        const link = JSON.parse((await lab.run(eng.ns, ['ip', '-j', 'link', 'show', 'dev', iface])).stdout)[0];
        assert.equal(link.mtu, 1420);
        assert.ok(link.flags.includes('UP'));
        await engine.close();
        assert.equal(engine.pid(), undefined);
        assert.equal(existsSync(engine.socketPath), false);
        assert.equal((await inspect(eng.ns, iface)).exists, false);
      });

      it('attaches to a wireguard-go that is already running, and takes over its peers', async () => {
        const iface = nextIface('wga');
        const proc = await startWireguardGo(eng, iface);
        const stray = encodeKey(generateKeyPair().publicKey);
        await lab.run(eng.ns, ['wg', 'set', iface, 'peer', stray, 'allowed-ips', '100.96.9.9/32']);
        const writes: EngineWrite[] = [];
        const engine = wireguardGo(eng, iface, writes);
        try {
          await engine.apply(contractConfig());
          assert.equal(engine.pid(), undefined, 'attached, not started');
          const keys = (await engine.stats()).map((s) => s.publicKey);
          assert.equal(keys.length, 3);
          assert.ok(!keys.includes(stray), 'a peer nobody asked for is removed');
          assert.ok(writes[0]!.peers.includes(stray));
        } finally {
          await engine.close();
        }
        await proc.stop();
        assert.equal(proc.exited(), true);
      });

      it('fails with KNIT_ERR_ENGINE when wireguard-go cannot run', async () => {
        const engine = createWireguardGoEngine({
          iface: nextIface('wgf'),
          runDir: lab.wireguardRunDir(eng.ns),
          logger: silentLogger,
          exec: lab.exec(eng.ns),
          binary: 'knit-no-such-wireguard-go',
          spawn: (argv, env) => lab.spawn(eng.ns, argv, env).child,
        });
        await assert.rejects(engine.apply(contractConfig()), { code: 'KNIT_ERR_ENGINE' });
        await engine.close();
        // The default spawn, with a binary that does not exist: nothing starts anywhere.
        const direct = createWireguardGoEngine({
          iface: nextIface('wgf'), runDir: lab.wireguardRunDir(eng.ns), logger: silentLogger, exec: lab.exec(eng.ns),
          binary: '/nonexistent/wireguard-go',
        });
        await assert.rejects(direct.apply(contractConfig()), { code: 'KNIT_ERR_ENGINE' });
        await direct.close();
      });

      it('the kernel adapter works, or says clearly that kernel WireGuard is missing', async () => {
        const moduleThere = existsSync('/sys/module/wireguard') || spawnSync('modinfo', ['wireguard'], { stdio: 'ignore' }).status === 0;
        const iface = nextIface('wgn');
        const engine = createKernelEngine({ iface, logger: silentLogger, exec: lab.exec(eng.ns) });
        try {
          if (moduleThere) {
            await engine.apply(contractConfig());
            assert.equal((await engine.stats()).length, 3);
          } else {
            await assert.rejects(engine.apply(contractConfig()), { code: 'KNIT_ERR_ENGINE' });
            assert.equal((await inspect(eng.ns, iface)).exists, false);
          }
        } finally {
          await engine.close();
        }
      });
    });

    describe('a tunnel between two namespaces', () => {
      let a: LabHost;
      let b: LabHost;
      const keyA = generateKeyPair();
      const keyB = generateKeyPair();
      const config = (self: typeof keyA, address: string, peer: typeof keyA, peerMesh: string, peerEndpoint: string): EngineConfig => ({
        privateKey: encodeKey(self.privateKey),
        listenPort: 51820,
        addresses: [address],
        // No keepalive on either side: only the pinging side initiates, so the two never race (LAB-NOTES).
        peers: [{ publicKey: encodeKey(peer.publicKey), allowedIps: [peerMesh], endpoint: peerEndpoint }],
      });

      /** Pings until one reply comes back; a bounded number of one-second tries. */
      async function pingWorks(host: LabHost, target: string, tries = 8): Promise<boolean> {
        for (let i = 0; i < tries; i++) {
          const r = await lab.run(host.ns, ['ping', '-c', '1', '-W', '1', target], { allowFailure: true });
          if (r.code === 0) return true;
        }
        return false;
      }

      it('carries ping between mesh addresses, with handshakes in the stats, and recovers after renumbering', async () => {
        a = await lab.addHost('ta');
        b = await lab.addHost('tb');
        // Both sides call their interface wg0: each namespace has its own /run/wireguard.
        const requestsA: string[] = [];
        const engineA = wireguardGo(a, 'wg0', [], requestsA);
        const procB = await startWireguardGo(b, 'wg0');
        const engineB = createKernelEngine({ iface: 'wg0', logger: silentLogger, exec: lab.exec(b.ns) });
        try {
          const cfgA = config(keyA, '100.96.0.1/24', keyB, '100.96.0.2/32', `${b.address}:51820`);
          await engineA.apply(cfgA);
          await engineB.apply(config(keyB, '100.96.0.2/24', keyA, '100.96.0.1/32', `${a.address}:51820`));
          const t0 = Date.now();
          assert.ok(await pingWorks(a, '100.96.0.2'), 'ping A → B through the tunnel');
          const sa = (await engineA.stats())[0]!;
          const sb = (await engineB.stats())[0]!;
          for (const s of [sa, sb]) {
            assert.ok(s.lastHandshakeMs > t0 - 2_000 && s.lastHandshakeMs < Date.now() + 2_000, `handshake time ${s.lastHandshakeMs}`);
            assert.ok(s.rxBytes > 0 && s.txBytes > 0);
          }
          assert.equal(sb.endpoint, `${a.address}:51820`);
          assert.ok(await pingWorks(b, '100.96.0.1', 2), 'and back, B → A');

          // A is renumbered. wireguard-go would keep its stale cached source address until a
          // handshake retry; re-asserting the (unchanged) endpoint clears it at once.
          const oldA = a.address;
          const newA = await lab.moveHost(a, undefined);
          assert.notEqual(newA, oldA);
          const before = requestsA.length;
          await engineA.apply(cfgA, { reassertEndpoints: true });
          assert.equal(requestsA.length, before + 1);
          assert.match(requestsA.at(-1)!, new RegExp(`\nendpoint=${b.address.replace(/\./g, '\\.')}:51820\n`));
          assert.ok(await pingWorks(a, '100.96.0.2', 4), 'ping works again after the renumbering');
          // B learnt A's new address from authenticated packets (WireGuard roaming).
          assert.equal((await engineB.stats())[0]!.endpoint, `${newA}:51820`);
        } finally {
          await engineA.close();
          await engineB.close();
          await procB.stop();
        }
      });
    });
  });
}
