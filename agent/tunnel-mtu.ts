/**
 * How big a packet the tunnel sends to each peer, and the `mtu` health check.
 *
 * The interface keeps WireGuard's 1420 (a 1500-byte path's worth), so ordinary
 * paths lose nothing. A peer whose path is proven smaller by disco's probes
 * (agent/disco/path-mtu.ts) gets that size as the MTU of its routes; the
 * kernel then fragments or segments what goes to it (TCP picks its MSS from the
 * route) instead of handing WireGuard packets the path drops. A relayed path
 * over UDP can't be probed end to end (the relay never answers with more than
 * it was sent), so it gets what a 1280-byte path carries, the smallest MTU an
 * IPv6-era link may have. Over the relay's WebSocket (TCP) any size passes.
 * Pure: it reads what it is handed. docs/disco.md, "Path MTU".
 */
import { isIP } from 'node:net';
import { parseEndpoint } from '../shared/net/addr.js';
import { tunnelMtuFor } from './disco/path-mtu.js';
import type { HealthCheck } from './health.js';
import { RELAY_WS_ENDPOINT } from './relay/core.js';
import type { RelayPaths } from './relay/paths.js';

/** IPv6 can't run over a link smaller than this, the tunnel included (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;
/** The path MTU assumed for a path nobody can probe: the smallest a link of the IPv6 era may have. */
export const UNPROBED_PATH_MTU = IPV6_MIN_MTU;

/** What disco last proved about a peer's chosen path (its `path-mtu` action); absent = nothing proven. */
export interface PathMtuReport { endpoint?: string; pathMtu?: number; tunnelMtu?: number }

export interface TunnelMtuSources {
  interfaceMtu: number;
  relay: Pick<RelayPaths, 'path'>;
  pathMtus: ReadonlyMap<string, PathMtuReport>;
}

/**
 * A peer's tunnel MTU: `mtu` is what the tunnel sends to it now, `routeMtu` what its routes
 * must say (undefined = the interface's, as for every ordinary path), `pathMtu` the path's
 * own size where disco proved it.
 */
export function peerTunnelMtu(nodeKey: string, s: TunnelMtuSources): { mtu: number; routeMtu?: number; pathMtu?: number } {
  const path = s.relay.path(nodeKey);
  if (path.kind === 'relay') {
    if (path.endpoint === RELAY_WS_ENDPOINT || !path.endpoint) return { mtu: s.interfaceMtu };
    const ipv6 = isIP(parseEndpoint(path.endpoint)?.address ?? '') === 6;
    const mtu = tunnelMtuFor(UNPROBED_PATH_MTU, ipv6, s.interfaceMtu);
    return { mtu, ...(mtu < s.interfaceMtu && { routeMtu: mtu }) };
  }
  const report = path.kind === 'none' ? undefined : s.pathMtus.get(nodeKey);
  if (report?.tunnelMtu === undefined) return { mtu: s.interfaceMtu };
  return { mtu: report.tunnelMtu, pathMtu: report.pathMtu, ...(report.tunnelMtu < s.interfaceMtu && { routeMtu: report.tunnelMtu }) };
}

/** The `mtu` health check over the peers' direct and LAN paths (name, what disco proved). */
export function mtuHealth(peers: readonly { name: string; mtu: number; pathMtu?: number }[], interfaceMtu: number): HealthCheck {
  const measured = peers.filter((p) => p.pathMtu !== undefined);
  const belowIpv6 = measured.filter((p) => p.mtu < IPV6_MIN_MTU);
  const list = (xs: typeof peers) => xs.map((p) => `${p.name} (path ${p.pathMtu}, tunnel ${p.mtu})`).join(', ');
  if (belowIpv6.length > 0) {
    return {
      check: 'mtu', level: 'warn',
      detail: `the path to ${list(belowIpv6)} carries less than IPv6's ${IPV6_MIN_MTU} bytes through the tunnel; IPv4 is sent at that size, IPv6 inside the tunnel is unreliable`,
      fix: 'raise the MTU of the link on the way (a tunnel or PPPoE uplink) to at least 1360 (IPv4) or 1380 (IPv6), or use IPv4 to reach these peers',
    };
  }
  const below = measured.filter((p) => p.mtu < interfaceMtu);
  if (below.length > 0) return { check: 'mtu', level: 'ok', detail: `smaller paths found and used at their size: ${list(below)}` };
  return { check: 'mtu', level: 'ok', detail: measured.length > 0 ? `every measured path carries the interface's ${interfaceMtu} bytes` : 'no path measured yet' };
}
