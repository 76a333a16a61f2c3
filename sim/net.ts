/**
 * The simulator's network: LAN segments and the internet, hosts with virtual
 * UDP sockets (the shared/udp.ts seam the agent uses), and NAT gateways
 * between segments. Packets are clock events: each segment crossed adds its
 * latency (plus seeded jitter, which also reorders) and may lose the packet.
 * Multicast stays on the segment it was sent on, never crossing a NAT.
 *
 * Addresses (assigned by world.ts): the internet is 198.18.0.0/15 (hosts in
 * 198.18/16, NAT public addresses in 198.19/16), home LANs 10.a.b.0/24, a
 * carrier NAT's inside 100.64.0.0/10.
 */
import { formatEndpoint } from '../shared/net/addr.js';
import type { UdpEndpoint, UdpMessageHandler, UdpSocket } from '../shared/udp.js';
import type { VirtualClock } from './clock.js';
import { NatTable, type NatBehaviour } from './nat.js';
import type { SeededRandom } from './random.js';

export interface LinkQuality {
  latencyMs: number;
  jitterMs: number;
  loss: number; // probability 0..1 per packet
}

export class Segment {
  readonly nodes = new Map<string, SimHost | SimNat>(); // ip → what answers there
  constructor(
    readonly name: string,
    readonly link: LinkQuality,
    /** The NAT this segment sits behind (undefined: the internet). */
    readonly gateway?: SimNat,
  ) {}
}

export class SimHost {
  readonly sockets = new Map<number, VirtualUdpSocket>();
  constructor(readonly name: string, public ip: string, public segment: Segment, private readonly net: SimNetwork) {}

  /** Binds a virtual UDP socket (port 0 = an ephemeral port); `multicast` groups it receives. */
  bindUdp(port: number, options: { multicast?: string[] } = {}): VirtualUdpSocket {
    let p = port;
    if (p === 0) {
      p = 49152;
      while (this.sockets.has(p)) p++;
    }
    if (this.sockets.has(p)) throw new Error(`${this.name}: port ${p} in use`);
    const s = new VirtualUdpSocket(this, p, this.net, new Set(options.multicast ?? []));
    this.sockets.set(p, s);
    return s;
  }
}

export class SimNat {
  readonly table: NatTable;
  readonly inside: Segment;
  constructor(
    readonly name: string,
    public publicIp: string,
    public outside: Segment,
    behaviour: NatBehaviour,
    random: SeededRandom,
    insideLink: LinkQuality,
  ) {
    this.table = new NatTable(behaviour, random);
    this.inside = new Segment(`${name}-lan`, insideLink, this);
  }

  /** For a 1:1 NAT: the one inside host that owns the public address. */
  oneToOneHost(): string | undefined {
    for (const [ip, n] of this.inside.nodes) if (n instanceof SimHost) return ip;
    return undefined;
  }
}

export class VirtualUdpSocket implements UdpSocket {
  private handlers: UdpMessageHandler[] = [];
  closed = false;
  constructor(readonly host: SimHost, readonly port: number, private readonly net: SimNetwork, readonly groups: Set<string>) {}

  send(data: Uint8Array, to: UdpEndpoint): void {
    if (this.closed) return;
    this.net.send(this.host, this.port, to, data);
  }
  onMessage(h: UdpMessageHandler): void { this.handlers.push(h); }
  localPort(): number { return this.port; }
  close(): void {
    this.closed = true;
    this.host.sockets.delete(this.port);
  }
  deliver(data: Uint8Array, from: UdpEndpoint): void {
    if (this.closed) return;
    for (const h of this.handlers) h(data, from);
  }
}

export type DropReason = 'loss' | 'no-route' | 'nat-filtered' | 'nat-blocked' | 'no-socket' | 'hairpin';

export class SimNetwork {
  readonly internet: Segment;
  readonly counters = { sent: 0, delivered: 0, dropped: {} as Record<DropReason, number> };
  /** Optional tap for traces (tests compare traces across seeds). */
  onDeliver?: (at: number, from: string, to: string, bytes: number) => void;

  constructor(readonly clock: VirtualClock, readonly random: SeededRandom, internetLink: LinkQuality) {
    this.internet = new Segment('internet', internetLink);
  }

  private drop(reason: DropReason): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
  }

  /** Crossing a segment: adds its delay, or loses the packet. */
  private cross(seg: Segment, delay: number): number | undefined {
    if (seg.link.loss > 0 && this.random.float() < seg.link.loss) return undefined;
    return delay + seg.link.latencyMs + (seg.link.jitterMs > 0 ? this.random.float() * seg.link.jitterMs : 0);
  }

  send(host: SimHost, port: number, to: UdpEndpoint, data: Uint8Array): void {
    this.counters.sent++;
    const bytes = data.slice(); // the sender may reuse its buffer
    if (/^(22[4-9]|23\d)\./.test(to.address) || to.address.startsWith('ff')) {
      // Multicast: every socket on this segment that joined the group, never past the gateway.
      const delay = this.cross(host.segment, 0);
      if (delay === undefined) return this.drop('loss');
      for (const n of host.segment.nodes.values()) {
        if (!(n instanceof SimHost)) continue;
        const s = n.sockets.get(to.port);
        if (s && s.groups.has(to.address)) this.schedule(delay, s, bytes, { address: host.ip, port });
      }
      return;
    }
    this.route(host.segment, { address: host.ip, port }, to, bytes, 0);
  }

  /** Delivers `bytes` from `src` (as seen on `seg`) to `dst`, walking through NATs. */
  private route(seg: Segment, src: UdpEndpoint, dst: UdpEndpoint, bytes: Uint8Array, delay: number, hops = 0): void {
    if (hops > 8) return this.drop('no-route');
    const d = this.cross(seg, delay);
    if (d === undefined) return this.drop('loss');
    const node = seg.nodes.get(dst.address);
    const now = this.clock.now();
    if (node instanceof SimHost) {
      const s = node.sockets.get(dst.port);
      if (!s) return this.drop('no-socket');
      return this.schedule(d, s, bytes, src);
    }
    if (node instanceof SimNat) {
      // Inbound through a NAT (also a hairpin when the source is inside it).
      if (src.address === node.publicIp && !node.table.behaviour.hairpin) return this.drop('hairpin');
      const inner = node.table.inbound(src, dst.port, now, node.oneToOneHost());
      if (!inner) return this.drop(node.table.behaviour.blockUdp ? 'nat-blocked' : 'nat-filtered');
      return this.route(node.inside, src, inner, bytes, d, hops + 1);
    }
    const gw = seg.gateway;
    if (!gw) return this.drop('no-route');
    const publicPort = gw.table.outbound(src, dst, now);
    if (publicPort === undefined) return this.drop('nat-blocked');
    this.route(gw.outside, { address: gw.publicIp, port: publicPort }, dst, bytes, d, hops + 1);
  }

  private schedule(delay: number, s: VirtualUdpSocket, bytes: Uint8Array, from: UdpEndpoint): void {
    this.clock.setTimeout(() => {
      this.counters.delivered++;
      this.onDeliver?.(this.clock.now(), formatEndpoint(from), `${s.host.ip}:${s.port}`, bytes.length);
      s.deliver(bytes, from);
    }, delay);
  }
}
