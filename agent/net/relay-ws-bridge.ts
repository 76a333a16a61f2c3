/**
 * The relay's WebSocket fallback, the agent's shell (docs/relay.md): when UDP to
 * the relay fails, WireGuard packets for relayed peers travel over one
 * WebSocket to the relay. WireGuard itself only speaks UDP, so each such peer
 * gets a loopback stand-in, as in proxy mode (agent/net/proxy.ts):
 *
 *   WireGuard ──► 127.0.0.1:<stand-in> ──► frame (peer key | packet) ──► WebSocket ──► relay
 *   relay ──► WebSocket ──► frame ──► <stand-in of that peer> ──► 127.0.0.1:<forward port> ──► WireGuard (or the proxy)
 *
 * This is the one place where user packets pass through JavaScript on the way
 * to the relay; it is kept minimal and bounded: one copy each way, no queue of
 * our own (a socket whose send buffer is above `maxBufferedBytes` drops the
 * packet, counted, as UDP would), and only WireGuard-shaped datagrams from the
 * forward port on loopback are taken in. Every decision (when to open, the
 * challenge and sealed hello, back-off, when to go back to UDP) is made by the
 * sans-I/O client (agent/relay/core.ts); this file only moves bytes and reports
 * socket events. TLS (wss://) is verified by Node's usual rules (system CAs,
 * NODE_EXTRA_CA_CERTS).
 */
import { WebSocket, type RawData } from 'ws';
import { decodeKey, encodeKey } from '../../shared/crypto/keys.js';
import { normalizeIp } from '../../shared/net/addr.js';
import type { UdpSocket } from '../../shared/udp.js';
import { decodeWsData, encodeWsData, isWireguardShaped } from '../../shared/wire/relay.js';

/** Above this many bytes waiting in the WebSocket's send buffer, packets are dropped (counted). */
export const RELAY_WS_MAX_BUFFERED = 1024 * 1024;
/** Largest frame taken from the relay: a node key and the largest UDP payload. */
const MAX_FRAME = 32 + 65_535;
/** The socket is pinged this often; one that has not answered the previous ping by then is closed. */
export const RELAY_WS_PING_MS = 15_000;

/** One WebSocket, as the bridge needs it (the real one is `connectRelayWs`; tests may pass their own). */
export interface RelayWsConnection {
  send(bytes: Uint8Array): void;
  readonly bufferedAmount: number;
  close(): void;
}

export interface RelayWsHandlers {
  open(): void;
  message(bytes: Uint8Array): void;
  close(): void;
}

export interface RelayWsDeps {
  /** Opens a WebSocket; exactly one `close` follows (also when it never opened). */
  connect: (url: string, h: RelayWsHandlers) => RelayWsConnection;
  /** Opens a loopback UDP socket on an ephemeral port: a peer's stand-in. */
  openLoopback: () => Promise<UdpSocket>;
  maxBufferedBytes?: number;
}

export interface RelayWsBridgeEvents {
  /** The port WireGuard's packets are delivered to on loopback: the tunnel port (shared mode) or the agent's (proxy, memory). */
  forwardPort: () => number;
  onOpen: () => void;
  /** A frame before `setReady()`: the relay's challenge or its ws-ok. */
  onControl: (bytes: Uint8Array) => void;
  onClose: () => void;
}

/**
 * A claim: a frame for a peer whose "packet" is a WireGuard-shaped keepalive that no
 * WireGuard accepts (type 4, receiver index 0, counter 0, zero tag). The relay ties the
 * pair's side to our socket on any data frame, so this makes it send the peer's packets
 * down here before we send any (the responder's WireGuard stays quiet until it hears
 * from the initiator). A receiving bridge drops it; a WireGuard that gets it drops it too.
 */
export const RELAY_WS_CLAIM = (() => { const b = new Uint8Array(32); b[0] = 4; return b; })();

function isClaim(b: Uint8Array): boolean {
  if (b.length !== RELAY_WS_CLAIM.length) return false;
  for (let i = 0; i < b.length; i++) if (b[i] !== RELAY_WS_CLAIM[i]) return false;
  return true;
}

interface StandIn { nodeKey: string; peer: Uint8Array; socket: UdpSocket; port: number }

export class RelayWsBridge {
  private conn?: RelayWsConnection;
  private ready = false;
  private readonly standIns = new Map<string, StandIn>(); // node key → stand-in
  private readonly byPort = new Map<number, StandIn>();
  private closed = false;
  readonly counters = {
    /** WireGuard packets sent over / received from the WebSocket. */
    toRelay: 0, fromRelay: 0, bytesToRelay: 0, bytesFromRelay: 0,
    /** Dropped: send buffer over the limit; socket not ready; not from the forward port or not WireGuard; unknown peer or malformed frame. */
    dropBackpressure: 0, dropNotReady: 0, dropNotWireguard: 0, dropUnknownPeer: 0,
    claims: 0, standIns: 0,
  };

  constructor(private readonly d: RelayWsDeps, private readonly e: RelayWsBridgeEvents) {}

  /** Opens a WebSocket to `url`, closing the current one (whose events are ignored from now on). */
  connect(url: string): void {
    this.disconnect();
    if (this.closed) return;
    let conn: RelayWsConnection | undefined;
    const mine = () => conn !== undefined && this.conn === conn;
    conn = this.d.connect(url, {
      open: () => { if (mine()) this.e.onOpen(); },
      message: (bytes) => { if (mine()) this.frame(bytes); },
      close: () => {
        if (!mine()) return;
        this.conn = undefined;
        this.ready = false;
        this.e.onClose();
      },
    });
    this.conn = conn;
  }

  /** Closes the WebSocket (no onClose follows). */
  disconnect(): void {
    const c = this.conn;
    this.conn = undefined;
    this.ready = false;
    try { c?.close(); } catch { /* closing anyway */ }
  }

  /** A control frame (the sealed hello). */
  sendControl(bytes: Uint8Array): void {
    this.conn?.send(bytes);
  }

  /** The socket is authenticated: frames are data from now on. */
  setReady(): void {
    if (this.conn) this.ready = true;
  }

  claim(peer: Uint8Array): void {
    if (!this.conn || !this.ready) return;
    this.counters.claims++;
    this.conn.send(encodeWsData(peer, RELAY_WS_CLAIM));
  }

  /** Makes sure every listed peer has a stand-in, and closes those of peers no longer relayed over the WebSocket. */
  async prepare(nodeKeys: Iterable<string>): Promise<void> {
    const keep = new Set(nodeKeys);
    for (const [key, s] of this.standIns) {
      if (keep.has(key)) continue;
      this.standIns.delete(key);
      this.byPort.delete(s.port);
      s.socket.close();
    }
    for (const key of keep) {
      if (this.standIns.has(key) || this.closed) continue;
      const peer = decodeKey(key);
      if (!peer) continue;
      const socket = await this.d.openLoopback();
      if (this.closed || this.standIns.has(key)) {
        socket.close();
        continue;
      }
      const s: StandIn = { nodeKey: key, peer, socket, port: socket.localPort() };
      socket.onMessage((bytes, from) => this.fromEngine(s, bytes, from.address, from.port));
      this.standIns.set(key, s);
      this.byPort.set(s.port, s);
      this.counters.standIns++;
    }
  }

  /** The endpoint WireGuard (or the proxy) is given for a peer relayed over the WebSocket. */
  standIn(nodeKey: string): string | undefined {
    const s = this.standIns.get(nodeKey);
    return s && `127.0.0.1:${s.port}`;
  }

  /** Whether an endpoint WireGuard reports is one of our stand-ins (no evidence of a direct path). */
  isStandIn(endpoint: string | undefined): boolean {
    if (!endpoint?.startsWith('127.0.0.1:')) return false;
    return this.byPort.has(Number(endpoint.slice('127.0.0.1:'.length)));
  }

  get size(): number {
    return this.standIns.size;
  }

  close(): void {
    this.closed = true;
    this.disconnect();
    for (const s of this.standIns.values()) s.socket.close();
    this.standIns.clear();
    this.byPort.clear();
  }

  private fromEngine(s: StandIn, bytes: Uint8Array, address: string, port: number): void {
    // Only WireGuard (or the proxy) on loopback may send through a stand-in, and only WireGuard packets.
    if (port !== this.e.forwardPort() || normalizeIp(address) !== '127.0.0.1' || !isWireguardShaped(bytes)) {
      this.counters.dropNotWireguard++;
      return;
    }
    const c = this.conn;
    if (!c || !this.ready) {
      this.counters.dropNotReady++;
      return;
    }
    if (c.bufferedAmount > (this.d.maxBufferedBytes ?? RELAY_WS_MAX_BUFFERED)) {
      this.counters.dropBackpressure++;
      return;
    }
    this.counters.toRelay++;
    this.counters.bytesToRelay += bytes.length;
    c.send(encodeWsData(s.peer, bytes));
  }

  private frame(bytes: Uint8Array): void {
    if (!this.ready) {
      this.e.onControl(bytes);
      return;
    }
    const d = decodeWsData(bytes);
    const s = d && this.standIns.get(encodeKey(d.peer));
    if (!d || !s) {
      this.counters.dropUnknownPeer++;
      return;
    }
    if (isClaim(d.packet)) return; // the peer claiming its side: nothing for WireGuard
    this.counters.fromRelay++;
    this.counters.bytesFromRelay += d.packet.length;
    s.socket.send(d.packet, { address: '127.0.0.1', port: this.e.forwardPort() });
  }
}

/**
 * A real WebSocket (the `ws` package): binary frames, no compression, bounded frames,
 * TLS verified as usual for wss://, pinged every RELAY_WS_PING_MS (a connection that
 * stops answering — a dead NAT mapping, a vanished relay — is closed, so it is reopened).
 */
export function connectRelayWs(url: string, h: RelayWsHandlers, options: { ca?: string | Buffer; pingMs?: number } = {}): RelayWsConnection {
  let ws: WebSocket;
  let done = false;
  let pinger: ReturnType<typeof setInterval> | undefined;
  const finish = () => {
    if (done) return;
    done = true;
    if (pinger) clearInterval(pinger);
    h.close();
  };
  try {
    ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_FRAME, handshakeTimeout: 10_000, ...(options.ca ? { ca: options.ca } : {}) });
  } catch {
    // A malformed URL: report the close on the next tick, as for a failed connection.
    queueMicrotask(finish);
    return { send() {}, bufferedAmount: 0, close() {} };
  }
  ws.binaryType = 'nodebuffer';
  let alive = true;
  ws.on('open', () => {
    pinger = setInterval(() => {
      if (!alive) { ws.terminate(); return; }
      alive = false;
      try { ws.ping(); } catch { /* closing */ }
    }, options.pingMs ?? RELAY_WS_PING_MS);
    pinger.unref?.();
    h.open();
  });
  ws.on('pong', () => { alive = true; });
  ws.on('message', (data: RawData, isBinary: boolean) => {
    alive = true;
    if (!isBinary || !Buffer.isBuffer(data)) return;
    h.message(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
  ws.on('close', finish);
  ws.on('error', () => { /* 'close' follows */ });
  return {
    send(bytes) {
      if (ws.readyState === WebSocket.OPEN) ws.send(bytes, { binary: true });
    },
    get bufferedAmount() { return ws.bufferedAmount; },
    close() {
      done = true; // the caller asked: no close event for it
      if (pinger) clearInterval(pinger);
      try { ws.terminate(); } catch { /* already closed */ }
    },
  };
}
