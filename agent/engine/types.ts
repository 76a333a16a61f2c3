/**
 * The tunnel engine contract. The agent describes the whole desired WireGuard
 * configuration; an engine computes the diff against what it has and applies
 * only that, so `apply` is idempotent and the agent never tracks engine state.
 * `stats` reads back what WireGuard itself knows (handshakes, bytes, the
 * endpoint it roamed to), which feeds back into path state.
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

export interface ApplyOptions {
  /**
   * Write every peer's endpoint again even where it is unchanged. wireguard-go
   * caches the source address it last sent from; after the host's own address
   * changes it keeps using the stale one until its next handshake retry
   * (docs/engines.md, LAB-NOTES). Re-setting the endpoint clears that cache at
   * once, so the roaming monitor asks for this after an address change.
   */
  reassertEndpoints?: boolean;
}

export interface Engine {
  readonly kind: EngineKind;
  /** Brings the engine to `desired`, touching only what differs. */
  apply(desired: EngineConfig, options?: ApplyOptions): Promise<void>;
  stats(): Promise<EnginePeerStats[]>;
  /** Removes the interface, addresses and routes it created. Idempotent. */
  close(): Promise<void>;
}
