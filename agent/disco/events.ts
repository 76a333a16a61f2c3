/**
 * What passes between the disco core (core.ts) and its shell: the peer map
 * entries and events fed in, the actions handed back, and the counters read
 * out. A module of its own so that the shell, the tests and the core's helper
 * modules share one vocabulary without importing the core itself.
 */
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import type { PathKind } from '../status.js';

export interface DiscoPeerInput {
  nodeKey: string;
  discoKey: string; // '' = unknown yet (never connected)
  name: string;
  endpoints: string[];
  natType: NatType;
  online: boolean;
}

export type DiscoEvent =
  | { type: 'peers-updated'; peers: DiscoPeerInput[] }
  | { type: 'lan-candidate'; nodeKey: string; endpoint: UdpEndpoint }
  /** `via`: the packet arrived on one of the hard-NAT extra sockets (hard-nat.ts), not the tunnel port. */
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array; via?: number }
  | { type: 'call-me-maybe'; fromNodeKey: string; endpoints: string[] }
  | { type: 'network-changed' }
  | { type: 'self-endpoints'; endpoints: string[]; natType: NatType }
  | { type: 'wireguard-stats'; nodeKey: string; lastHandshakeMs: number; endpoint?: string }
  | { type: 'ping-now'; nodeKey: string }
  /** Traffic wants this peer (WireGuard sent towards it): punch now if it isn't already. */
  | { type: 'want'; nodeKey: string }
  | { type: 'tick' };

export type DiscoAction =
  /** `via`: send from that hard-NAT extra socket (the shell opens it on first use) instead of the tunnel port. */
  /** `ttl`: the datagram's own IP TTL (quiet punching's keep pings die at the first router). */
  | { type: 'send-udp'; to: UdpEndpoint; bytes: Uint8Array; via?: number; ttl?: number }
  | { type: 'send-call-me-maybe'; toNodeKey: string; endpoints: string[] }
  /**
   * Hand this endpoint to the engine. `initiator`: this side should start WireGuard's handshake (see docs/disco.md,
   * anti-stall). `via`: the path runs on that extra socket, so the shell carries the peer's WireGuard packets.
   */
  | { type: 'set-peer-endpoint'; nodeKey: string; endpoint: string; path: PathKind; initiator: boolean; via?: number }
  /** These hard-NAT extra sockets are no longer needed: close them. */
  | { type: 'release-sockets'; ids: number[] }
  | { type: 'path-changed'; nodeKey: string; from: PathKind; to: PathKind; endpoint?: string; rttMs?: number }
  | { type: 'pong'; nodeKey: string; endpoint: string; rttMs: number; path: PathKind }
  /**
   * What the peer's chosen path `endpoint` carries changed (path-mtu.ts): `pathMtu` is the largest
   * underlay packet proven both ways, `tunnelMtu` the largest tunnel packet that fits in it;
   * both undefined = not proven (a new path, or none).
   */
  | { type: 'path-mtu'; nodeKey: string; endpoint?: string; pathMtu?: number; tunnelMtu?: number };

export interface DiscoCounters {
  pingsSent: number;
  pongsSent: number;
  pongsAccepted: number;
  dropMalformed: number;
  dropUnknownSender: number;
  dropBadNodeKey: number;
  dropUnexpectedPong: number;
  dropRateLimited: number;
  /** Pings whose txid we answered before: replays. */
  dropReplay: number;
  callMeMaybeSent: number;
  callMeMaybeReceived: number;
  discoKeysAdopted: number;
  discoKeysAnnounced: number;
  /** Quiet punching rounds started, and paths they found (quiet-punch.ts). */
  quietRounds: number;
  quietDirect: number;
  /** Hard-NAT attempts started, probes sent (easy side), openers sent from extra sockets (hard side). */
  hardNatAttempts: number;
  hardNatProbes: number;
  hardNatOpeners: number;
  /** Extra sockets open now (a gauge). */
  hardNatSockets: number;
  /** Paths chosen while a hard-NAT attempt was running. */
  hardNatDirect: number;
  /** Packets on an extra socket from a peer other than the one it was opened for. */
  dropWrongSocket: number;
  /** Path MTU probes sent, and answers refused for being shorter than the probe (a peer that doesn't pad its pongs). */
  mtuProbesSent: number;
  dropShortMtuPong: number;
}
