/**
 * The production LAN transport: one `multicast-dns` socket per chosen link,
 * joined to 224.0.0.251 on that link's address and sending out of it, so
 * nothing is ever multicast on a link the user didn't allow. Plus the
 * interface selection (`--lan-interfaces`), over `os.networkInterfaces()`.
 *
 * Linux delivers a group's packets to every socket bound to the port
 * (IP_MULTICAST_ALL), whichever link they arrived on; each socket therefore
 * passes on only packets whose source is on its own link, so each packet is
 * seen once.
 */
import { createSocket } from 'node:dgram';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import makeMdns from 'multicast-dns';
import type { Packet } from 'dns-packet';
import { parseIpv4Prefix, prefixContains } from '../../shared/net/cidr.js';
import { isLoopbackIp } from '../../shared/net/addr.js';
import type { Logger } from '../../shared/log.js';
import type { LanInterface } from './core.js';
import { decodeDatagram } from './records.js';
import type { LanTransport } from './discovery.js';

export const MDNS_PORT = 5353;

/**
 * The IPv4 links to use. With an allow-list only those interfaces (loopback too, when
 * named: that is how tests keep mDNS on loopback); without one every non-internal IPv4
 * interface. `exclude` wins: the tunnel's own interface is never a LAN.
 */
export function selectLanInterfaces(table: NodeJS.Dict<NetworkInterfaceInfo[]>, allow?: readonly string[], exclude: readonly string[] = []): LanInterface[] {
  const out: LanInterface[] = [];
  for (const [name, infos] of Object.entries(table)) {
    if ((allow && !allow.includes(name)) || exclude.includes(name)) continue;
    for (const info of infos ?? []) {
      const v4 = info.family === 'IPv4' || (info.family as unknown) === 4;
      if (!v4 || ((info.internal || isLoopbackIp(info.address)) && !allow)) continue;
      const prefixLen = Number((info.cidr ?? '').split('/')[1] ?? 24);
      out.push({ name, address: info.address, prefixLen: Number.isInteger(prefixLen) ? prefixLen : 24 });
      break; // one address per link: the others are on the same wire
    }
  }
  return out;
}

export function readLanInterfaces(allow?: readonly string[], exclude?: readonly string[]): LanInterface[] {
  try {
    return selectLanInterfaces(networkInterfaces(), allow, exclude);
  } catch {
    return []; // a sandbox without getifaddrs: no LAN discovery rather than a crash
  }
}

interface Link {
  iface: LanInterface;
  mdns: makeMdns.MulticastDNS;
}

export function createMdnsTransport(options: { logger: Logger; port?: number }): LanTransport {
  const port = options.port ?? MDNS_PORT;
  const links = new Map<string, Link>(); // by address
  let handler: (from: string, packet: Packet | undefined) => void = () => {};

  function open(iface: LanInterface): Link {
    const prefix = parseIpv4Prefix(`${iface.address}/${Math.max(8, Math.min(30, iface.prefixLen))}`);
    const onLink = (address: string) => prefix !== undefined && prefixContains(prefix, address);
    // multicast-dns manages the socket (bind, membership, outgoing interface, sending); we
    // read it ourselves. Its own reader decodes every datagram before anyone can look, and
    // the decoder allocates per declared record: decodeDatagram checks the header first.
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    const mdns = makeMdns({ socket, interface: iface.address, bind: '0.0.0.0', port, loopback: true });
    socket.removeAllListeners('message');
    socket.on('message', (msg, rinfo) => {
      if (onLink(rinfo.address)) handler(rinfo.address, decodeDatagram(msg));
    });
    mdns.on('warning', (err: Error) => options.logger.debug('mdns warning', { iface: iface.name, err: err.message }));
    mdns.on('error', (err: Error) => options.logger.warn('mdns socket error', { iface: iface.name, err: err.message }));
    return { iface, mdns };
  }

  function close(l: Link): Promise<void> {
    return new Promise((resolve) => l.mdns.destroy(() => resolve()));
  }

  return {
    setInterfaces(list) {
      const want = new Set(list.map((i) => i.address));
      for (const [address, l] of links) if (!want.has(address)) { links.delete(address); void close(l); }
      for (const iface of list) if (!links.has(iface.address)) links.set(iface.address, open(iface));
    },
    send(iface, packet) {
      const l = links.get(iface.address);
      if (!l) return;
      const done = (err?: Error | null) => { if (err) options.logger.debug('mdns send failed', { iface: iface.name, err: err.message }); };
      if (packet.type === 'query') l.mdns.query(packet as makeMdns.QueryOutgoingPacket, done);
      else l.mdns.respond(packet as makeMdns.ResponseOutgoingPacket, done);
    },
    onPacket(h) { handler = h; },
    async close() {
      // multicast-dns sends after its socket is bound; a short grace lets the goodbye go out.
      await new Promise((r) => setTimeout(r, 50));
      const all = [...links.values()];
      links.clear();
      await Promise.all(all.map(close));
    },
  };
}
