/**
 * The control channel's WebSocket shell: upgrades GET /v1/control on the
 * fastify server's socket, adapts each ws connection to a hub session, and
 * keeps liveness with protocol-level pings (a peer that misses one is cut
 * off, which is what marks a node offline). Everything about the protocol
 * lives in the hub; this file only moves frames and closes sockets.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.js';
import { MAX_FRAME_BYTES } from '../../shared/wire/control.js';
import type { ControlHub } from './hub.js';

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

export function attachControlWebSocket(server: Server, hub: ControlHub, options: ControlWebSocketOptions = {}): { close(): void } {
  const clock = options.clock ?? systemClock;
  const interval = options.pingIntervalMs ?? WS_PING_INTERVAL_MS;
  // maxPayload makes ws refuse an oversized frame itself (close 1009) before we see a byte of it.
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  const alive = new WeakMap<WebSocket, boolean>();
  let closed = false;

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v1/control' || closed) {
      socket.end(`HTTP/1.1 ${closed ? '503 Service Unavailable' : '404 Not Found'}\r\nConnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      alive.set(ws, true);
      const session = hub.connect({
        send: (text) => { if (ws.readyState === ws.OPEN) ws.send(text); },
        close: (code, reason) => ws.close(code, reason),
        remoteAddress: req.socket.remoteAddress ?? '',
      });
      ws.on('message', (data, isBinary) => {
        alive.set(ws, true);
        if (isBinary) return session.receive('\u0000binary'); // not JSON: the hub answers 4400
        session.receive(data.toString());
      });
      ws.on('pong', () => alive.set(ws, true));
      ws.on('close', () => session.closed());
      ws.on('error', () => session.closed()); // e.g. a frame over maxPayload (ws closes with 1009)
    });
  };
  server.on('upgrade', onUpgrade);

  let timer: TimerHandle | undefined;
  const pingAll = () => {
    timer = undefined;
    if (closed) return;
    for (const ws of wss.clients) {
      if (!alive.get(ws)) {
        ws.terminate(); // emits 'close': the hub marks the node offline
        continue;
      }
      alive.set(ws, false);
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
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
