/**
 * LAN discovery benchmark: how soon two agents on one LAN find and use each
 * other by mDNS alone. Two real agents (real UDP sockets, real multicast-dns
 * sockets on loopback with a private mDNS port, memory engines) start at the
 * same moment from cached peer maps whose endpoints are stale and whose
 * coordinator is unreachable; the clock runs from the later start to both
 * holding a `lan` path confirmed by an authenticated pong. Rounds alternate
 * between a peer whose disco key the cache holds (but stale: it restarted)
 * and one whose key it never learned.
 *
 * Bounded: at most 50 rounds, each with a 10 s deadline.
 */
import { createServer } from 'node:net';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger } from '../../shared/log.js';
import type { PeerInfo } from '../../shared/wire/control.js';
import { Agent } from '../../agent/agent.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import { createMemoryEngine, memoryHandshakes } from '../../agent/engine/memory.js';
import { LanDiscovery } from '../../agent/lan/discovery.js';
import { createMdnsTransport } from '../../agent/lan/mdns-transport.js';
import { openUdpSocket } from '../../agent/net/udp-socket.js';

/** One set for every memory engine here, so both sides of a path see its handshake (agent/engine/memory.ts). */
const MEMORY_HANDSHAKES = memoryHandshakes(Date.now);

export interface LanBenchResult {
  rounds: number;
  roundsConnected: number;
  foundAndUsedP50Ms: number;
  foundAndUsedP95Ms: number;
  foundAndUsedMaxMs: number;
}

const ROUND_DEADLINE_MS = 10_000;

/** A loopback TCP port nobody listens on: the coordinator is "down" for the whole bench. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function benchLan(rounds = 10, mdnsPort = 35353 + (process.pid % 1000)): Promise<LanBenchResult> {
  if (rounds < 1 || rounds > 50) throw new RangeError('rounds must be 1..50');
  const coordinatorUrl = `http://127.0.0.1:${await deadPort()}`;
  const coordinatorKey = encodeKey(generateKeyPair().publicKey);
  const times: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const kps = [generateKeyPair(), generateKeyPair()];
    const keys = kps.map((k) => encodeKey(k.publicKey));
    const peer = (i: number): PeerInfo => ({
      id: i + 1, name: `lan-${i}`, nodeKey: keys[i]!,
      discoKey: round % 2 === 0 ? encodeKey(generateKeyPair().publicKey) : '', // stale, or never learned
      addresses: [`100.96.0.${i + 2}/32`], endpoints: ['127.0.0.1:9'], natType: 'unknown', online: true, lastSeen: 0, tags: [],
    });
    const connected = new Set<number>();
    const agents: Agent[] = [];
    try {
      const sockets = await Promise.all([0, 1].map(() => openUdpSocket({ port: 0, host: '127.0.0.1' })));
      for (const i of [0, 1]) {
        const lan = new LanDiscovery({
          clock: systemClock, random: defaultRandomBytes, logger: silentLogger,
          transport: createMdnsTransport({ logger: silentLogger, port: mdnsPort }), interfaces: () => [{ name: 'lo', address: '127.0.0.1', prefixLen: 8 }],
        });
        const agent = new Agent(
          {
            identity: { privateKey: kps[i]!.privateKey, publicKey: keys[i]! },
            node: { coordinatorUrl, coordinatorKey, id: i + 1, name: `lan-${i}`, addresses: [`100.96.0.${i + 2}/32`], ipv4Prefix: '100.96.0.0/16', ipv6Prefix: 'fd00::/48' },
            stunHost: '127.0.0.1', iface: `lan${i}`, keepaliveS: 25, portMode: 'memory',
            initialNetmap: { version: 1, selfId: i + 1, peers: new Map([[2 - i, peer(1 - i)]]) },
          },
          { clock: systemClock, random: defaultRandomBytes, logger: silentLogger, udp: sockets[i]!, transport: wsTransport, engine: createMemoryEngine({ handshakes: MEMORY_HANDSHAKES }), localAddresses: () => ['127.0.0.1'], lan },
        );
        agent.onPathChange = (_peer, _from, to) => { if (to === 'lan') connected.add(i); };
        agents.push(agent);
      }
      await Promise.all(agents.map((a) => a.start()));
      const t0 = performance.now();
      const deadline = Date.now() + ROUND_DEADLINE_MS;
      while (connected.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      if (connected.size === 2) times.push(performance.now() - t0);
    } finally {
      for (const a of agents) await a.stop();
    }
  }
  const sorted = times.sort((a, b) => a - b);
  const pct = (p: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN);
  return { rounds, roundsConnected: times.length, foundAndUsedP50Ms: pct(50), foundAndUsedP95Ms: pct(95), foundAndUsedMaxMs: Math.round(sorted.at(-1) ?? NaN) };
}
