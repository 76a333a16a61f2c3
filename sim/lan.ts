/**
 * The simulator's LAN transport for agent/lan: one virtual socket on the
 * mDNS port of a SimHost, joined to 224.0.0.251, sending out of whichever
 * interface a packet is for. Packets are real DNS bytes (dns-packet, as
 * multicast-dns uses), so the sim exercises the same encoding and decoding
 * as production; the segments decide who hears them (LANs carry multicast,
 * the internet doesn't, gateways never forward it).
 */
import dnsPacket, { type Packet } from 'dns-packet';
import type { LanInterface } from '../agent/lan/core.js';
import type { LanTransport } from '../agent/lan/discovery.js';
import { decodeDatagram } from '../agent/lan/records.js';
import { MDNS_PORT } from '../agent/lan/mdns-transport.js';
import type { SimHost } from './host.js';

const MDNS_GROUP = '224.0.0.251';

export function createSimLanTransport(host: SimHost): LanTransport {
  const socket = host.bindUdp(MDNS_PORT, { multicast: [MDNS_GROUP] });
  let handler: (from: string, packet: Packet | undefined) => void = () => {};
  socket.onMessage((bytes, from) => handler(from.address, decodeDatagram(bytes)));
  return {
    setInterfaces() {}, // one socket hears every LAN the host is on
    send(iface: LanInterface, packet: Packet) {
      if (!host.interfaces.some((i) => i.address === iface.address)) return; // unplugged meanwhile
      socket.setMulticastInterface(iface.address);
      socket.send(new Uint8Array(dnsPacket.encode(packet)), { address: MDNS_GROUP, port: MDNS_PORT });
    },
    onPacket(h) { handler = h; },
    async close() { socket.close(); },
  };
}

/** The host's interfaces as LAN links (the sim numbers every LAN as a /24). */
export function simLanInterfaces(host: SimHost): LanInterface[] {
  return host.interfaces.filter((i) => i.segment.multicast).map((i, n) => ({ name: `eth${n}`, address: i.address, prefixLen: 24 }));
}
