/**
 * The tunnel engine contract. The agent describes the whole desired WireGuard
 * configuration; an engine computes the diff against what it has and applies
 * only that, so `apply` is idempotent and the agent never tracks engine state.
 * `stats` reads back what WireGuard itself knows (handshakes, bytes, the
 * endpoint it roamed to), which feeds back into path state; `health` says how
 * the last applies went, for the agent's health checks.
 *
 * Implementations: memory (tests, sim), wireguard-go (UAPI), kernel (wg/ip).
 * test/agent/engine/contract.ts runs one suite against every implementation.
 */

export interface EnginePeerConfig {
  publicKey: string; // base64
  allowedIps: string[]; // CIDR
  endpoint?: string; // "ip:port" | "[v6]:port"; undefined = no endpoint known
  persistentKeepaliveS?: number; // 0/undefined = off
  /**
   * The largest packet the tunnel carries to this peer (its path's MTU less WireGuard's
   * overhead: agent/disco/path-mtu.ts), set as the MTU of the routes to its allowed IPs;
   * undefined = the interface's MTU.
   */
  mtu?: number;
}

export interface EngineConfig {
  privateKey: string; // base64; never logged
  listenPort: number;
  addresses: string[]; // interface addresses in CIDR form ("100.96.0.2/16")
  peers: EnginePeerConfig[];
}

export interface EnginePeerStats {
  publicKey: string;
  endpoint?: string; // where WireGuard currently sends (it roams on authenticated packets)
  lastHandshakeMs: number; // wall ms of the last completed handshake, 0 = never
  rxBytes: number;
  txBytes: number;
}

export type EngineKind = 'memory' | 'wireguard-go' | 'kernel';

export type IpFamily = 4 | 6;

/**
 * An address family the host has switched off (`disable_ipv6`, or no IPv6 in the kernel at
 * all): the interface addresses and routes of that family are not on the interface. They stay
 * pending, so every later apply tries them again and they appear once the family is back.
 */
export interface UnavailableFamily {
  family: IpFamily;
  /** What the host answered, in its words ("IPv6 is disabled on this device"). */
  reason: string;
}

/** How the engine's applies are going: what `Agent.health()` turns into checks. */
export interface EngineHealth {
  /** Wall ms when an apply last ended without an error; 0 = none has yet. */
  lastSuccessMs: number;
  /** The last apply's failure; cleared by the next apply that succeeds. */
  lastError?: { message: string; code?: string; atMs: number };
  /** Families skipped by the last apply that wrote to the interface (empty: none missing). */
  unavailableFamilies: UnavailableFamily[];
}

export interface ApplyOptions {
  /**
   * Write every peer's endpoint again even where it is unchanged. wireguard-go
   * caches the source address it last sent from; after the host's own address
   * changes it keeps using the stale one until its next handshake retry
   * (docs/engines.md, LAB-NOTES). Re-setting the endpoint clears that cache at
   * once, so the roaming monitor asks for this after an address change.
   */
  reassertEndpoints?: boolean;
  /**
   * Peers (public keys) to re-create so that WireGuard starts a fresh handshake at once.
   * wireguard-go initiates at most once per REKEY_TIMEOUT (5 s) and never re-handshakes an
   * existing session just because its endpoint moved; re-creating the peer (same config) is the
   * one knob both UAPI and `wg` have. Costs the peer's current session (about one round trip).
   * A peer without an endpoint to write is left alone: it could not initiate anyway.
   */
  rehandshake?: ReadonlySet<string>;
}

export interface Engine {
  readonly kind: EngineKind;
  /**
   * Brings the engine to `desired`, touching only what differs. Never all-or-nothing across
   * address families: a family the host has switched off is skipped (and reported by
   * `health`), the rest is applied.
   */
  apply(desired: EngineConfig, options?: ApplyOptions): Promise<void>;
  stats(): Promise<EnginePeerStats[]>;
  health(): EngineHealth;
  /** Removes the interface, addresses and routes it created. Idempotent. */
  close(): Promise<void>;
}
