/**
 * The hard side's extra sockets for birthday probing (agent/disco/hard-nat.ts),
 * and the userspace forwarding a path found through one of them needs.
 *
 * The disco core numbers the sockets; this shell opens socket N the first time
 * the core sends from it, hands disco packets arriving on it back to the core
 * (`onDisco(N, …)`), and closes it when the core releases it. When a path
 * ends on socket N rather than on the tunnel port, WireGuard can't send from
 * N itself, so the peer gets a loopback stand-in, as in proxy mode
 * (agent/net/proxy.ts):
 *
 *   WireGuard ──► 127.0.0.1:<stand-in> ──► socket N ──► peer's endpoint
 *   peer ──► socket N ──► <stand-in> ──► 127.0.0.1:<tunnel port> ──► WireGuard (or the proxy)
 *
 * It costs a copy per packet in JavaScript, which is acceptable only for this
 * fallback: every other path keeps WireGuard on the tunnel port. Only the
 * peer's endpoint may send WireGuard packets in through N, and only the tunnel
 * port's owner on loopback may send out through the stand-in; anything else is
 * dropped and counted.
 */
import { createSocket } from 'node:dgram';
import { normalizeIp, sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint, UdpSocket } from '../../shared/udp.js';
import { isDiscoPacket } from '../../shared/wire/disco.js';

export interface BirthdaySocketsDeps {
  /** Opens an unconnected UDP socket on an ephemeral port, synchronously (node:dgram binds on first send). */
  open: () => UdpSocket;
  /** Opens a loopback UDP socket on an ephemeral port: a peer's stand-in. */
  openLoopback: () => Promise<UdpSocket>;
  /** The port WireGuard's packets are delivered to on loopback: the tunnel port (shared mode) or the agent's (proxy mode). */
  forwardPort: () => number;
  /** A disco packet arrived on extra socket `id`. */
  onDisco: (id: number, bytes: Uint8Array, from: UdpEndpoint) => void;
}

export interface BirthdayRoute { nodeKey: string; via: number; peer: UdpEndpoint }

interface Route extends BirthdayRoute { standIn: UdpSocket }

/** WireGuard message types 1–4 then three zero bytes (the relay uses the same test). */
function looksLikeWireguard(b: Uint8Array): boolean {
  return b.length >= 32 && b[0]! >= 1 && b[0]! <= 4 && b[1] === 0 && b[2] === 0 && b[3] === 0;
}

export class BirthdaySockets {
  private readonly sockets = new Map<number, UdpSocket>();
  private readonly routes = new Map<string, Route>(); // node key → route
  private readonly byVia = new Map<number, Route>();
  readonly counters = { opened: 0, closed: 0, toEngine: 0, toNetwork: 0, dropUnknownSource: 0, dropNotWireguard: 0 };

  constructor(private readonly d: BirthdaySocketsDeps) {}

  /** Sockets open now. */
  get size(): number {
    return this.sockets.size;
  }

  /** Sends from extra socket `id`, opening it on first use. */
  send(id: number, bytes: Uint8Array, to: UdpEndpoint): void {
    let s = this.sockets.get(id);
    if (!s) {
      s = this.d.open();
      this.counters.opened++;
      this.sockets.set(id, s);
      s.onMessage((b, from) => this.fromNetwork(id, b, from));
    }
    s.send(bytes, to);
  }

  /** The core gave these sockets back: close them (and drop a route that used one). */
  release(ids: readonly number[]): void {
    for (const id of ids) {
      const s = this.sockets.get(id);
      if (!s) continue;
      s.close();
      this.sockets.delete(id);
      this.counters.closed++;
      const r = this.byVia.get(id);
      if (r) this.dropRoute(r);
    }
  }

  /**
   * Makes the routes exactly these (peers whose chosen path runs on an extra socket): opens a
   * stand-in for each new one, closes those no longer listed. Idempotent.
   */
  async prepare(routes: readonly BirthdayRoute[]): Promise<void> {
    const want = new Map(routes.map((r) => [r.nodeKey, r]));
    for (const r of [...this.routes.values()]) {
      const w = want.get(r.nodeKey);
      if (!w || w.via !== r.via || !sameEndpoint(w.peer, r.peer)) this.dropRoute(r);
    }
    for (const w of want.values()) {
      if (this.routes.has(w.nodeKey) || !this.sockets.has(w.via)) continue;
      const standIn = await this.d.openLoopback();
      if (this.routes.has(w.nodeKey) || !this.sockets.has(w.via)) { // changed while we waited
        standIn.close();
        continue;
      }
      const r: Route = { ...w, standIn };
      standIn.onMessage((b, from) => {
        // Only the engine side (the tunnel port's owner on loopback) may send out through the stand-in.
        if (from.port !== this.d.forwardPort() || !isLoopback(from.address)) return void this.counters.dropUnknownSource++;
        const s = this.sockets.get(r.via);
        if (!s) return;
        this.counters.toNetwork++;
        s.send(b, r.peer);
      });
      this.routes.set(w.nodeKey, r);
      this.byVia.set(w.via, r);
    }
  }

  /** The loopback endpoint WireGuard is told for a peer on an extra-socket path ("127.0.0.1:port"), if any. */
  standIn(nodeKey: string): string | undefined {
    const r = this.routes.get(nodeKey);
    return r && `127.0.0.1:${r.standIn.localPort()}`;
  }

  /** Whether an endpoint WireGuard reports is one of our stand-ins (so not evidence of a real path). */
  isStandIn(endpoint: string | undefined): boolean {
    if (!endpoint) return false;
    for (const r of this.routes.values()) if (`127.0.0.1:${r.standIn.localPort()}` === endpoint) return true;
    return false;
  }

  close(): void {
    for (const r of [...this.routes.values()]) this.dropRoute(r);
    this.release([...this.sockets.keys()]);
  }

  private fromNetwork(id: number, bytes: Uint8Array, from: UdpEndpoint): void {
    if (isDiscoPacket(bytes)) return this.d.onDisco(id, bytes, from);
    const r = this.byVia.get(id);
    if (!r || !sameEndpoint(r.peer, from)) return void this.counters.dropUnknownSource++;
    if (!looksLikeWireguard(bytes)) return void this.counters.dropNotWireguard++;
    this.counters.toEngine++;
    r.standIn.send(bytes, { address: '127.0.0.1', port: this.d.forwardPort() });
  }

  private dropRoute(r: Route): void {
    r.standIn.close();
    this.routes.delete(r.nodeKey);
    if (this.byVia.get(r.via) === r) this.byVia.delete(r.via);
  }
}

function isLoopback(address: string): boolean {
  const a = normalizeIp(address);
  return a.startsWith('127.') || a === '::1';
}

/**
 * The production `open`: an IPv4 node:dgram socket that the kernel binds to an ephemeral port on
 * its first send (so opening is synchronous, as the core's paced sends want). Send errors are
 * ignored, as on the tunnel socket: silence is what the path machinery notices.
 */
export function openEphemeralUdp(): UdpSocket {
  const sock = createSocket({ type: 'udp4' });
  const handlers: ((b: Uint8Array, from: UdpEndpoint) => void)[] = [];
  let closed = false;
  sock.on('error', () => {});
  sock.on('message', (msg, rinfo) => {
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    for (const h of handlers) h(bytes, { address: normalizeIp(rinfo.address), port: rinfo.port });
  });
  return {
    send(data, to) {
      if (!closed) sock.send(data, to.port, to.address, () => {});
    },
    onMessage(h) { handlers.push(h); },
    localPort() {
      try { return sock.address().port; } catch { return 0; } // not bound before the first send
    },
    close() {
      if (closed) return;
      closed = true;
      try { sock.close(); } catch { /* closed */ }
    },
  };
}

