/**
 * The control channel's WebSocket shell: upgrades GET /v1/control on the
 * fastify server's socket, adapts each ws connection to a hub session, and
 * keeps liveness with protocol-level pings (a peer that misses one is cut
 * off, which is what marks a node offline). Everything about the protocol
 * lives in the hub; this file only moves frames and closes sockets. Other
 * WebSocket endpoints on the same server (the console's /v1/admin/feed) are
 * routed through this listener with `routeUpgrade`.
 *
 * Built for 10,000 idle connections on a small machine: per-message
 * compression stays off (a zlib context per socket would cost many times the
 * whole per-agent budget, and shared frames would be compressed once per
 * socket), and each connection is one small object whose methods and event
 * handlers are shared functions rather than a set of closures per socket.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.js';
import { MAX_FRAME_BYTES } from '../../shared/wire/control.js';
import type { ControlHub, SessionHandle, SessionTransport } from './hub.js';

/**
 * Ping interval. A connection that has not answered the previous ping by the
 * next one is dead, so a silent peer is noticed within 15–30 s: well inside
 * the agents' own 10 s ping, and cheap at 10,000 connections.
 */
export const WS_PING_INTERVAL_MS = 15_000;

export interface ControlWebSocketOptions {
  clock?: Clock;
  pingIntervalMs?: number;
}

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/** Other WebSocket endpoints on the same server (the console's admin feed), by path. */
const otherUpgrades = new WeakMap<Server, Map<string, UpgradeHandler>>();

/**
 * Routes upgrades of `path` on `server` to `handler`: the control shell owns the
 * server's one 'upgrade' listener (and answers 404 for unknown paths), so other
 * endpoints register here instead of adding listeners of their own. Returns the remover.
 */
export function routeUpgrade(server: Server, path: string, handler: UpgradeHandler): () => void {
  let routes = otherUpgrades.get(server);
  if (!routes) otherUpgrades.set(server, (routes = new Map()));
  routes.set(path, handler);
  return () => {
    if (routes.get(path) === handler) routes.delete(path);
  };
}

/** Shared, not allocated per send: encoded frames go out as text messages (they are JSON). */
const AS_TEXT = { binary: false } as const;

/** One control connection: the hub's transport for it and its liveness flag. */
class Connection implements SessionTransport {
  alive = true;
  /** Bytes queued towards the peer at the last ping round (see pingAll). */
  queued = 0;
  session: SessionHandle | undefined;

  constructor(readonly ws: WebSocket, readonly remoteAddress: string) {}

  send(text: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  sendEncoded(bytes: Buffer): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes, AS_TEXT);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

export function attachControlWebSocket(server: Server, hub: ControlHub, options: ControlWebSocketOptions = {}): { close(): void } {
  const clock = options.clock ?? systemClock;
  const interval = options.pingIntervalMs ?? WS_PING_INTERVAL_MS;
  // maxPayload makes ws refuse an oversized frame itself (close 1009) before we see a byte of it.
  // Connections are tracked here (for pings) rather than in ws's own client set.
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
  const connections = new Map<WebSocket, Connection>();
  let closed = false;

  // Listeners are called with `this` = the socket, so one function serves every connection.
  function onMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
    const c = connections.get(this);
    if (!c) return;
    c.alive = true;
    if (isBinary) return c.session!.receive('\u0000binary'); // not JSON: the hub answers 4400
    c.session!.receive(data.toString());
  }
  function onPong(this: WebSocket): void {
    const c = connections.get(this);
    if (c) c.alive = true;
  }
  function onGone(this: WebSocket): void {
    // 'close', or 'error' (e.g. a frame over maxPayload: ws closes with 1009); the hub ignores a second call.
    const c = connections.get(this);
    if (!c) return;
    connections.delete(this);
    c.session!.closed();
  }

  const accept = (ws: WebSocket, remoteAddress: string): void => {
    const c = new Connection(ws, remoteAddress);
    connections.set(ws, c);
    ws.on('message', onMessage);
    ws.on('pong', onPong);
    ws.on('close', onGone);
    ws.on('error', onGone);
    c.session = hub.connect(c);
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const other = path !== '/v1/control' && !closed ? otherUpgrades.get(server)?.get(path) : undefined;
    if (other) return other(req, socket, head);
    if (path !== '/v1/control' || closed) {
      socket.end(`HTTP/1.1 ${closed ? '503 Service Unavailable' : '404 Not Found'}\r\nConnection: close\r\n\r\n`);
      return;
    }
    // Read the address now: nothing that lives as long as the connection should hold the request.
    const remoteAddress = req.socket.remoteAddress ?? '';
    wss.handleUpgrade(req, socket, head, (ws) => accept(ws, remoteAddress));
  };
  server.on('upgrade', onUpgrade);

  let timer: TimerHandle | undefined;
  const pingAll = () => {
    timer = undefined;
    if (closed) return;
    for (const [ws, c] of connections) {
      // Our ping waits behind whatever is queued before it (a 3 MB snapshot to a slow reader):
      // a peer that took bytes off that queue since the last round is alive, pong or not.
      const queued = ws.bufferedAmount;
      if (!c.alive && !(queued > 0 && queued < c.queued)) {
        ws.terminate(); // emits 'close': the hub marks the node offline
        continue;
      }
      c.alive = false;
      c.queued = queued;
      ws.ping();
    }
    timer = clock.setTimeout(pingAll, interval);
  };
  timer = clock.setTimeout(pingAll, interval);

  return {
    close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clock.clearTimeout(timer);
      server.off('upgrade', onUpgrade);
      for (const ws of connections.keys()) ws.terminate();
      wss.close();
    },
  };
}
