/**
 * Relay benchmarks (docs/relay.md), all on loopback or in the simulator:
 *
 *   firstPacket  real agents (memory engines, real UDP, real control WebSockets) and the
 *                coordinator's relay in one process; direct paths are impossible (every
 *                disco packet is dropped on arrival, as between two symmetric NATs). Time
 *                from a peer appearing in an agent's map to the first WireGuard-shaped
 *                packet, sent the moment the agent's path says `relay`, arriving at the peer.
 *   upgrade      simulator: two agents behind symmetric NATs are relayed; one host moves
 *                behind a full-cone NAT (a direct path becomes possible). Virtual time
 *                until both sides say `direct`.
 *   forwarding   the relay shell alone: two bound loopback "nodes", one blasts packets
 *                through its relay port; packets/s delivered to the other.
 *
 * Bounded: every phase has a deadline and a packet budget; everything stops itself.
 */
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger } from '../../shared/log.js';
import { parseEndpoint } from '../../shared/net/addr.js';
import { isWireguardShaped } from '../../shared/wire/relay.js';
import { isDiscoPacket } from '../../shared/wire/disco.js';
import type { UdpSocket } from '../../shared/udp.js';
import { createCoordinator } from '../../coordinator/index.js';
import { Agent } from '../../agent/agent.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import { createMemoryEngine, memoryHandshakes } from '../../agent/engine/memory.js';
import { openUdpSocket } from '../../agent/net/udp-socket.js';
import { RelayClient } from '../../agent/relay/core.js';
import { createRelayServer } from '../../relay/index.js';
import { World } from '../world.js';

/** One set for every memory engine here, so both sides of a path see its handshake (agent/engine/memory.ts). */
const MEMORY_HANDSHAKES = memoryHandshakes(Date.now);

export interface RelayBenchResult {
  firstPacket: { pairs: number; delivered: number; p50Ms: number; maxMs: number };
  upgrade: { ok: boolean; relayedAfterMs?: number; upgradeMs?: number };
  forwarding: { packetBytes: number; sent: number; delivered: number; packetsPerSec: number; mbitPerSec: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function wgPacket(size: number): Uint8Array {
  const p = new Uint8Array(size);
  p[0] = 4; // WireGuard transport data
  return p;
}

/** First relayed packet after a peer appears, with real agents on loopback. */
export async function benchFirstRelayedPacket(n = 4): Promise<RelayBenchResult['firstPacket']> {
  if (n < 2 || n > 16) throw new RangeError('agents must be 2..16');
  const dir = mkdtempSync(join(tmpdir(), 'knit-relay-bench-'));
  const coord = await createCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [{ host: '127.0.0.1', port: 0 }], relay: { udp: { host: '127.0.0.1', port: 0 } }, allowLoopbackEndpoints: true }, { logger: silentLogger });
  const agents: Agent[] = [];
  let stopped = false;
  try {
    const ports = await coord.start();
    await coord.ensureAdmin();
    const token = (await coord.registry.createToken({ reusable: true })).token;
    const appeared = new Map<string, number>();
    const arrived = new Map<string, number>();
    const keys: string[] = [];
    for (let i = 0; i < n; i++) {
      const kp = generateKeyPair();
      const nodeKey = encodeKey(kp.publicKey);
      keys.push(nodeKey);
      const res = (await coord.registry.join({ token, nodeKey, hostname: `relay-bench-${i}` })).response;
      const real = await openUdpSocket({ port: 0, host: '127.0.0.1' });
      // Symmetric NATs on every side, in effect: no disco packet ever arrives, so only the relay connects.
      const udp: UdpSocket = { ...real, onMessage: (h) => real.onMessage((b, f) => { if (process.env.KNIT_BENCH_DEBUG && b[4] === 0xf0 && b[5] === 0xb0) console.error(i, 'in', f.port, b.length, Math.round(performance.now())); if (!isDiscoPacket(b)) h(b, f); }),
        send: (b, to) => { if (process.env.KNIT_BENCH_DEBUG && b[4] === 0xf0 && b[5] === 0xb0) console.error(i, 'out', to.port, b.length, Math.round(performance.now())); real.send(b, to); } };
      udp.onMessage((bytes, from) => {
        // A WireGuard-shaped packet from the relay host: its first 32 bytes after the header carry the sender's index.
        if (!isWireguardShaped(bytes) || from.address !== '127.0.0.1') return;
        const sender = keys[bytes[4]!];
        const k = `${sender}|${nodeKey}`;
        if (sender && !arrived.has(k)) arrived.set(k, performance.now());
      });
      const agent: Agent = new Agent(
        {
          identity: { privateKey: kp.privateKey, publicKey: nodeKey },
          node: { coordinatorUrl: `http://127.0.0.1:${ports.httpPort}`, coordinatorKey: coord.registry.coordinatorKey, id: res.node.id, name: res.node.name, addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix },
          stunHost: '127.0.0.1', iface: `rbench${i}`, keepaliveS: 25, portMode: 'memory',
        },
        {
          clock: systemClock, random: defaultRandomBytes, logger: silentLogger, udp, transport: wsTransport, engine: createMemoryEngine({ handshakes: MEMORY_HANDSHAKES }),
          localAddresses: () => ['127.0.0.1'],
          saveNetmap: (m) => {
            const now = performance.now();
            for (const p of m.peers.values()) if (p.discoKey && !appeared.has(`${p.nodeKey}|${nodeKey}`)) appeared.set(`${p.nodeKey}|${nodeKey}`, now);
          },
        },
      );
      const index = i;
      agent.onPathChange = (peer, _from, to) => {
        if (to !== 'relay') return;
        // What WireGuard would do the moment the engine is told: send to the relay port.
        const ep = parseEndpoint(agent.status().peers.find((p) => p.nodeKey === peer)?.endpoint);
        const pkt = wgPacket(64);
        pkt[4] = index;
        if (process.env.KNIT_BENCH_DEBUG) console.error(`relay ${index}→${keys.indexOf(peer)} ${Math.round(performance.now() - (appeared.get(`${peer}|${nodeKey}`) ?? 0))} ms after appearing`);
        // Resent every 10 ms until the peer's side is bound too (the first one that arrives counts).
        if (ep) for (let r = 0; r < 50; r++) setTimeout(() => { if (!stopped) udp.send(pkt, ep); }, r * 10);
      };
      agents.push(agent);
      await agent.start();
    }
    const pairs = n * (n - 1);
    const deadline = Date.now() + 20_000;
    while (arrived.size < pairs && Date.now() < deadline) await sleep(20);
    const times = [...arrived].map(([k, t]) => t - (appeared.get(k) ?? t)).sort((a, b) => a - b);
    return { pairs, delivered: arrived.size, p50Ms: Math.round(times[Math.floor(times.length / 2)] ?? NaN), maxMs: Math.round(times.at(-1) ?? NaN) };
  } finally {
    stopped = true;
    for (const a of agents) await a.stop();
    await coord.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Relay → direct upgrade in the simulator, after a direct path becomes possible. */
export async function benchUpgrade(seed = 1): Promise<RelayBenchResult['upgrade']> {
  const w = new World({ seed });
  try {
    const a = await w.addAgent('a', w.addHost('a', w.addNat('nata', 'hard')));
    const hb = w.addHost('b', w.addNat('natb', 'hard'));
    const b = await w.addAgent('b', hb);
    const both = (kind: string) => w.path(a, b) === kind && w.path(b, a) === kind;
    const t0 = w.clock.now();
    await w.clock.runUntil(t0 + 10_000, () => both('relay'));
    if (!both('relay')) return { ok: false };
    const relayedAfterMs = w.clock.now() - t0;
    await w.clock.run(5000);
    // b's network changes to a full-cone NAT: from now on a direct path is possible.
    w.moveHost(hb, w.addNat('natc', 'easy-ei'));
    const t1 = w.clock.now();
    await w.clock.runUntil(t1 + 30_000, () => both('direct'));
    return { ok: both('direct'), relayedAfterMs, upgradeMs: both('direct') ? w.clock.now() - t1 : undefined };
  } finally {
    await w.stop();
  }
}

/** Forwarding rate of the relay shell on loopback, packets of `size` bytes for about `windowMs`. */
export async function benchForwarding(size = 1200, windowMs = 2000, maxPackets = 2_000_000): Promise<RelayBenchResult['forwarding']> {
  const relayKeys = generateKeyPair();
  const nodes = [generateKeyPair(), generateKeyPair()];
  const members = new Set(nodes.map((k) => encodeKey(k.publicKey)));
  const relay = createRelayServer({
    host: '127.0.0.1', port: 0, privateKey: relayKeys.privateKey, publicKey: relayKeys.publicKey, isMember: (k) => members.has(k),
    packetsPerSec: 1e9, bytesPerSec: 1e12, logger: silentLogger,
  });
  const socks = nodes.map(() => createSocket({ type: 'udp4' }));
  try {
    const { port } = await relay.start();
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))));
    // Bind both "nodes" with the agent's own relay client core, driven by hand.
    const eps: string[] = [];
    await Promise.all(nodes.map(async (kp, i) => {
      const c = new RelayClient({ nodePublicKey: kp.publicKey, nodePrivateKey: kp.privateKey, random: defaultRandomBytes });
      const s = socks[i]!;
      const run = (acts: ReturnType<RelayClient['handle']>) => {
        for (const a of acts) {
          if (a.type === 'send-udp') s.send(a.bytes, a.to.port, a.to.address);
          else if (a.type === 'relay-endpoint' && a.endpoint) eps[i] = a.endpoint;
        }
      };
      s.on('message', (msg, rinfo) => run(c.handle({ type: 'udp', from: { address: rinfo.address, port: rinfo.port }, bytes: new Uint8Array(msg) }, performance.now())));
      run(c.handle({ type: 'relays', relays: [{ key: encodeKey(relayKeys.publicKey), endpoint: { address: '127.0.0.1', port } }] }, performance.now()));
      run(c.handle({ type: 'need', nodeKey: encodeKey(nodes[1 - i]!.publicKey), needed: true }, performance.now()));
      const end = Date.now() + 5000;
      while (!eps[i] && Date.now() < end) {
        await sleep(10);
        run(c.handle({ type: 'tick' }, performance.now()));
      }
      s.removeAllListeners('message');
    }));
    if (!eps[0] || !eps[1]) throw new Error('the relay did not bind both nodes');
    let delivered = 0;
    socks[1]!.on('message', () => { delivered++; });
    const to = parseEndpoint(eps[0])!;
    const pkt = Buffer.from(wgPacket(size));
    let sent = 0;
    const t0 = performance.now();
    // Closed loop: at most IN_FLIGHT packets unaccounted for, so what is measured is what the relay
    // sustains, not how fast a socket buffer overflows. Sender, relay and receiver share this one
    // process (and event loop), so the figure is a lower bound for a relay process of its own.
    const IN_FLIGHT = 256;
    while (performance.now() - t0 < windowMs && sent < maxPackets) {
      while (sent - delivered < IN_FLIGHT) {
        socks[0]!.send(pkt, to.port, to.address);
        sent++;
      }
      await new Promise((r) => setImmediate(r));
    }
    const seconds = (performance.now() - t0) / 1000;
    await sleep(100);
    const pps = delivered / seconds;
    return { packetBytes: size, sent, delivered, packetsPerSec: Math.round(pps), mbitPerSec: Number(((pps * size * 8) / 1e6).toFixed(1)) };
  } finally {
    for (const s of socks) s.close();
    await relay.stop();
  }
}

export async function benchRelay(): Promise<RelayBenchResult> {
  return { firstPacket: await benchFirstRelayedPacket(4), upgrade: await benchUpgrade(1), forwarding: await benchForwarding() };
}
