/**
 * Proxy mode: the portable way to share the tunnel port. The agent owns the
 * public UDP port (disco and STUN live there); the engine listens on a
 * loopback-only port of its own, and each peer gets a loopback socket that
 * stands in for it:
 *
 *   WireGuard ──► 127.0.0.1:<peer socket> ──► agent ──► public port ──► peer's real endpoint
 *   peer ──► public port ──► agent ──► <peer socket> ──► 127.0.0.1:<engine port> ──► WireGuard
 *
 * WireGuard is told the peer lives at its loopback stand-in, which never
 * changes; when disco moves the peer to a new real endpoint only this table
 * changes. It costs one copy per packet in JavaScript, which is why the shared
 * mode (no copy) is preferred where it works. Packets from an address that is
 * no peer's current endpoint are dropped and counted: the real endpoint is
 * learned only from disco (an authenticated pong) or the coordinator.
 */
import { formatEndpoint, parseEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint, UdpSocket } from '../../shared/udp.js';

export interface ProxyDeps {
  /** The agent's public socket (the tunnel port). */
  publicSocket: UdpSocket;
  /** Opens a loopback UDP socket on an ephemeral port. */
  openLoopback: () => Promise<UdpSocket>;
  /** The engine's loopback listen port. */
  enginePort: number;
}

interface PeerLeg {
  socket: UdpSocket;
  real?: UdpEndpoint;
  /** The latest packet WireGuard sent before a path existed: flushed when one does (saves its 5 s retry). */
  held?: Uint8Array;
}

export class WireguardProxy {
  private readonly peers = new Map<string, PeerLeg>(); // node key → its stand-in
  private readonly byReal = new Map<string, PeerLeg>(); // "ip:port" → leg
  readonly counters = { toEngine: 0, toNetwork: 0, dropUnknownSource: 0, dropNoEndpoint: 0 };
  /** WireGuard wants to reach a peer we have no path to: the trigger for on-demand punching. */
  onWant?: (nodeKey: string) => void;

  constructor(private readonly d: ProxyDeps) {}

  get enginePort(): number {
    return this.d.enginePort;
  }

  /** Makes sure every listed peer has a stand-in socket, and closes those of peers gone. */
  async prepare(nodeKeys: Iterable<string>): Promise<void> {
    const keep = new Set(nodeKeys);
    for (const [key, leg] of this.peers) {
      if (keep.has(key)) continue;
      leg.socket.close();
      if (leg.real) this.byReal.delete(formatEndpoint(leg.real));
      this.peers.delete(key);
    }
    for (const key of keep) {
      if (this.peers.has(key)) continue;
      const socket = await this.d.openLoopback();
      const leg: PeerLeg = { socket };
      socket.onMessage((bytes, from) => {
        // Only the engine may send through a stand-in.
        if (from.port !== this.d.enginePort) return;
        if (!leg.real) {
          this.counters.dropNoEndpoint++;
          leg.held = bytes.slice();
          this.onWant?.(key);
          return;
        }
        this.counters.toNetwork++;
        this.d.publicSocket.send(bytes, leg.real);
      });
      this.peers.set(key, leg);
    }
  }

  /**
   * Points a peer's stand-in at its real endpoint (undefined: none yet) and returns what
   * WireGuard should be told: always the stand-in, so that WireGuard's wish to reach a peer
   * without a path arrives here (on-demand punching) instead of going nowhere.
   */
  engineEndpoint(nodeKey: string, real: string | undefined): string | undefined {
    const leg = this.peers.get(nodeKey);
    if (!leg) return undefined;
    const ep = real ? parseEndpoint(real) : undefined;
    if (leg.real) this.byReal.delete(formatEndpoint(leg.real));
    leg.real = ep;
    if (ep) this.byReal.set(formatEndpoint(ep), leg);
    if (ep && leg.held) {
      this.counters.toNetwork++;
      this.d.publicSocket.send(leg.held, ep);
      leg.held = undefined;
    }
    return `127.0.0.1:${leg.socket.localPort()}`;
  }

  /** A WireGuard packet that arrived on the public port. */
  fromNetwork(bytes: Uint8Array, from: UdpEndpoint): void {
    const leg = this.byReal.get(formatEndpoint(from));
    if (!leg) {
      this.counters.dropUnknownSource++;
      return;
    }
    this.counters.toEngine++;
    leg.socket.send(bytes, { address: '127.0.0.1', port: this.d.enginePort });
  }

  close(): void {
    for (const leg of this.peers.values()) leg.socket.close();
    this.peers.clear();
    this.byReal.clear();
  }
}
