/**
 * What the agent tells the tunnel engine: for every peer in the map, its
 * endpoint (the relay while relayed, else the path disco chose), allowed IPs
 * and keepalive, under the anti-stall rule (docs/disco.md). The agent shell
 * (agent/agent.ts) builds the whole config on every change and the engine
 * diffs it; this module decides its content from what it is handed and never
 * applies anything itself.
 */
import { encodeKey } from '../shared/crypto/keys.js';
import type { UdpEndpoint } from '../shared/udp.js';
import { parseEndpoint } from '../shared/net/addr.js';
import type { PeerInfo } from '../shared/wire/control.js';
import type { Netmap } from './control/netmap.js';
import { meshAllowedIps } from './engine/prefix.js';
import type { EngineConfig, EnginePeerStats } from './engine/types.js';
import type { BirthdaySockets } from './net/birthday-sockets.js';
import type { WireguardProxy } from './net/proxy.js';
import type { RelayWsBridge } from './net/relay-ws-bridge.js';
import type { SharedModeWaker } from './net/waker.js';
import { RELAY_WS_ENDPOINT } from './relay/core.js';
import type { RelayPaths } from './relay/paths.js';
import type { NodeRecord } from './state.js';

/** How long the responder side withholds a new peer's endpoint from WireGuard (anti-stall). */
export const RESPONDER_WAIT_MS = 2000;

/** A peer's endpoint for WireGuard; `via` names the hard-NAT extra socket the path was found on. */
export interface ChosenEndpoint { endpoint: string; initiator: boolean; at: number; via?: number }

/** Where a peer's endpoint comes from: the relay's path choice, else disco's (kept by the agent per node key). */
export interface EndpointSources {
  selfNodeKey: string;
  relay: Pick<RelayPaths, 'path' | 'relaySince'>;
  relayWs?: Pick<RelayWsBridge, 'standIn'>;
  disco: ReadonlyMap<string, ChosenEndpoint>;
}

/** Whether two maps differ in what the engine is told (peer keys and mesh addresses). */
export function enginePeersChanged(before: Netmap | undefined, after: Netmap): boolean {
  if (!before || before.peers.size !== after.peers.size) return true;
  for (const [id, p] of after.peers) {
    const q = before.peers.get(id);
    if (q === p) continue; // the reducer keeps unchanged peers' objects
    if (!q || q.nodeKey !== p.nodeKey || q.addresses.join() !== p.addresses.join()) return true;
  }
  return false;
}

/** The lower node key initiates WireGuard's handshake (anti-stall). */
export function isInitiator(selfNodeKey: string, peerNodeKey: string): boolean {
  return selfNodeKey < peerNodeKey;
}

/** What the engine is told for a peer: the relay while relayed, else disco's choice (kept while there is none). */
export function engineEndpoint(nodeKey: string, s: EndpointSources): ChosenEndpoint | undefined {
  const path = s.relay.path(nodeKey);
  if (path.kind === 'relay' && path.endpoint === RELAY_WS_ENDPOINT) {
    // Over the relay's WebSocket: WireGuard talks to the peer's loopback stand-in (prepared by the agent's apply).
    const standIn = s.relayWs?.standIn(nodeKey);
    return standIn ? { endpoint: standIn, initiator: isInitiator(s.selfNodeKey, nodeKey), at: s.relay.relaySince(nodeKey) } : undefined;
  }
  if (path.kind === 'relay' && path.endpoint) return { endpoint: path.endpoint, initiator: isInitiator(s.selfNodeKey, nodeKey), at: s.relay.relaySince(nodeKey) };
  return s.disco.get(nodeKey);
}

/** The forwarding each path found on a hard-NAT extra socket needs (agent/net/birthday-sockets.ts). */
export function birthdayRoutes(peers: Iterable<PeerInfo>, s: EndpointSources): { nodeKey: string; via: number; peer: UdpEndpoint }[] {
  const routes = [];
  for (const p of peers) {
    const e = engineEndpoint(p.nodeKey, s);
    const peer = e?.via !== undefined ? parseEndpoint(e.endpoint) : undefined;
    if (peer) routes.push({ nodeKey: p.nodeKey, via: e!.via!, peer });
  }
  return routes;
}

/** Peers the engine has no endpoint for: the waker watches for WireGuard's wish to reach them. */
export function pathlessPeers(peers: Iterable<PeerInfo>, s: EndpointSources): string[] {
  return [...peers].filter((p) => !engineEndpoint(p.nodeKey, s)).map((p) => p.nodeKey);
}

export interface DesiredConfigInput {
  now: number;
  privateKey: Uint8Array;
  listenPort: number;
  node: NodeRecord;
  keepaliveS: number;
  peers: Iterable<PeerInfo>;
  endpoints: EndpointSources;
  stats: ReadonlyMap<string, EnginePeerStats>;
  birthday?: Pick<BirthdaySockets, 'standIn'>;
  /** Proxy mode: told each peer's real endpoint as the config is built, it answers with the stand-in. */
  proxy?: Pick<WireguardProxy, 'engineEndpoint'>;
  waker?: Pick<SharedModeWaker, 'endpoint'>;
  /** Peers re-created for a fresh handshake in this apply (agent/path-confirm.ts): they get keepalive, which makes WireGuard initiate. */
  forcing?: ReadonlySet<string>;
  /** A peer's route MTU when its path carries less than the interface's (agent/tunnel-mtu.ts). */
  routeMtu?: (nodeKey: string) => number | undefined;
}

/** The whole config the engine should have now; applying it twice is a no-op (the engine diffs). */
export function desiredEngineConfig(c: DesiredConfigInput): EngineConfig {
  const proxy = c.proxy;
  return {
    privateKey: encodeKey(c.privateKey),
    listenPort: c.listenPort,
    addresses: c.node.addresses,
    peers: [...c.peers].map((p) => {
      const chosen = engineEndpoint(p.nodeKey, c.endpoints);
      const handshook = (c.stats.get(p.nodeKey)?.lastHandshakeMs ?? 0) > 0;
      // Anti-stall (LAB-NOTES): the two sides must never initiate in lock-step. The initiator
      // gets endpoint and keepalive at once (setting keepalive makes WireGuard initiate); the
      // responder gets no endpoint for RESPONDER_WAIT_MS — its WireGuard learns it from the
      // initiation — and keepalive only after the first handshake.
      const keepalive = chosen && (chosen.initiator || handshook || c.forcing?.has(p.nodeKey)) ? c.keepaliveS : 0;
      const waiting = chosen !== undefined && !chosen.initiator && !handshook && c.now - chosen.at < RESPONDER_WAIT_MS;
      // A path on a hard-NAT extra socket reaches WireGuard through its loopback stand-in.
      const direct = chosen?.via !== undefined ? c.birthday?.standIn(p.nodeKey) : chosen?.endpoint;
      const real = proxy ? proxy.engineEndpoint(p.nodeKey, direct) : direct; // the proxy needs the route either way
      // Shared mode: a peer without a path points at the waker, so WireGuard's wish to reach it
      // is seen (on-demand punching); the proxy's stand-ins do the same in proxy mode.
      const endpoint = waiting ? undefined : real ?? c.waker?.endpoint;
      const mtu = c.routeMtu?.(p.nodeKey);
      return { publicKey: p.nodeKey, allowedIps: meshAllowedIps(p.addresses, c.node), endpoint, persistentKeepaliveS: keepalive, ...(mtu !== undefined && { mtu }) };
    }),
  };
}
