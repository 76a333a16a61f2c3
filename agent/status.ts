/**
 * The status document: what `knit status --json` prints and the local API's
 * GET /v1/status returns. Stable field names; tests and tools read them.
 */
import type { NatType } from '../shared/wire/control.js';
import type { HealthCheck } from './health.js';

export type PathKind = 'lan' | 'direct' | 'relay' | 'none';
/**
 * A path as the user sees it: `lan`, `direct` or `relay` only once WireGuard has a handshake
 * over it newer than the moment it was handed over; before that, `direct (handshaking)` and so
 * on (agent/path-confirm.ts). A script comparing with 'direct' sees only a working path.
 */
export type PathState = PathKind | `${Exclude<PathKind, 'none'>} (handshaking)`;

export interface PeerStatus {
  id: number;
  name: string;
  nodeKey: string;
  ip: string; // first mesh IPv4
  ips: string[];
  online: boolean;
  path: PathState;
  endpoint?: string;
  /** With path `relay`: how the packets reach the relay — UDP, or its WebSocket (`ws`) when UDP to the relay fails. */
  transport?: 'udp' | 'ws';
  rttMs?: number;
  lastHandshake: number; // wall ms, 0 = never
  rxBytes: number;
  txBytes: number;
  why?: string; // when there is no direct path, a sentence a person can act on
  /**
   * The largest packet the tunnel sends to this peer: the interface's (1420), less where the
   * path was proven smaller or is relayed over UDP (agent/tunnel-mtu.ts).
   */
  mtu?: number;
  /** The largest underlay packet disco's probes proved the direct path carries both ways. */
  pathMtu?: number;
}

export interface StatusDocument {
  self: {
    id: number;
    name: string;
    nodeKey: string;
    ips: string[];
    port: number;
    endpoints: string[];
    natType: NatType;
    portPreserving?: boolean;
  };
  coordinator: { url: string; status: string; detail?: string; version: number };
  engine: { kind: string; iface: string; portMode: 'proxy' | 'shared' | 'memory' };
  /** The relay the coordinator announced (absent: none), and how relayed packets reach it now. */
  relay?: { endpoint: string; ws?: string; transport: 'udp' | 'ws' };
  /** Absent with --no-port-mapping (docs/port-mapping.md). */
  portMapping?: PortMappingStatus;
  counters: Record<string, number>;
  peers: PeerStatus[];
  /** What works and what doesn't, each a check with ok / warn / fail (agent/health.ts). */
  health: HealthCheck[];
}

/** The gateway port mapping: what `knit status` shows under `portMapping`. */
export interface PortMappingStatus {
  /** idle (no gateway), probing, mapped, waiting (every protocol failed; retrying later), stopping, stopped. */
  state: string;
  gateway?: string;
  protocol?: 'pcp' | 'natpmp' | 'upnp';
  /** The mapped address, "ip:port". */
  external?: string;
  /** Wall-clock ms when the mapping expires unless renewed (it is renewed at half-life). */
  expiresAt?: number;
  /** Proven by an echo through the mapping; only then is `external` an endpoint candidate. */
  verified: boolean;
  /** Why it is not (yet) a candidate, or why mapping failed. */
  detail?: string;
}
