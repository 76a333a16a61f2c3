/**
 * The production control transport: a WebSocket (package ws) per connection.
 */
import WebSocket from 'ws';
import { MAX_SERVER_FRAME_BYTES } from '../../shared/wire/control.js';
import type { ControlConnection, ControlTransport, ControlTransportHandlers } from './client.js';

export const wsTransport: ControlTransport = {
  open(url: string, h: ControlTransportHandlers): ControlConnection {
    const ws = new WebSocket(url, { maxPayload: MAX_SERVER_FRAME_BYTES, handshakeTimeout: 10_000 });
    let closed = false;
    const closeOnce = (code: number, reason: string) => {
      if (closed) return;
      closed = true;
      h.onClose(code, reason);
    };
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
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        else ws.close(code, reason);
      },
    };
  },
};
