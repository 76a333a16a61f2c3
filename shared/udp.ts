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

export interface UdpSocket {
  send(data: Uint8Array, to: UdpEndpoint): void;
  onMessage(handler: UdpMessageHandler): void;
  /** The local port the socket is bound to. */
  localPort(): number;
  close(): void;
}
