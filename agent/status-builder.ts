/**
 * Assembles the status document (agent/status.ts) from the agent's parts:
 * identity, coordinator connection, the peer map, each peer's path (the relay's
 * choice, disco's detail), WireGuard's stats and every part's counters. It only
 * reads what it is handed; the agent shell (agent/agent.ts) calls it per request.
 */
import { formatEndpoint } from '../shared/net/addr.js';
import type { NatType } from '../shared/wire/control.js';
import type { ControlStatus } from './control/client.js';
import type { Netmap } from './control/netmap.js';
import type { DiscoCore } from './disco/core.js';
import type { EnginePeerStats } from './engine/types.js';
import type { LanDiscovery } from './lan/discovery.js';
import type { BirthdaySockets } from './net/birthday-sockets.js';
import type { WireguardProxy } from './net/proxy.js';
import type { RelayWsBridge } from './net/relay-ws-bridge.js';
import type { SharedModeWaker } from './net/waker.js';
import { describePortMapping, type PortMapService } from './portmap/index.js';
import { RELAY_WS_ENDPOINT } from './relay/core.js';
import type { RelayPaths } from './relay/paths.js';
import type { PathConfirmer } from './path-confirm.js';
import type { NodeRecord } from './state.js';
import type { HealthCheck } from './health.js';
import type { StatusDocument } from './status.js';

export interface StatusSources {
  now: number;
  wallNow: number;
  node: NodeRecord;
  nodeKey: string;
  iface: string;
  portMode: StatusDocument['engine']['portMode'];
  engineKind: string;
  port: number;
  selfEndpoints: string[];
  natType: NatType;
  portPreserved: boolean | undefined;
  control: { status: ControlStatus; detail?: string };
  netmap: Netmap;
  stats: ReadonlyMap<string, EnginePeerStats>;
  /** The agent's own counters (packets on the tunnel port). */
  counters: Record<string, number>;
  disco: Pick<DiscoCore, 'peerStatus' | 'counters'>;
  relay: Pick<RelayPaths, 'path' | 'transport' | 'client'>;
  /** Whether each path carries the tunnel yet: `direct` only after a handshake over it. */
  confirm: Pick<PathConfirmer, 'state' | 'forced'>;
  relayWs?: Pick<RelayWsBridge, 'counters'>;
  birthday?: Pick<BirthdaySockets, 'counters' | 'size'>;
  proxy?: Pick<WireguardProxy, 'counters'>;
  waker?: Pick<SharedModeWaker, 'counters'>;
  lan?: Pick<LanDiscovery, 'counters'>;
  portMap?: Pick<PortMapService, 'status' | 'counters'>;
  /** What the tunnel sends to a peer, and what its path was proven to carry (agent/tunnel-mtu.ts). */
  tunnelMtu?: (nodeKey: string) => { mtu: number; pathMtu?: number };
  /** The checks the agent's parts report (agent/health.ts). */
  health: HealthCheck[];
}

/** A URL fit for logs and status: scheme, host and path only. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

function prefixed(prefix: string, o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${prefix}${k[0]!.toUpperCase()}${k.slice(1)}`, v]));
}

/** A relay path as status shows it: relay:port, or the WebSocket's URL (without credentials or query). */
function relayEndpointText(endpoint: string | undefined, relay: Pick<RelayPaths, 'client'>): string | undefined {
  if (endpoint !== RELAY_WS_ENDPOINT) return endpoint;
  const url = relay.client.target?.ws;
  return url ? safeUrl(url) : endpoint;
}

function relayStatus(relay: Pick<RelayPaths, 'client'>): StatusDocument['relay'] {
  const t = relay.client.target!;
  return { endpoint: formatEndpoint(t.endpoint), ...(t.ws ? { ws: safeUrl(t.ws) } : {}), transport: relay.client.transport };
}

/** The status document as of `now` (disco's RTTs) and `wallNow` (the port mapping's expiry). */
export function buildStatus(s: StatusSources): StatusDocument {
  const disco = new Map(s.disco.peerStatus(s.now).map((d) => [d.nodeKey, d]));
  return {
    self: {
      id: s.node.id, name: s.node.name, nodeKey: s.nodeKey,
      ips: s.node.addresses.map((a) => a.split('/')[0]!), port: s.port,
      endpoints: s.selfEndpoints, natType: s.natType, portPreserving: s.portPreserved,
    },
    coordinator: { url: s.node.coordinatorUrl, status: s.control.status, detail: s.control.detail, version: s.netmap.version },
    engine: { kind: s.engineKind, iface: s.iface, portMode: s.portMode },
    ...(s.relay.client.target ? { relay: relayStatus(s.relay) } : {}),
    ...(s.portMap ? { portMapping: describePortMapping(s.portMap.status(), s.now, s.wallNow) } : {}),
    counters: {
      ...s.counters, ...s.disco.counters,
      ...(s.proxy ? prefixed('proxy', s.proxy.counters) : {}), ...(s.waker ? prefixed('waker', s.waker.counters) : {}),
      ...(s.lan?.counters ? prefixed('lan', { ...s.lan.counters }) : {}),
      ...(s.portMap ? prefixed('portmap', { ...s.portMap.counters }) : {}),
      handshakesForced: s.confirm.forced,
      ...prefixed('relay', { ...s.relay.client.counters }),
      ...(s.relayWs ? prefixed('relayWs', { ...s.relayWs.counters, open: s.relay.client.webSocketState === 'ready' ? 1 : 0 }) : {}),
      ...(s.birthday ? prefixed('birthday', { ...s.birthday.counters, open: s.birthday.size }) : {}),
    },
    peers: [...s.netmap.peers.values()].map((p) => {
      const d = disco.get(p.nodeKey);
      const st = s.stats.get(p.nodeKey);
      const path = s.relay.path(p.nodeKey);
      const mtu = s.tunnelMtu?.(p.nodeKey);
      return {
        id: p.id, name: p.name, nodeKey: p.nodeKey, ip: p.addresses[0]?.split('/')[0] ?? '', ips: p.addresses.map((a) => a.split('/')[0]!),
        online: p.online, path: s.confirm.state(p.nodeKey, path.kind), endpoint: path.kind === 'relay' ? relayEndpointText(path.endpoint, s.relay) : d?.endpoint,
        ...(path.kind === 'relay' ? { transport: s.relay.transport(p.nodeKey) } : {}), rttMs: path.kind === 'relay' ? undefined : d?.rttMs,
        lastHandshake: st?.lastHandshakeMs ?? 0, rxBytes: st?.rxBytes ?? 0, txBytes: st?.txBytes ?? 0, why: path.kind === 'none' ? d?.why : undefined,
        ...(mtu && { mtu: mtu.mtu, ...(mtu.pathMtu !== undefined && { pathMtu: mtu.pathMtu }) }),
      };
    }),
    health: s.health,
  };
}
