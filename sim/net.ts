/**
 * The simulator's network: moves packets between hosts' virtual UDP sockets
 * (host.ts) across segments (segment.ts: the internet, LANs) and through the
 * gateways joining a LAN to the segment above it (gateway.ts: NATs, routers,
 * firewalls; their RFC 4787 models in nat.ts). It also counts every packet
 * sent, delivered and dropped, by reason.
 *
 * A packet moves hop by hop, each hop a clock event:
 *
 *   socket.send ─► put on the sender's segment (loss, latency + seeded jitter)
 *        ─► arrives: a host on this segment owns the address?  deliver to its socket
 *                    a gateway's outside address (or routed prefix)?  gateway.fromOutside
 *                    otherwise, up through this segment's gateway      gateway.fromInside
 *        ─► the gateway translates/filters *when the packet reaches it* and
 *           puts it on the next segment, and so on (at most MAX_HOPS).
 *
 * Evaluating NAT state at arrival time matters: two pings that cross on the
 * internet each find the other side's mapping already open, as in a real
 * simultaneous open. Jitter reorders packets. Multicast is delivered to every
 * socket on the sender's segment that joined the group and never passes a
 * gateway; the internet segment carries no multicast at all.
 *
 * IPv4 only. Addresses are assigned by topology.ts; this file only routes.
 */
import type { UdpEndpoint } from '../shared/udp.js';
import type { VirtualClock } from './clock.js';
import type { SimNat } from './gateway.js';
import { SimHost, type VirtualUdpSocket } from './host.js';
import type { SeededRandom } from './random.js';
import { isMulticastV4, Segment, type HostInterface, type LinkQuality } from './segment.js';

// One import site for the whole network model.
export { SimNat } from './gateway.js';
export { EPHEMERAL_PORT_MAX, EPHEMERAL_PORT_MIN, SimHost, VirtualUdpSocket, type BindOptions } from './host.js';
export { isMulticastV4, prefix24, Segment, type HostInterface, type LinkQuality } from './segment.js';

export type DropReason =
  | 'loss' // the link lost it
  | 'no-route' // nobody owns the address (or the host is unplugged)
  | 'no-socket' // the host has no socket on that port
  | 'nat-filtered' // no live mapping, or the mapping's filter refused the source
  | 'nat-blocked' // a UDP-blocking firewall
  | 'hairpin' // to the NAT's own public address from inside, and it does not hairpin
  | 'multicast-scope' // multicast sent on the internet
  | 'socket-closed' // sent on a closed socket
  | 'too-big' // larger than a UDP datagram can be
  | 'ttl'; // looped through more gateways than any real path has

export const DROP_REASONS: readonly DropReason[] = ['loss', 'no-route', 'no-socket', 'nat-filtered', 'nat-blocked', 'hairpin', 'multicast-scope', 'socket-closed', 'too-big', 'ttl'];

/** The largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP). */
export const UDP_MAX_PAYLOAD = 65507;
/** More gateways than any real path crosses: a routing loop. */
const MAX_HOPS = 16;

interface Packet {
  data: Uint8Array;
  src: UdpEndpoint;
  dst: UdpEndpoint;
  /** The segment it is crossing; undefined for a host talking to itself. */
  seg: Segment | undefined;
  /** For a local packet: the host it stays on. */
  local: SimHost | undefined;
  multicast: boolean;
  /** Put on a LAN by its gateway: it is for someone on that LAN and never goes back up. */
  down: boolean;
  hops: number;
  /** IP TTL: each gateway that forwards the packet takes one; at 1 it dies there (after refreshing the mapping it matched). */
  ttl: number;
}

/** A datagram's TTL unless the sender sets one (Linux's default). */
export const DEFAULT_TTL = 64;

export interface NetCounters {
  /** Packets handed to sockets' send. */
  sent: number;
  /** Packets handed to a receiving socket (a multicast packet counts once per receiver). */
  delivered: number;
  dropped: Record<DropReason, number>;
}

export class SimNetwork {
  readonly internet: Segment;
  readonly counters: NetCounters;
  /** Optional taps for traces: tests compare traces across seeds. */
  onDeliver?: (at: number, from: string, to: string, bytes: number) => void;
  onDrop?: (at: number, reason: DropReason, from: string, to: string) => void;

  constructor(readonly clock: VirtualClock, readonly random: SeededRandom, internetLink: LinkQuality) {
    this.internet = new Segment('internet', { ...internetLink }, undefined, false);
    const dropped = {} as Record<DropReason, number>;
    for (const r of DROP_REASONS) dropped[r] = 0;
    this.counters = { sent: 0, delivered: 0, dropped };
  }

  /** A socket sends: pick the interface, stamp the source, put the packet on the wire. */
  send(s: VirtualUdpSocket, data: Uint8Array, to: UdpEndpoint, ttl = DEFAULT_TTL): void {
    const host = s.host;
    const dst: UdpEndpoint = { address: to.address, port: to.port };
    if (s.closed) return this.drop('socket-closed', undefined, dst);
    this.counters.sent++;
    if (data.length > UDP_MAX_PAYLOAD) return this.drop('too-big', undefined, dst);
    const bytes = data.slice(); // the sender may reuse its buffer
    if (isMulticastV4(dst.address)) return this.sendMulticast(s, bytes, dst);
    if (dst.address.startsWith('127.') || host.interfaces.some((i) => i.address === dst.address)) {
      // Loopback: the packet never leaves the host.
      const src = { address: dst.address.startsWith('127.') ? '127.0.0.1' : dst.address, port: s.port };
      const p: Packet = { data: bytes, src, dst, seg: undefined, local: host, multicast: false, down: false, hops: 0, ttl };
      this.clock.callLater(0, this.arrive, p);
      return;
    }
    const iface = this.route(s, dst.address);
    if (iface === undefined) return this.drop('no-route', undefined, dst);
    this.put(iface.segment, { data: bytes, src: { address: iface.address, port: s.port }, dst, seg: undefined, local: undefined, multicast: false, down: false, hops: 0, ttl });
  }

  /**
   * The interface a packet from `s` to `address` leaves by: the bound address's,
   * else a LAN the address is on, else the default. (The internet segment stands
   * for every link beyond the access network, so being on it says nothing about
   * which interface reaches an address.)
   */
  private route(s: VirtualUdpSocket, address: string): HostInterface | undefined {
    const ifs = s.host.interfaces;
    if (s.boundAddress !== undefined) return ifs.find((i) => i.address === s.boundAddress);
    if (ifs.length > 1) for (const i of ifs) if (i.segment.gateway !== undefined && i.segment.lookup(address) !== undefined) return i;
    return ifs[0];
  }

  private sendMulticast(s: VirtualUdpSocket, bytes: Uint8Array, dst: UdpEndpoint): void {
    const ifs = s.host.interfaces;
    const want = s.multicastInterface ?? s.boundAddress;
    const iface = want !== undefined ? ifs.find((i) => i.address === want) : ifs[0];
    if (iface === undefined) return this.drop('no-route', undefined, dst);
    if (!iface.segment.multicast) return this.drop('multicast-scope', undefined, dst);
    this.put(iface.segment, { data: bytes, src: { address: iface.address, port: s.port }, dst, seg: undefined, local: undefined, multicast: true, down: false, hops: 0, ttl: 1 });
  }

  /** Puts a packet on a segment: lost, or scheduled to arrive after the link's delay. */
  private put(seg: Segment, p: Packet): void {
    if (++p.hops > MAX_HOPS) return this.drop('ttl', p.src, p.dst);
    const link = seg.link;
    if (link.loss > 0 && this.random.float() < link.loss) return this.drop('loss', p.src, p.dst);
    p.seg = seg;
    this.clock.callLater(link.jitterMs > 0 ? link.latencyMs + Math.floor(this.random.float() * (link.jitterMs + 1)) : link.latencyMs, this.arrive, p);
  }

  /** A packet reaches the far side of its segment (bound once: every hop's event calls it). */
  private readonly arrive = (p: Packet): void => {
    if (p.local !== undefined) return this.deliverTo(p.local, p);
    const seg = p.seg!;
    if (p.multicast) return this.deliverMulticast(seg, p);
    const node = seg.lookup(p.dst.address);
    if (node instanceof SimHost) return this.deliverTo(node, p);
    if (node !== undefined) return this.fromOutside(node, p);
    // Nobody here has the address: a packet from this LAN goes up to the gateway; one the
    // gateway sent down finds nobody (the host left) and is lost, as when ARP goes unanswered.
    if (seg.gateway !== undefined && !p.down) return this.fromInside(seg.gateway, seg, p);
    this.drop('no-route', p.src, p.dst);
  };

  private deliverTo(host: SimHost, p: Packet): void {
    const s = host.sockets.get(p.dst.port);
    if (s === undefined || (s.boundAddress !== undefined && s.boundAddress !== p.dst.address)) return this.drop('no-socket', p.src, p.dst);
    this.counters.delivered++;
    this.onDeliver?.(this.clock.now(), `${p.src.address}:${p.src.port}`, `${p.dst.address}:${p.dst.port}`, p.data.length);
    s.deliver(p.data, p.src);
  }

  private deliverMulticast(seg: Segment, p: Packet): void {
    let first = true;
    for (const [address, node] of seg.nodes) {
      if (!(node instanceof SimHost)) continue;
      const s = node.sockets.get(p.dst.port);
      // A socket bound to a unicast address hears no multicast, as on Linux.
      if (s === undefined || s.boundAddress !== undefined || !s.memberOf(p.dst.address)) continue;
      this.counters.delivered++;
      this.onDeliver?.(this.clock.now(), `${p.src.address}:${p.src.port}`, `${p.dst.address}:${p.dst.port}@${address}`, p.data.length);
      // Each receiver gets its own copy and source object, as each would from the kernel.
      s.deliver(first ? p.data : p.data.slice(), first ? p.src : { address: p.src.address, port: p.src.port });
      first = false;
    }
  }

  /** A packet from one of the gateway's LANs, for somewhere else. */
  private fromInside(gw: SimNat, from: Segment, p: Packet): void {
    const now = this.clock.now();
    if (gw.lans.length > 1) {
      const lan = gw.lanFor(p.dst.address);
      if (lan !== undefined && lan !== from) {
        p.down = true;
        return this.put(lan, p); // routed between its LANs, untranslated
      }
    }
    const kind = gw.behaviour.kind;
    if (kind === 'block-udp') return this.drop('nat-blocked', p.src, p.dst);
    if (p.ttl <= 1) {
      // Linux looks conntrack up (refreshing the flow) before the forwarding path drops the packet.
      if (kind === 'napt') gw.table.touch(p.src, p.dst, now);
      return this.drop('ttl', p.src, p.dst);
    }
    p.ttl--;
    p.down = false;
    if (kind === 'router') return this.put(gw.outside, p);
    const port = kind === 'one-to-one' ? p.src.port : gw.table.outbound(p.src, p.dst, now);
    const src = { address: gw.publicIp, port };
    if (p.dst.address === gw.publicIp) {
      // Hairpin (RFC 4787 §6): back in through the public side, seen as from the sender's public endpoint.
      if (!gw.behaviour.hairpin) return this.drop('hairpin', p.src, p.dst);
      p.src = src;
      return this.fromOutside(gw, p);
    }
    p.src = src;
    this.put(gw.outside, p);
  }

  /** A packet reaching the gateway from outside (or hairpinned): translate, filter, pass down. */
  private fromOutside(gw: SimNat, p: Packet): void {
    const kind = gw.behaviour.kind;
    if (kind === 'block-udp') return this.drop('nat-blocked', p.src, p.dst);
    let dst = p.dst;
    if (kind === 'one-to-one') {
      const inner = dst.address === gw.publicIp ? gw.oneToOneInner() : undefined;
      if (inner === undefined) return this.drop('no-route', p.src, p.dst);
      dst = { address: inner, port: dst.port };
    } else if (kind === 'napt') {
      if (dst.address !== gw.publicIp) return this.drop('no-route', p.src, p.dst);
      const inner = gw.table.inbound(p.src, dst.port, this.clock.now());
      if (inner === undefined) {
        // A router whose own stack takes unsolicited WAN packets remembers the flow (nat.ts, wanInput).
        if (gw.behaviour.wanInput === 'accept') gw.table.unsolicited(p.src, dst.port, this.clock.now());
        return this.drop('nat-filtered', p.src, p.dst);
      }
      dst = { address: inner.address, port: inner.port };
    }
    const lan = gw.lanFor(dst.address);
    if (lan === undefined) return this.drop('no-route', p.src, dst);
    p.dst = dst;
    p.down = true;
    this.put(lan, p);
  }

  private drop(reason: DropReason, src: UdpEndpoint | undefined, dst: UdpEndpoint): void {
    this.counters.dropped[reason]++;
    this.onDrop?.(this.clock.now(), reason, src === undefined ? '' : `${src.address}:${src.port}`, `${dst.address}:${dst.port}`);
  }
}
