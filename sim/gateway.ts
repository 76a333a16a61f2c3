/**
 * Gateways between a LAN and the segment outside it: a NAT (RFC 4787 models
 * from nat.ts), a plain router, or a UDP-blocking firewall, as the
 * behaviour's `kind` says. This file holds a gateway's state (addresses,
 * LANs, mapping table); net.ts applies it to packets as they arrive.
 */
import { NatTable, natBehaviour, type NatBehaviour } from './nat.js';
import type { SeededRandom } from './random.js';
import { SimHost } from './host.js';
import { Segment, type LinkQuality } from './segment.js';

/** One gateway (named SimNat because most are NATs). */
export class SimNat {
  readonly behaviour: NatBehaviour;
  /** The RFC 4787 mapping table (empty unless kind is `napt`). */
  readonly table: NatTable;
  readonly lans: Segment[] = [];
  /** For a 1:1 NAT: the inside address that owns the public one (default: the first host on the first LAN). */
  oneToOneAddress?: string;
  /** Supplies a new outside address for changePublicAddress (the topology sets it). */
  allocateAddress?: () => string;

  constructor(
    readonly name: string,
    behaviour: NatBehaviour,
    private address: string,
    /** The segment the gateway's outside interface is on. */
    readonly outside: Segment,
    random: SeededRandom,
  ) {
    this.behaviour = natBehaviour(behaviour);
    this.table = new NatTable(this.behaviour, random);
    if (outside.nodes.has(address)) throw new RangeError(`${outside.name}: ${address} is already in use`);
    outside.nodes.set(address, this);
  }

  /** The outside address: what hosts behind a NAT appear as. */
  get publicIp(): string {
    return this.address;
  }

  /** The first LAN (most gateways have just one). */
  get inside(): Segment {
    const lan = this.lans[0];
    if (lan === undefined) throw new RangeError(`${this.name} has no LAN`);
    return lan;
  }

  /** The gateway this one sits behind (a carrier NAT in front of a home NAT), if any. */
  get parent(): SimNat | undefined {
    return this.outside.gateway;
  }

  /** A new LAN segment behind this gateway. */
  addLan(name: string, link: LinkQuality): Segment {
    const lan = new Segment(name, { ...link }, this);
    this.lans.push(lan);
    return lan;
  }

  /** Routers only: tells the outside segment to send `prefix` ("a.b.c", a /24) here. */
  announce(prefix: string): void {
    if (this.behaviour.kind !== 'router') throw new RangeError(`${this.name}: only a router announces prefixes`);
    this.outside.routes.set(prefix, this);
  }

  /**
   * The ISP hands out another address: every mapping dies with the old one
   * (hosts behind keep theirs and learn it only from their peers or STUN).
   */
  changePublicAddress(address?: string): string {
    const next = address ?? this.allocateAddress?.();
    if (next === undefined) throw new RangeError(`${this.name}: no address allocator; pass the new address`);
    if (this.outside.nodes.has(next)) throw new RangeError(`${this.outside.name}: ${next} is already in use`);
    this.outside.nodes.delete(this.address);
    this.address = next;
    this.outside.nodes.set(next, this);
    this.table.expireAll();
    return next;
  }

  /** Forgets every mapping at once (a reboot, or every mapping timing out together). */
  expireAll(): void {
    this.table.expireAll();
  }

  /** The LAN of this gateway on which `address` lives, if any. */
  lanFor(address: string): Segment | undefined {
    for (const lan of this.lans) if (lan.lookup(address) !== undefined) return lan;
    return undefined;
  }

  /** Where a 1:1 NAT sends everything addressed to its public address. */
  oneToOneInner(): string | undefined {
    if (this.oneToOneAddress !== undefined) return this.oneToOneAddress;
    const lan = this.lans[0];
    if (lan === undefined) return undefined;
    for (const [ip, n] of lan.nodes) if (n instanceof SimHost) return ip;
    return undefined;
  }
}
