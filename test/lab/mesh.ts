/**
 * A Knit mesh in the lab: a real coordinator on the lab internet and real
 * `knit up` agents (wireguard-go) in namespaces, plus what every lab test asks
 * of them — status, a ping through the tunnel, waiting with an explanation
 * (every agent's log tail and status) when a wait times out. `startMesh` runs
 * the coordinator too; `labAgents` is the agents' side alone, for a test that
 * runs its own coordinators (replicas behind a load balancer).
 */
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/status.js';
import { until as untilHelper } from '../helpers/until.js';
import type { Lab, LabHost, LabProcess, LabRouter } from './netlab.js';

export const BIN = join(process.cwd(), 'bin', 'knit.js');

// A TCP sink and source for `transfer`, run with `node -e` inside the namespaces. The sink
// prints how many bytes arrived when the source closes, or when its deadline passes (a stalled
// transfer, as over a path-MTU blackhole); the source gives up at the same deadline.
const TCP_SINK = `const [ip,port,ms]=process.argv.slice(1);let got=0;const done=()=>{console.log('received '+got);process.exit(0)};
require('net').createServer(s=>{s.on('data',d=>{got+=d.length});s.on('end',done);s.on('error',done)}).listen(Number(port),ip,()=>console.log('listening'));
setTimeout(done,Number(ms));`;
const TCP_SOURCE = `const [ip,port,bytes,ms]=process.argv.slice(1);const s=require('net').connect(Number(port),ip,()=>{s.end(Buffer.alloc(Number(bytes),7))});
s.on('close',()=>process.exit(0));s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),Number(ms));`;
let transferCount = 0;

export interface LabAgent {
  host: LabHost;
  proc: LabProcess;
  state: string;
}

/** Agents in the lab that join one mesh with one token, and what tests ask of them. */
export interface LabAgents {
  /** A reusable join token. */
  readonly token: string;
  readonly agents: Map<string, LabAgent>;
  /** Starts (or restarts) `knit up` for `name` on `host`: wireguard-go, knit0, keepalive 10 s, plus `extra`. */
  start(name: string, host: LabHost, extra?: string[]): LabAgent;
  status(name: string): Promise<StatusDocument>;
  /** `from`'s status line for its peer `to`, or undefined. */
  peer(from: string, to: string): Promise<StatusDocument['peers'][number] | undefined>;
  /**
   * Waits until `from` reports `path` to `to`, and returns that status line. A first ping
   * proves only that some path works: the relay carries a pair before a direct or LAN path
   * is confirmed, so a test about the path waits for it.
   */
  untilPath(from: string, to: string, path: StatusDocument['peers'][number]['path'], timeoutMs?: number): Promise<StatusDocument['peers'][number]>;
  /** One ICMP echo from `from` to `to`'s mesh address, through the tunnel (`size`: ping's -s, payload bytes). */
  pings(from: string, to: string, size?: number): Promise<boolean>;
  /**
   * Sends `bytes` over TCP from `from` to `to`'s mesh address through the tunnel and returns
   * how many arrived (all of them, or fewer when the transfer stalled past `timeoutMs`).
   */
  transfer(from: string, to: string, bytes?: number, timeoutMs?: number): Promise<number>;
  /** Waits for `fn`; on timeout the error carries every agent's log tail and status. */
  until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number): Promise<T>;
}

export interface LabMesh extends LabAgents {
  readonly coordHost: LabHost;
  readonly coordProc: LabProcess;
}

/**
 * Starts the coordinator on `coordHost` and makes a token. By default it listens on the host's
 * address with STUN on 3478 and (the coordinator's default) 3479 and the relay on its default port; `defaults: true` runs it
 * as `npm start` would, with nothing but `--data` (the production configuration).
 */
export async function startMesh(lab: Lab, coordHost: LabHost, dir: string, options: { defaults?: boolean } = {}): Promise<LabMesh> {
  const flags = options.defaults ? [] : ['--listen', `${coordHost.address}:8080`, '--stun', `${coordHost.address}:3478`];
  const coordProc = lab.spawn(coordHost.ns, [process.execPath, BIN, 'coordinator', ...flags, '--data', join(dir, 'coord')]);
  // The first start prints the admin token: a failure's explanation must not carry it into the test log.
  const coordinatorLog = () => `--- coordinator\n${coordProc.output().slice(-1500).replace(/knit_[A-Za-z0-9_-]{16,}/g, 'knit_…')}`;
  await untilHelper('coordinator ready', () => coordProc.output().includes('coordinator ready'), { timeoutMs: 15_000, intervalMs: 250, explain: coordinatorLog });
  const token = (await lab.run(coordHost.ns, [process.execPath, BIN, 'token', 'create', '--reusable', '--data', join(dir, 'coord')])).stdout.trim();
  return { coordHost, coordProc, ...labAgents(lab, token, dir, { explain: coordinatorLog }) };
}

/**
 * The relay tests' lab: the coordinator (and its relay) on the lab internet, and agents x
 * (port mode auto) and y (proxy) behind two symmetric NATs, so no direct path exists.
 * `prepare` runs on the two routers before the hosts join (a firewall rule, say).
 */
export async function startSymmetricPair(lab: Lab, dir: string, prepare?: (routers: LabRouter[], coordHost: LabHost) => Promise<void>) {
  const coordHost = await lab.addHost('coord');
  const sym1 = await lab.addRouter('sym1', { nat: 'symmetric' });
  const sym2 = await lab.addRouter('sym2', { nat: 'symmetric' });
  await prepare?.([sym1, sym2], coordHost);
  const hosts: [string, LabHost][] = [['x', await lab.addHost('x', { behind: sym1 })], ['y', await lab.addHost('y', { behind: sym2 })]];
  // The relay runs in the coordinator by default (UDP and TCP 3480 on the listen address).
  const mesh = await startMesh(lab, coordHost, dir);
  for (const [name, host] of hosts) mesh.start(name, host, ['--port-mode', name === 'y' ? 'proxy' : 'auto']);
  return { coordHost, sym1, sym2, mesh };
}

/**
 * Agents that join with `token`, for a test that runs the coordinator side itself (replicas
 * behind a load balancer, say). `explain` adds that side's logs to every timed-out wait; it
 * must never return a secret (the admin token a first start prints, a database URL).
 */
export function labAgents(lab: Lab, token: string, dir: string, options: { explain?: () => string | Promise<string> } = {}): LabAgents {
  const agents = new Map<string, LabAgent>();

  async function status(name: string): Promise<StatusDocument> {
    const a = agents.get(name)!;
    const r = await lab.run(a.host.ns, [process.execPath, BIN, 'status', '--json', '--state', a.state]);
    return JSON.parse(r.stdout) as StatusDocument;
  }

  async function explain(): Promise<string> {
    const logs: string[] = options.explain ? [await options.explain()] : [];
    for (const [n, a] of agents) {
      const st = await status(n).catch((e: Error) => e.message);
      logs.push(`--- ${n}\n${a.proc.output().slice(-2500)}\n${typeof st === 'string' ? st : JSON.stringify({ self: st.self, peers: st.peers.map((p) => [p.name, p.path, p.endpoint, p.why]), counters: st.counters })}`);
    }
    return logs.join('\n');
  }

  const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000) =>
    untilHelper(what, fn, { timeoutMs, intervalMs: 250, explain });

  return {
    token, agents, status, until,
    start(name, host, extra = []) {
      const state = join(dir, name);
      const proc = lab.spawn(host.ns, [process.execPath, BIN, 'up', '--token', token, '--engine', 'wireguard-go', '--iface', 'knit0',
        '--state', state, '--hostname', name, '--keepalive', '10', ...extra]);
      const a = { host, proc, state };
      agents.set(name, a);
      return a;
    },
    async peer(from, to) {
      return (await status(from)).peers.find((p) => p.name === to);
    },
    untilPath(from, to, path, timeoutMs) {
      return until(`${from}'s path to ${to} is ${path}`, async () => {
        const p = (await status(from)).peers.find((x) => x.name === to);
        return p?.path === path && p;
      }, timeoutMs);
    },
    async pings(from, to, size) {
      const ip = (await status(to)).self.ips[0];
      if (!ip) return false;
      const sizeArgs = size === undefined ? [] : ['-s', String(size)];
      return (await lab.run(agents.get(from)!.host.ns, ['ping', '-c', '1', '-W', '1', ...sizeArgs, ip], { allowFailure: true })).code === 0;
    },
    async transfer(from, to, bytes = 1 << 20, timeoutMs = 20_000) {
      const ip = (await status(to)).self.ips[0];
      if (!ip) return 0;
      const port = 5300 + (transferCount++ % 500);
      const sink = lab.spawn(agents.get(to)!.host.ns, [process.execPath, '-e', TCP_SINK, ip, String(port), String(timeoutMs)]);
      try {
        await untilHelper(`${to}'s TCP sink listens`, () => sink.output().includes('listening'), { timeoutMs: 10_000, intervalMs: 50 });
        await lab.run(agents.get(from)!.host.ns, [process.execPath, '-e', TCP_SOURCE, ip, String(port), String(bytes), String(timeoutMs)], { allowFailure: true, timeoutMs: timeoutMs + 5_000 });
        const got = await untilHelper(`${to}'s TCP sink reports`, () => /received (\d+)/.exec(sink.output())?.[1], { timeoutMs: timeoutMs + 5_000, intervalMs: 100 });
        return Number(got);
      } finally {
        await sink.stop();
      }
    },
  };
}
