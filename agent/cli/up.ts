/**
 * `knit up`: join (first time) or resume, then run the agent in the
 * foreground until SIGINT/SIGTERM or `knit down`. A service manager
 * supervises it; there is no daemon mode. Progress lines for people go to
 * stdout; structured logs go to stderr.
 */
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { systemClock } from '../../shared/clock.js';
import { encodeKey } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { KnitError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/log.js';
import type { UdpSocket } from '../../shared/udp.js';
import { Agent } from '../agent.js';
import { startApiServer } from '../api/server.js';
import { joinMesh, parseJoinToken, sanitizeHostname } from '../control/join.js';
import { wsTransport } from '../control/ws-transport.js';
import type { Engine } from '../engine/types.js';
import { WireguardProxy } from '../net/proxy.js';
import { connectRelayWs } from '../net/relay-ws-bridge.js';
import { installSharedPort } from '../net/shared-port.js';
import { startHostFirewall, type FirewallMode } from '../firewall/host-firewall.js';
import { SharedModeWaker } from '../net/waker.js';
import { openUdpSocket } from '../net/udp-socket.js';
import { openEphemeralUdp } from '../net/birthday-sockets.js';
import { LanDiscovery } from '../lan/discovery.js';
import { createMdnsTransport, readLanInterfaces } from '../lan/mdns-transport.js';
import { createPortMapService, type PortMapProtocol } from '../portmap/index.js';
import { createInterfaceMonitor } from '../roam/interfaces.js';
import {
  loadCachedNetmap, loadNodeRecord, loadOrCreateIdentity, saveCachedNetmap, saveNodeRecord, socketPath, type NodeIdentity, type NodeRecord,
} from '../state.js';

export type EngineChoice = 'memory' | 'wireguard-go' | 'kernel';

export type PortMode = 'auto' | 'shared' | 'proxy';

export interface UpOptions {
  token?: string;
  portMode: PortMode;
  engine: EngineChoice;
  iface: string;
  port: number;
  stateDir: string;
  interfaces?: string[];
  /** mDNS discovery on (default) or off; limited to lanInterfaces, else to `interfaces`, else every LAN. */
  lanDiscovery: boolean;
  lanInterfaces?: string[];
  /** Gateway port mapping (PCP → NAT-PMP → UPnP-IGD); on unless false (--no-port-mapping). */
  portMapping?: boolean;
  /** The port-mapping protocols to try, in order (--port-mapping-protocols); default all three. */
  portMappingProtocols?: PortMapProtocol[];
  keepaliveS: number;
  hostname?: string;
  eagerPeers?: number;
  /** on (default): scoped accept rules in the host's input chains that block the tunnel; off: only report (docs/firewall.md). */
  firewall?: FirewallMode;
}

async function createEngine(choice: EngineChoice, iface: string, logger: Logger): Promise<Engine> {
  if (choice === 'memory') {
    const memory = await import('../engine/memory.js');
    return memory.createMemoryEngine({ logger, handshakes: memory.memoryHandshakes(Date.now) });
  }
  if (choice === 'wireguard-go') {
    const m = await import('../engine/wireguard-go.js');
    return m.createWireguardGoEngine({ iface, logger });
  }
  const m = await import('../engine/kernel.js');
  return m.createKernelEngine({ iface, logger });
}

async function ensureJoined(o: UpOptions, identity: { privateKey: Uint8Array; publicKey: string }, say: (s: string) => void): Promise<NodeRecord> {
  const existing = loadNodeRecord(o.stateDir);
  if (!o.token) {
    if (!existing) throw new KnitError('KNIT_ERR_USAGE', 'this machine has not joined a mesh yet: run knit up --token <join token>');
    return existing;
  }
  const token = parseJoinToken(o.token);
  if (existing && existing.coordinatorKey === token.coordinatorKey) {
    say(`already joined as ${existing.name} (${existing.addresses[0]?.split('/')[0]}); reusing identity`);
    return existing;
  }
  say(`joining the mesh at ${token.url} …`);
  const res = await joinMesh(token, o.token, { ...identity, discoKey: identity.publicKey, hostname: sanitizeHostname(o.hostname ?? hostname()) });
  const rec: NodeRecord = {
    coordinatorUrl: token.url, coordinatorKey: token.coordinatorKey, id: res.node.id, name: res.node.name,
    addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix,
  };
  saveNodeRecord(o.stateDir, rec);
  say(`joined as ${rec.name}, mesh address ${rec.addresses.map((a) => a.split('/')[0]).join(', ')}`);
  return rec;
}

/**
 * The tunnel port and how the agent shares it with the engine (docs/engines.md):
 * memory — the agent's socket is the tunnel port; shared — the engine owns it and
 * kernel rules steer disco/STUN to the agent; proxy — the agent owns it and relays
 * WireGuard packets to the engine on loopback. `auto` prefers shared and falls
 * back to proxy when nftables can't be used (not root, no nft).
 *
 * `hold` keeps the port the engine is to listen on (the tunnel port, or the proxy's
 * loopback engine port) bound until the engine takes it (`handOverEnginePort`): the
 * engine binds only at its first apply, and meanwhile our own ephemeral sockets (the
 * agent's, the waker's, stand-ins) could be given that very port by the kernel, and
 * wireguard-go would answer the first apply with EADDRINUSE.
 */
async function openTunnelPorts(o: UpOptions, logger: Logger) {
  const bindPublic = async (port: number) => {
    try {
      return await openUdpSocket({ port });
    } catch (err) {
      throw new KnitError('KNIT_ERR_USAGE', `cannot use UDP port ${port}: ${(err as Error).message}`);
    }
  };
  if (o.engine === 'memory') return { mode: 'memory' as const, udp: await bindPublic(o.port) };
  if (o.portMode !== 'proxy') {
    const hold = await bindPublic(o.port);
    const tunnelPort = hold.localPort();
    const udp = await bindPublic(0).catch((err: unknown) => {
      hold.close();
      throw err;
    });
    try {
      const shared = await installSharedPort(o.iface, tunnelPort, udp.localPort());
      const waker = new SharedModeWaker(await openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }), tunnelPort, (bytes, to) => udp.send(bytes, to));
      return { mode: 'shared' as const, udp, shared, tunnelPort, waker, hold, enginePort: tunnelPort };
    } catch (err) {
      udp.close();
      hold.close();
      if (o.portMode === 'shared') throw err;
      logger.warn('shared port mode unavailable; using proxy mode', { err: (err as Error).message });
    }
  }
  const udp = await bindPublic(o.port);
  const hold = await openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false });
  const proxy = new WireguardProxy({
    publicSocket: udp,
    enginePort: hold.localPort(),
    openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }),
  });
  return { mode: 'proxy' as const, udp, proxy, hold, enginePort: hold.localPort() };
}

/**
 * Lets the engine bind its port now, before the LAN discovery, port mapping and relay
 * open sockets of their own: the hold is released and at once an apply that sets only
 * the key and the listen port makes the engine bind it. The agent's first apply adds
 * the rest.
 */
async function handOverEnginePort(engine: Engine, identity: NodeIdentity, hold: UdpSocket, enginePort: number): Promise<void> {
  hold.close();
  await engine.apply({ privateKey: encodeKey(identity.privateKey), listenPort: enginePort, addresses: [], peers: [] });
}

async function resolveHost(url: string): Promise<string> {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return host;
  try {
    return (await lookup(host)).address;
  } catch (err) {
    throw new KnitError('KNIT_ERR_UNREACHABLE', `cannot resolve the coordinator host ${host}`, { cause: err });
  }
}

export async function runUp(o: UpOptions): Promise<number> {
  const logger = createLogger({ base: { component: 'agent' } });
  const say = (s: string) => console.log(`knit: ${s}`);
  const identity = loadOrCreateIdentity(o.stateDir);
  const node = await ensureJoined(o, identity, say);
  const stunHost = await resolveHost(node.coordinatorUrl);
  const engine = await createEngine(o.engine, o.iface, logger);
  const ports = await openTunnelPorts(o, logger).catch(async (err) => {
    await engine.close();
    throw err;
  });
  const { udp, proxy, shared, tunnelPort, waker } = ports;
  if (ports.mode !== 'memory') {
    await handOverEnginePort(engine, identity, ports.hold, ports.enginePort).catch(async (err) => {
      udp.close();
      waker?.close();
      await engine.close();
      await shared?.close();
      throw err;
    });
  }
  // Before the agent punches: a host firewall that drops input would drop the peers' answers.
  const firewall = o.engine === 'memory'
    ? undefined
    : await startHostFirewall({ iface: o.iface, tunnelPort: tunnelPort ?? udp.localPort(), mode: o.firewall ?? 'on' }, { clock: systemClock, logger });
  const monitor = createInterfaceMonitor({ clock: systemClock, interfaces: o.interfaces, exclude: [o.iface], netlink: true, onChange: () => agent.networkChanged() });
  const lan = o.lanDiscovery
    ? new LanDiscovery({
      clock: systemClock, random: defaultRandomBytes, logger, transport: createMdnsTransport({ logger }),
      interfaces: () => readLanInterfaces(o.lanInterfaces ?? o.interfaces, [o.iface]),
    })
    : undefined;
  // A default route through an interface outside --interfaces is not ours to map (and single-machine
  // tests with --interfaces lo never talk to the real gateway).
  const portMap = o.portMapping !== false
    ? createPortMapService({ protocols: o.portMappingProtocols, interfaces: o.interfaces }, { clock: systemClock, random: defaultRandomBytes, logger })
    : undefined;
  const agent: Agent = new Agent(
    { identity, node, stunHost, iface: o.iface, keepaliveS: o.keepaliveS, portMode: ports.mode, eagerPeers: o.eagerPeers, initialNetmap: loadCachedNetmap(o.stateDir, node.id) },
    {
      clock: systemClock, random: defaultRandomBytes, logger, udp, transport: wsTransport, engine,
      localAddresses: () => monitor.addresses(), saveNetmap: (m) => saveCachedNetmap(o.stateDir, m), proxy, tunnelPort, waker, lan, portMap,
      relayWs: { connect: (url, h) => connectRelayWs(url, h), openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }) },
      // Hard-NAT birthday probing: extra ephemeral sockets, and loopback stand-ins for a path found on one.
      extraUdp: { open: openEphemeralUdp, openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }) },
      firewall,
    },
  );
  const connected = new Set<string>();
  const nameOf = (nodeKey: string) => agent.findPeer(nodeKey)?.name ?? nodeKey.slice(0, 8);
  // "Connected" only once WireGuard handshook over the path: a pong alone carries no tunnel traffic.
  agent.onPathConfirmed = (nodeKey, kind) => {
    if (connected.has(nodeKey)) return;
    connected.add(nodeKey);
    say(`peer ${nameOf(nodeKey)} connected (${kind})`);
  };
  agent.onPathChange = (nodeKey, _from, to) => {
    if (to === 'none' && connected.delete(nodeKey)) say(`peer ${nameOf(nodeKey)} lost its path; re-punching`);
  };
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => { stop = resolve; });
  const api = await startApiServer(socketPath(o.stateDir), {
    'GET /v1/status': () => agent.status(),
    'POST /v1/ping': (q) => agent.ping(q.get('peer') ?? ''),
    'POST /v1/netcheck': () => agent.netcheck(),
    'POST /v1/down': () => { setImmediate(stop); return { stopping: true }; },
  });
  await agent.start();
  monitor.start();
  say(`up: ${node.name} ${node.addresses.map((a) => a.split('/')[0]).join(' ')}, engine ${engine.kind}, UDP port ${tunnelPort ?? udp.localPort()}, port mode ${ports.mode}`);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await stopped;
  say('leaving the mesh …');
  monitor.stop();
  await agent.stop();
  await engine.close();
  await shared?.close();
  await firewall?.close();
  await api.close();
  say('down');
  return 0;
}
