/**
 * Shared-mode waker: the on-demand trigger for big meshes when WireGuard owns
 * the port. Peers without a path get this loopback socket as their WireGuard
 * endpoint; the handshake initiation WireGuard then sends lands here, its mac1
 * says which peer it is for, and the agent is told to punch that peer. The
 * initiation is held and sent to the peer as soon as a path exists (from the
 * agent's port, which the shared-port rules stamp with the tunnel port), which
 * saves WireGuard's 5 s retry.
 */
import { decodeKey } from '../../shared/crypto/keys.js';
import type { UdpEndpoint, UdpSocket } from '../../shared/udp.js';
import { initiationIsFor, isHandshakeInitiation, mac1Key } from '../../shared/wire/wireguard.js';

export class SharedModeWaker {
  private readonly keys = new Map<string, Uint8Array>(); // node key → mac1 key, for peers without a path
  private readonly held = new Map<string, Uint8Array>();
  readonly counters = { wakes: 0, unmatched: 0 };
  onWant?: (nodeKey: string) => void;

  constructor(private readonly socket: UdpSocket, private readonly enginePort: number, private readonly send: (bytes: Uint8Array, to: UdpEndpoint) => void) {
    socket.onMessage((bytes, from) => this.receive(bytes, from));
  }

  /** The endpoint WireGuard is given for peers without a path. */
  get endpoint(): string {
    return `127.0.0.1:${this.socket.localPort()}`;
  }

  /** Peers that have no path now (their initiations are watched for). */
  setPathless(nodeKeys: Iterable<string>): void {
    const keep = new Set(nodeKeys);
    for (const k of this.keys.keys()) if (!keep.has(k)) this.keys.delete(k);
    for (const k of keep) {
      if (this.keys.has(k)) continue;
      const pub = decodeKey(k);
      if (pub) this.keys.set(k, mac1Key(pub));
    }
  }

  /** A path to the peer exists now: send the initiation WireGuard is waiting on. */
  pathFound(nodeKey: string, to: UdpEndpoint): void {
    const bytes = this.held.get(nodeKey);
    this.held.delete(nodeKey);
    if (bytes) this.send(bytes, to);
  }

  private receive(bytes: Uint8Array, from: UdpEndpoint): void {
    if (from.port !== this.enginePort || !isHandshakeInitiation(bytes)) return;
    for (const [nodeKey, key] of this.keys) {
      if (!initiationIsFor(bytes, key)) continue;
      this.counters.wakes++;
      this.held.set(nodeKey, bytes.slice());
      this.onWant?.(nodeKey);
      return;
    }
    this.counters.unmatched++;
  }

  close(): void {
    this.socket.close();
  }
}
