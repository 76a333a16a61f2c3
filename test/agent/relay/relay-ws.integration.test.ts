/**
 * The relay's WebSocket fallback end to end on loopback: the coordinator with
 * its relay (UDP + WebSocket) and two real agents in one process (proxy port
 * mode, memory engines, a UDP socket standing in for each WireGuard). Every
 * disco packet is dropped (no direct path, as between symmetric NATs) and every
 * relay control packet the agents send over UDP is dropped (UDP to the relay
 * blocked). The agents fall back to the relay's WebSocket and WireGuard-shaped
 * packets flow both ways through it; when one agent's UDP is let through again,
 * it moves back to UDP by itself. All traffic stays on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { systemClock } from '../../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../../shared/crypto/seal.js';
import { silentLogger } from '../../../shared/log.js';
import { parseEndpoint } from '../../../shared/net/addr.js';
import type { UdpSocket } from '../../../shared/udp.js';
import { isDiscoPacket } from '../../../shared/wire/disco.js';
import { isRelayPacket, isWireguardShaped } from '../../../shared/wire/relay.js';
import { createCoordinator } from '../../../coordinator/index.js';
import { Agent } from '../../../agent/agent.js';
import { wsTransport } from '../../../agent/control/ws-transport.js';
import { createMemoryEngine, memoryHandshakes, type MemoryEngine } from '../../../agent/engine/memory.js';
import { WireguardProxy } from '../../../agent/net/proxy.js';
import { connectRelayWs } from '../../../agent/net/relay-ws-bridge.js';
import { openUdpSocket } from '../../../agent/net/udp-socket.js';
import { until } from '../../helpers/until.js';

/** One set for every memory engine here, so both sides of a path see its handshake (agent/engine/memory.ts). */
const MEMORY_HANDSHAKES = memoryHandshakes(Date.now);

interface TestAgent {
  name: string;
  nodeKey: string;
  agent: Agent;
  engine: MemoryEngine;
  /** The "WireGuard": a loopback socket on the engine port; counts what arrives, by the sender's tag in byte 4. */
  wg: UdpSocket;
  received: number[];
  udpBlocked: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function packet(tag: number, size = 96): Uint8Array {
  const p = new Uint8Array(size);
  p[0] = 4; // WireGuard transport data
  p[4] = tag;
  return p;
}

test('relay over WebSocket when UDP to the relay is blocked: packets both ways, back to UDP when it opens', { timeout: 90_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'knit-relay-ws-'));
  const coord = await createCoordinator({
    dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, stun: [{ host: '127.0.0.1', port: 0 }],
    relay: { udp: { host: '127.0.0.1', port: 0 }, ws: { host: '127.0.0.1', port: 0 } }, allowLoopbackEndpoints: true,
  }, { logger: silentLogger });
  const agents: TestAgent[] = [];
  const closers: (() => void)[] = [];
  try {
    await coord.ensureAdmin();
    const ports = await coord.start();
    const token = (await coord.registry.createToken({ reusable: true })).token;
    const t0 = Date.now();
    for (const name of ['wsa', 'wsb']) {
      const kp = generateKeyPair();
      const nodeKey = encodeKey(kp.publicKey);
      const res = (await coord.registry.join({ token, nodeKey, hostname: name })).response;
      const real = await openUdpSocket({ port: 0, host: '127.0.0.1' });
      const wg = await openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false });
      closers.push(() => wg.close());
      const ta = { name, nodeKey, wg, received: [] as number[], udpBlocked: true } as TestAgent;
      // Symmetric NATs in effect (no disco packet arrives) and a firewall dropping UDP to the relay
      // (the relay's control packets never leave while `udpBlocked`).
      const udp: UdpSocket = {
        ...real,
        onMessage: (h) => real.onMessage((b, f) => { if (!isDiscoPacket(b) && !(ta.udpBlocked && isRelayPacket(b))) h(b, f); }),
        send: (b, to) => { if (!(ta.udpBlocked && isRelayPacket(b))) real.send(b, to); },
      };
      wg.onMessage((b) => { if (isWireguardShaped(b)) ta.received.push(b[4]!); });
      const proxy = new WireguardProxy({ publicSocket: udp, enginePort: wg.localPort(), openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }) });
      const engine = createMemoryEngine({ handshakes: MEMORY_HANDSHAKES });
      const agent: Agent = new Agent(
        {
          identity: { privateKey: kp.privateKey, publicKey: nodeKey },
          node: { coordinatorUrl: `http://127.0.0.1:${ports.httpPort}`, coordinatorKey: coord.registry.coordinatorKey, id: res.node.id, name: res.node.name, addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix },
          stunHost: '127.0.0.1', iface: `relayws-${name}`, keepaliveS: 25, portMode: 'proxy',
        },
        {
          clock: systemClock, random: defaultRandomBytes, logger: silentLogger, udp, transport: wsTransport, engine, proxy,
          localAddresses: () => ['127.0.0.1'],
          relayWs: { connect: (url, h) => connectRelayWs(url, h), openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }) },
        },
      );
      Object.assign(ta, { agent, engine });
      agents.push(ta);
      await agent.start();
    }
    const [a, b] = agents as [TestAgent, TestAgent];
    const peerOf = (x: TestAgent) => (x === a ? b : a);
    const peerStatus = (x: TestAgent) => x.agent.status().peers.find((p) => p.nodeKey === peerOf(x).nodeKey);
    const explain = () => JSON.stringify(agents.map((x) => ({ name: x.name, peer: peerStatus(x), counters: x.agent.status().counters, relay: coord.relay?.stats() })));

    await until('both agents relayed over the WebSocket', () => agents.every((x) => peerStatus(x)?.path === 'relay' && peerStatus(x)?.transport === 'ws'), { timeoutMs: 20_000, explain });
    const wsAfterMs = Date.now() - t0;
    t.diagnostic(`start → both peers on relay-ws: ${wsAfterMs} ms`);
    assert.match(peerStatus(a)!.endpoint!, /^ws:\/\/127\.0\.0\.1:\d+\/v1\/relay$/);
    assert.equal(a.agent.status().counters.relayWsOpen, 1);

    // WireGuard sends to what the engine was told: the proxy's stand-in for the peer.
    const engineEndpoint = (x: TestAgent) => parseEndpoint(x.engine.applied()?.peers.find((p) => p.publicKey === peerOf(x).nodeKey)?.endpoint);
    await until('engines given the stand-ins', () => engineEndpoint(a) && engineEndpoint(b), { timeoutMs: 5000, explain });
    // One packet each way first (the relay learns each side's socket from its claim or first frame).
    const rtt0 = performance.now();
    a.wg.send(packet(1), engineEndpoint(a)!);
    await until('a → b over the WebSocket', () => b.received.includes(1), { timeoutMs: 5000, intervalMs: 2, explain });
    b.wg.send(packet(2), engineEndpoint(b)!);
    await until('b → a over the WebSocket', () => a.received.includes(2), { timeoutMs: 5000, intervalMs: 2, explain });
    t.diagnostic(`one round trip over the WebSocket (incl. polling): ${(performance.now() - rtt0).toFixed(1)} ms`);
    assert.ok(b.agent.status().counters.relayWsFromRelay! >= 1);
    assert.ok(a.agent.status().counters.relayWsToRelay! >= 1);

    // A burst: 2,000 packets of 1,200 bytes from a to b, paced in batches of 25 (everything, relay
    // included, shares this one event loop and loopback's UDP buffers); count what arrives.
    const before = b.received.length;
    const burst = 2000;
    const tb = performance.now();
    for (let i = 0; i < burst; i += 25) {
      for (let j = 0; j < 25; j++) a.wg.send(packet(3, 1200), engineEndpoint(a)!);
      await sleep(2);
    }
    const sentSecs = (performance.now() - tb) / 1000;
    await until('the burst arrived (or stopped arriving)', async () => {
      const n = b.received.length;
      await sleep(200);
      return b.received.length === n || b.received.length - before >= burst;
    }, { timeoutMs: 20_000, explain });
    const delivered = b.received.length - before;
    const ca = a.agent.status().counters;
    const cb = b.agent.status().counters;
    t.diagnostic(`burst: ${delivered}/${burst} delivered, offered at ${Math.round(burst / sentSecs)} packets/s (${Math.round(burst * 1200 * 8 / sentSecs / 1e6)} Mbit/s); `
      + `a sent ${ca.relayWsToRelay} frames (drops: backpressure ${ca.relayWsDropBackpressure}, not ready ${ca.relayWsDropNotReady}), b got ${cb.relayWsFromRelay}; relay: ${JSON.stringify(coord.relay?.stats())}`);
    assert.ok(delivered >= burst * 0.5, `${delivered} of ${burst} delivered`);

    // a's UDP to the relay opens up: within the slow retry (10 s) a moves back to UDP and closes its WebSocket.
    a.udpBlocked = false;
    const tu = Date.now();
    await until('a back on UDP', () => peerStatus(a)?.transport === 'udp' && a.agent.status().counters.relayWsOpen === 0, { timeoutMs: 20_000, explain });
    t.diagnostic(`UDP open → a back on relay over UDP: ${Date.now() - tu} ms`);
    assert.match(peerStatus(a)!.endpoint!, /^127\.0\.0\.1:\d+$/);
    // b is still on the WebSocket; a's packets now go over UDP to the relay and on to b's socket.
    assert.equal(peerStatus(b)?.transport, 'ws');
    await until('engine re-pointed', () => engineEndpoint(a) !== undefined, { timeoutMs: 5000 });
    a.wg.send(packet(4), engineEndpoint(a)!);
    await until('a (UDP) → b (WebSocket)', () => b.received.includes(4), { timeoutMs: 5000, explain });
    b.wg.send(packet(5), engineEndpoint(b)!);
    await until('b (WebSocket) → a (UDP)', () => a.received.includes(5), { timeoutMs: 5000, explain });
  } finally {
    for (const x of agents) await x.agent.stop();
    for (const c of closers) c();
    await coord.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
