/**
 * The UDP socket seam. The agent's disco/STUN shell and the coordinator's
 * observer talk to this interface; production binds node:dgram, the simulator
 * plugs in virtual sockets behind NAT models.
 */

export interface UdpEndpoint {
  address: string; // textual IP, v4 or v6 (no brackets)
  port: number;
}

export type UdpMessageHandler = (data: Uint8Array, from: UdpEndpoint) => void;

export interface UdpSendOptions {
  /**
   * The IP TTL (hop limit) of this datagram. A TTL of 1 leaves the host and dies at the first
   * router, which still refreshes the NAT mapping the packet matched (Linux looks conntrack up
   * before the TTL check) without reaching anything beyond it: disco keeps its own NAT mapping
   * open that way without touching the peer's router (agent/disco/quiet-punch.ts).
   */
  ttl?: number;
}

export interface UdpSocket {
  send(data: Uint8Array, to: UdpEndpoint, options?: UdpSendOptions): void;
  onMessage(handler: UdpMessageHandler): void;
  /** The local port the socket is bound to. */
  localPort(): number;
  close(): void;
}
