/**
 * The production control transport: a WebSocket (package ws) per connection.
 */
import WebSocket from 'ws';
import { MAX_SERVER_FRAME_BYTES } from '../../shared/wire/control.js';
import type { ControlConnection, ControlTransport, ControlTransportHandlers } from './client.js';

/**
 * The agent pings the coordinator too: a TCP connection whose path died (the host
 * roamed, a NAT forgot it) never errors by itself, and an agent that doesn't know
 * its control channel is dead stops telling peers where it is.
 */
export const CLIENT_PING_INTERVAL_MS = 10_000;

export const wsTransport: ControlTransport = {
  open(url: string, h: ControlTransportHandlers): ControlConnection {
    const ws = new WebSocket(url, { maxPayload: MAX_SERVER_FRAME_BYTES, handshakeTimeout: 10_000 });
    let closed = false;
    let alive = true;
    const pinger = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (!alive) {
        ws.terminate();
        return closeOnce(1006, 'the coordinator stopped answering pings');
      }
      alive = false;
      ws.ping();
    }, CLIENT_PING_INTERVAL_MS);
    pinger.unref();
    const closeOnce = (code: number, reason: string) => {
      clearInterval(pinger);
      if (closed) return;
      closed = true;
      h.onClose(code, reason);
    };
    ws.on('pong', () => { alive = true; });
    ws.on('message', () => { alive = true; });
    ws.on('open', () => h.onOpen());
    ws.on('message', (data, isBinary) => {
      if (isBinary) return closeOnce(4400, 'binary frame');
      h.onMessage(data.toString());
    });
    ws.on('close', (code, reason) => closeOnce(code, reason.toString()));
    ws.on('error', (err) => closeOnce(1006, err.message));
    return {
      send: (text) => { if (ws.readyState === WebSocket.OPEN) ws.send(text); },
      close: (code = 1000, reason = '') => {
        closed = true;
        clearInterval(pinger);
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        else ws.close(code, reason);
      },
    };
  },
};
