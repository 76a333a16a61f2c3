/**
 * The control channel's WebSocket shell: upgrades GET /v1/control on the
 * fastify server's socket, adapts each ws connection to a hub session, and
 * keeps liveness with protocol-level pings (a peer that misses one is cut
 * off, which is what marks a node offline).
 */
import type { Server } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { MAX_FRAME_BYTES } from '../../shared/wire/control.js';
import type { ControlHub } from './hub.js';

/** Ping interval; a connection that has not answered the previous ping by the next one is dead. */
export const WS_PING_INTERVAL_MS = 15_000;

export function attachControlWebSocket(server: Server, hub: ControlHub): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  const alive = new WeakMap<WebSocket, boolean>();

  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v1/control') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
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
        if (isBinary) return session.receive('\u0000binary'); // not JSON: the hub answers 4400
        session.receive(data.toString());
      });
      ws.on('pong', () => alive.set(ws, true));
      ws.on('close', () => session.closed());
      ws.on('error', () => session.closed()); // e.g. a frame over maxPayload (ws closes with 1009)
    });
  });

  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.get(ws)) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, WS_PING_INTERVAL_MS);
  pinger.unref();

  return {
    close() {
      clearInterval(pinger);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
