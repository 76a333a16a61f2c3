/**
 * Simulated machines and their virtual UDP sockets. A SimHost has one or
 * more interfaces (the first is its default route) and binds sockets by
 * port; a VirtualUdpSocket implements the shared/udp.ts seam the agent uses,
 * plus multicast membership for LAN discovery. Sending hands the packet to
 * the network (net.ts), which does all routing and timing.
 */
import type { UdpEndpoint, UdpMessageHandler, UdpSocket, UdpSendOptions } from '../shared/udp.js';
import type { SimNetwork } from './net.js';
import { isMulticastV4, type HostInterface, type Segment } from './segment.js';

/** Ephemeral ports, as IANA (and Windows, macOS) assign them. */
export const EPHEMERAL_PORT_MIN = 49152;
export const EPHEMERAL_PORT_MAX = 65535;

export interface BindOptions {
  /** Multicast groups (e.g. 224.0.0.251) the socket joins at once. */
  multicast?: string[];
  /** Bind to one of the host's addresses instead of all of them (then no multicast is received). */
  address?: string;
}

/** A machine: one or more interfaces (the first is the default route) and its UDP sockets. */
export class SimHost {
  readonly sockets = new Map<number, VirtualUdpSocket>();
  readonly interfaces: HostInterface[] = [];
  private nextEphemeral = EPHEMERAL_PORT_MIN;

  constructor(readonly name: string, readonly net: SimNetwork) {}

  /** The address of the default interface. */
  get ip(): string {
    const i = this.interfaces[0];
    if (i === undefined) throw new RangeError(`${this.name} has no interface`);
    return i.address;
  }

  /** The segment of the default interface. */
  get segment(): Segment {
    const i = this.interfaces[0];
    if (i === undefined) throw new RangeError(`${this.name} has no interface`);
    return i.segment;
  }

  /** Every interface address, default first: what the agent's interface lister reports. */
  addresses(): string[] {
    return this.interfaces.map((i) => i.address);
  }

  /** Plugs in an interface with `address` on `segment` (first = default route unless `primary` says otherwise). */
  attach(segment: Segment, address: string, options: { primary?: boolean } = {}): void {
    if (segment.nodes.has(address)) throw new RangeError(`${segment.name}: ${address} is already in use`);
    if (this.interfaces.some((i) => i.address === address)) throw new RangeError(`${this.name} already has ${address}`);
    segment.nodes.set(address, this);
    const iface = { address, segment };
    if (options.primary) this.interfaces.unshift(iface);
    else this.interfaces.push(iface);
  }

  /** Unplugs the interface with `address` (default: the default interface). Packets in flight to it are lost. */
  detach(address?: string): HostInterface {
    const k = address === undefined ? 0 : this.interfaces.findIndex((i) => i.address === address);
    const iface = this.interfaces[k];
    if (k < 0 || iface === undefined) throw new RangeError(`${this.name} has no interface ${address ?? ''}`);
    this.interfaces.splice(k, 1);
    if (iface.segment.nodes.get(iface.address) === this) iface.segment.nodes.delete(iface.address);
    return iface;
  }

  /** Binds a virtual UDP socket; port 0 picks the next free ephemeral port (deterministically). */
  bindUdp(port = 0, options: BindOptions = {}): VirtualUdpSocket {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`${this.name}: bad port ${port}`);
    if (options.address !== undefined && !this.interfaces.some((i) => i.address === options.address)) {
      throw new RangeError(`${this.name}: cannot bind ${options.address}, not one of its addresses`);
    }
    let p = port;
    if (p === 0) p = this.ephemeralPort();
    else if (this.sockets.has(p)) throw new RangeError(`${this.name}: port ${p} is in use`);
    const s = new VirtualUdpSocket(this, p, options.address);
    for (const g of options.multicast ?? []) s.addMembership(g);
    this.sockets.set(p, s);
    return s;
  }

  private ephemeralPort(): number {
    const span = EPHEMERAL_PORT_MAX - EPHEMERAL_PORT_MIN + 1;
    for (let i = 0; i < span; i++) {
      const p = this.nextEphemeral;
      this.nextEphemeral = p >= EPHEMERAL_PORT_MAX ? EPHEMERAL_PORT_MIN : p + 1;
      if (!this.sockets.has(p)) return p;
    }
    throw new RangeError(`${this.name}: no free ephemeral port`);
  }
}

/** A virtual UDP socket bound to (host, port): the shared/udp.ts seam, plus multicast membership. */
export class VirtualUdpSocket implements UdpSocket {
  private readonly handlers: UdpMessageHandler[] = [];
  private readonly groups = new Set<string>();
  private mcastIface?: string;
  closed = false;

  constructor(readonly host: SimHost, readonly port: number, readonly boundAddress?: string) {}

  send(data: Uint8Array, to: UdpEndpoint, options?: UdpSendOptions): void {
    if (!(data instanceof Uint8Array)) throw new TypeError('send: data must be a Uint8Array');
    if (to === null || typeof to !== 'object' || typeof to.address !== 'string') throw new TypeError('send: bad destination');
    // node:dgram throws on a bad port too (ERR_SOCKET_BAD_PORT).
    if (!Number.isInteger(to.port) || to.port < 1 || to.port > 65535) throw new RangeError(`send: bad port ${String(to.port)}`);
    this.host.net.send(this, data, to, options?.ttl);
  }

  onMessage(h: UdpMessageHandler): void {
    this.handlers.push(h);
  }

  localPort(): number {
    return this.port;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.host.sockets.get(this.port) === this) this.host.sockets.delete(this.port);
  }

  /** Joins a multicast group (as IP_ADD_MEMBERSHIP): packets to group:port on this host's LANs arrive here. */
  addMembership(group: string): void {
    if (!isMulticastV4(group)) throw new RangeError(`addMembership: ${group} is not an IPv4 multicast address`);
    this.groups.add(group);
  }

  dropMembership(group: string): void {
    this.groups.delete(group);
  }

  memberOf(group: string): boolean {
    return this.groups.has(group);
  }

  /** The interface multicast goes out on (as IP_MULTICAST_IF); default: the host's default interface. */
  setMulticastInterface(address: string): void {
    if (!this.host.interfaces.some((i) => i.address === address)) throw new RangeError(`setMulticastInterface: ${address} is not on ${this.host.name}`);
    this.mcastIface = address;
  }

  get multicastInterface(): string | undefined {
    return this.mcastIface;
  }

  /** Called by the network when a packet arrives. */
  deliver(data: Uint8Array, from: UdpEndpoint): void {
    for (const h of this.handlers) h(data, from);
  }
}
