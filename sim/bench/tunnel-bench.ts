/**
 * Tunnel throughput, measured in one run so the ratios mean something on a
 * shared machine: TCP through WireGuard between two lab namespaces for
 *   bare   wireguard-go configured by hand with `wg`,
 *   shared Knit agents in shared-port mode (the default),
 *   proxy  Knit agents in proxy mode (WireGuard packets relayed by the agent).
 * Also the time from both agents started to the first ping reply through the tunnel.
 *
 * Needs root, network namespaces and wireguard-go (the lab, test/lab/netlab.ts);
 * otherwise reports `skipped` with the reason. Every phase is bounded in time.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, encodeKey } from '../../shared/crypto/keys.js';

export interface TunnelBenchResult {
  skipped?: string;
  seconds: number;
  bareMbps?: number;
  sharedMbps?: number;
  proxyMbps?: number;
  sharedVsBare?: number;
  proxyVsBare?: number;
  firstPingMs?: number;
}

const TCP_PORT = 5201;
// A TCP sink and a TCP source, run with `node -e` inside the namespaces.
const SINK = `const n=require('net');let b=0,t0=0;n.createServer(s=>{s.on('data',d=>{if(!t0)t0=Date.now();b+=d.length});s.on('end',()=>{console.log(JSON.stringify({bytes:b,ms:Date.now()-t0}));process.exit(0)})}).listen(${TCP_PORT},process.argv[1]);`;
const SOURCE = `const n=require('net');const buf=Buffer.alloc(65536,7);const s=n.connect(${TCP_PORT},process.argv[1],()=>{const end=Date.now()+Number(process.argv[2])*1000;const w=()=>{while(Date.now()<end){if(!s.write(buf))return s.once('drain',w)}s.end()};w()});s.on('error',e=>{console.error(e.message);process.exit(1)});`;

export async function benchTunnel(seconds = 5): Promise<TunnelBenchResult> {
  let netlab: typeof import('../../test/lab/netlab.js');
  try {
    netlab = await import('../../test/lab/netlab.js');
  } catch {
    return { skipped: 'the lab harness is not available (run from a checkout)', seconds };
  }
  const check = netlab.canRunLab();
  if (!check.ok) return { skipped: check.reason, seconds };
  const bin = join(process.cwd(), 'bin', 'knit.js');
  const dir = mkdtempSync(join(tmpdir(), 'knit-tbench-'));
  const lab = await netlab.createLab();
  const result: TunnelBenchResult = { seconds };
  try {
    const h1 = await lab.addHost('h1');
    const h2 = await lab.addHost('h2');
    const coord = await lab.addHost('coord');

    const throughput = async (dst: string): Promise<number> => {
      const sink = lab.spawn(h2.ns, [process.execPath, '-e', SINK, dst]);
      await new Promise((r) => setTimeout(r, 300));
      await lab.run(h1.ns, [process.execPath, '-e', SOURCE, dst, String(seconds)], { timeoutMs: (seconds + 20) * 1000 });
      const end = Date.now() + 10_000;
      while (!/"bytes"/.test(sink.output()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      const m = /\{"bytes":(\d+),"ms":(\d+)\}/.exec(sink.output());
      await sink.stop();
      if (!m) throw new Error(`no throughput result: ${sink.output().slice(-300)}`);
      return Math.round((Number(m[1]) * 8) / (Number(m[2]) / 1000) / 1e6);
    };
    const pingOk = async (ns: string, ip: string) => (await lab.run(ns, ['ping', '-c', '1', '-W', '1', ip], { allowFailure: true })).code === 0;

    // bare wireguard-go, configured by hand with wg
    const k1 = generateKeyPair();
    const k2 = generateKeyPair();
    for (const [h, own, other, addr, peerAddr, peerIp] of [
      [h1, k1, k2, '10.99.0.1', '10.99.0.2', h2.address], [h2, k2, k1, '10.99.0.2', '10.99.0.1', h1.address],
    ] as const) {
      const wg = lab.spawn(h.ns, ['wireguard-go', 'wgb'], { WG_PROCESS_FOREGROUND: '1' });
      const end = Date.now() + 5000;
      while ((await lab.run(h.ns, ['wg', 'show', 'wgb'], { allowFailure: true })).code !== 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      void wg;
      const keyFile = join(dir, `${h.name}.key`);
      writeFileSync(keyFile, encodeKey(own.privateKey) + '\n', { mode: 0o600 });
      await lab.run(h.ns, ['wg', 'set', 'wgb', 'private-key', keyFile, 'listen-port', '51820', 'peer', encodeKey(other.publicKey), 'allowed-ips', `${peerAddr}/32`, 'endpoint', `${peerIp}:51820`]);
      await lab.run(h.ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'wgb']);
      await lab.run(h.ns, ['ip', 'link', 'set', 'wgb', 'mtu', '1420', 'up']);
    }
    const bareEnd = Date.now() + 15_000;
    while (!(await pingOk(h1.ns, '10.99.0.2')) && Date.now() < bareEnd);
    result.bareMbps = await throughput('10.99.0.2');
    await lab.run(h1.ns, ['ip', 'link', 'del', 'wgb'], { allowFailure: true });
    await lab.run(h2.ns, ['ip', 'link', 'del', 'wgb'], { allowFailure: true });

    // Knit: a coordinator on the lab internet, two agents, shared then proxy mode
    const c = lab.spawn(coord.ns, [process.execPath, bin, 'coordinator', '--listen', `${coord.address}:8080`, '--stun', `${coord.address}:3478`, '--data', join(dir, 'coord')]);
    const cEnd = Date.now() + 15_000;
    while (!c.output().includes('coordinator ready') && Date.now() < cEnd) await new Promise((r) => setTimeout(r, 100));
    const token = (await lab.run(coord.ns, [process.execPath, bin, 'token', 'create', '--reusable', '--data', join(dir, 'coord')])).stdout.trim();
    for (const mode of ['shared', 'proxy'] as const) {
      const started = Date.now();
      const agents = [h1, h2].map((h) => lab.spawn(h.ns, [process.execPath, bin, 'up', '--token', token, '--engine', 'wireguard-go', '--iface', `k${mode[0]}`,
        '--state', join(dir, `${mode}-${h.name}`), '--hostname', `${h.name}-${mode}`, '--port-mode', mode, '--port', mode === 'shared' ? '41641' : '41651']));
      const ipOf = async (h: typeof h2) => {
        const end = Date.now() + 20_000;
        for (;;) {
          const r = await lab.run(h.ns, [process.execPath, bin, 'status', '--json', '--state', join(dir, `${mode}-${h.name}`)], { allowFailure: true });
          if (r.code === 0) return (JSON.parse(r.stdout) as { self: { ips: string[] } }).self.ips[0]!;
          if (Date.now() > end) throw new Error(`agent in ${h.name} did not come up`);
          await new Promise((res) => setTimeout(res, 100));
        }
      };
      const ip2 = await ipOf(h2);
      const pEnd = Date.now() + 60_000;
      while (!(await pingOk(h1.ns, ip2))) if (Date.now() > pEnd) throw new Error(`${mode}: no ping through the tunnel`);
      if (mode === 'shared') result.firstPingMs = Date.now() - started;
      const mbps = await throughput(ip2);
      if (mode === 'shared') result.sharedMbps = mbps;
      else result.proxyMbps = mbps;
      for (const a of agents) await a.stop();
    }
    result.sharedVsBare = Number((result.sharedMbps! / result.bareMbps).toFixed(3));
    result.proxyVsBare = Number((result.proxyMbps! / result.bareMbps).toFixed(3));
    return result;
  } finally {
    await lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
}
