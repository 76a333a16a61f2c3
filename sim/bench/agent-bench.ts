/**
 * Agent benchmark on loopback: N real agents (real UDP sockets, real control
 * WebSockets, memory engines) in one process against an in-process
 * coordinator. Measures, for every ordered pair, the time from the peer
 * appearing in the agent's map to the first authenticated pong on the chosen
 * path, and the idle CPU per peer once everything is connected.
 *
 * Bounded: N ≤ 32 agents, each phase has a deadline, everything stops itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger } from '../../shared/log.js';
import { createCoordinator } from '../../coordinator/index.js';
import { Agent } from '../../agent/agent.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import { createMemoryEngine, memoryHandshakes } from '../../agent/engine/memory.js';
import { openUdpSocket } from '../../agent/net/udp-socket.js';

/** One set for every memory engine here, so both sides of a path see its handshake (agent/engine/memory.ts). */
const MEMORY_HANDSHAKES = memoryHandshakes(Date.now);

export interface AgentBenchResult {
  agents: number;
  pairs: number;
  pairsConnected: number;
  appearToPongP50Ms: number;
  appearToPongP95Ms: number;
  appearToPongMaxMs: number;
  idleCpuPerPeerPct: number;
  idleWindowMs: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function benchAgents(n = 8, idleWindowMs = 5000): Promise<AgentBenchResult> {
  if (n < 2 || n > 32) throw new RangeError('agents must be 2..32');
  const dir = mkdtempSync(join(tmpdir(), 'knit-bench-'));
  const coord = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [{ host: '127.0.0.1', port: 0 }], allowLoopbackEndpoints: true }, { logger: silentLogger });
  const agents: Agent[] = [];
  try {
    const ports = await coord.start();
    await coord.ensureAdmin();
    const token = (await coord.registry.createToken({ reusable: true })).token;
    const appeared = new Map<string, number>(); // "a|b" → when a's map first held b
    const connected = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const kp = generateKeyPair();
      const nodeKey = encodeKey(kp.publicKey);
      const res = (await coord.registry.join({ token, nodeKey, hostname: `bench-${i}` })).response;
      const udp = await openUdpSocket({ port: 0, host: '127.0.0.1' });
      const agent: Agent = new Agent(
        {
          identity: { privateKey: kp.privateKey, publicKey: nodeKey },
          node: { coordinatorUrl: `http://127.0.0.1:${ports.httpPort}`, coordinatorKey: coord.registry.coordinatorKey, id: res.node.id, name: res.node.name, addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix },
          stunHost: '127.0.0.1', iface: `bench${i}`, keepaliveS: 25, portMode: 'memory',
        },
        {
          clock: systemClock, random: defaultRandomBytes, logger: silentLogger, udp, transport: wsTransport, engine: createMemoryEngine({ handshakes: MEMORY_HANDSHAKES }),
          localAddresses: () => ['127.0.0.1'],
          saveNetmap: (m) => {
            const now = performance.now();
            for (const p of m.peers.values()) {
              const k = `${nodeKey}|${p.nodeKey}`;
              if (!appeared.has(k) && p.discoKey) appeared.set(k, now);
            }
          },
        },
      );
      agent.onPathChange = (peer, _from, to) => {
        const k = `${nodeKey}|${peer}`;
        if (to !== 'none' && !connected.has(k)) connected.set(k, performance.now());
      };
      agents.push(agent);
      await agent.start();
    }
    const pairs = n * (n - 1);
    const deadline = Date.now() + 30_000;
    while (connected.size < pairs && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const times = [...connected].map(([k, t]) => t - (appeared.get(k) ?? t)).filter((x) => x >= 0).sort((a, b) => a - b);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, idleWindowMs));
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - t0;
    return {
      agents: n, pairs, pairsConnected: connected.size,
      appearToPongP50Ms: Math.round(percentile(times, 50)), appearToPongP95Ms: Math.round(percentile(times, 95)), appearToPongMaxMs: Math.round(times.at(-1) ?? NaN),
      idleCpuPerPeerPct: Number((((cpu.user + cpu.system) / 1000 / wall) * 100 / pairs).toFixed(4)),
      idleWindowMs,
    };
  } finally {
    for (const a of agents) await a.stop();
    await coord.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
