/**
 * The production UdpSocket (shared/udp.ts) on node:dgram: one IPv4 socket and,
 * where the host has IPv6, an IPv6-only socket on the same port, so a single
 * tunnel port serves both families the way wireguard-go's bind does.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { normalizeIp } from '../../shared/net/addr.js';
import type { UdpEndpoint, UdpMessageHandler, UdpSendOptions, UdpSocket } from '../../shared/udp.js';

/** Linux's default IP TTL (net.ipv4.ip_default_ttl), put back after a datagram sent with its own. */
const DEFAULT_TTL = 64;

function bind(sock: Socket, port: number, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ port, address: host, exclusive: true }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
}

export async function openUdpSocket(options: { port: number; host?: string; ipv6?: boolean }): Promise<UdpSocket> {
  const v4 = createSocket({ type: 'udp4' });
  await bind(v4, options.port, options.host);
  const port = v4.address().port;
  let v6: Socket | undefined;
  if (options.ipv6 !== false && !options.host) {
    const s = createSocket({ type: 'udp6', ipv6Only: true });
    try {
      await bind(s, port);
      v6 = s;
    } catch {
      s.close(); // no IPv6 on this host (or the port is taken for v6): v4 alone is fine
    }
  }
  const handlers: UdpMessageHandler[] = [];
  const ttlState = new Map<Socket, { pending: number }>();
  const deliver = (msg: Buffer, rinfo: { address: string; port: number }) => {
    const from = { address: normalizeIp(rinfo.address.replace(/%.*$/, '')), port: rinfo.port };
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    for (const h of handlers) h(bytes, from);
  };
  // Send errors (EHOSTUNREACH after a roam, ENETUNREACH) are normal on a moving host: the
  // path machinery notices the silence; nothing to do per packet.
  const ignore = () => {};
  v4.on('message', deliver).on('error', ignore);
  v6?.on('message', deliver).on('error', ignore);
  return {
    send(data: Uint8Array, to: UdpEndpoint, options?: UdpSendOptions) {
      const sock = isIPv4(to.address) ? v4 : v6;
      if (!sock) return;
      if (options?.ttl === undefined) return void sock.send(data, to.port, to.address, ignore);
      // The TTL is the socket's: set for this datagram, restored once the last such send is done.
      // A datagram sent meanwhile leaves with it too (a few ms, every few seconds at most).
      const state = ttlState.get(sock) ?? { pending: 0 };
      ttlState.set(sock, state);
      try { sock.setTTL(options.ttl); } catch { return; }
      state.pending++;
      sock.send(data, to.port, to.address, () => {
        if (--state.pending === 0) try { sock.setTTL(DEFAULT_TTL); } catch { /* closed */ }
      });
    },
    onMessage(h) { handlers.push(h); },
    localPort: () => port,
    close() {
      try { v4.close(); } catch { /* closed */ }
      try { v6?.close(); } catch { /* closed */ }
    },
  };
}
