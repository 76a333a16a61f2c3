/**
 * The topology builder: a virtual internet with deterministic addresses, NATs
 * (chains of them for double NAT), LANs and hosts. It knows nothing about
 * agents or the coordinator (world.ts adds those on top).
 *
 * Addresses, in the benchmarking range 198.18.0.0/15 (RFC 2544) for the internet:
 *   hosts on the internet            198.18.0.10 … 198.18.127.255
 *   LANs of `none` routers           198.18.128.0/24 … 198.18.255.0/24 (public addresses inside)
 *   NAT / router outside addresses   198.19.0.10 … 198.19.255.255
 *   LANs behind NATs                 10.a.b.0/24, one per LAN, hosts .10 onwards
 *   LANs behind a carrier NAT        100.64.0.0/10 (RFC 6598), one /24 per LAN
 * Everything is numbered in creation order, so the same build gives the same addresses.
 */
import { VirtualClock } from './clock.js';
import { CGNAT_CARRIER, CGNAT_HOME, natBehaviour, type NatBehaviour, type NatPreset } from './nat.js';
import { SeededRandom } from './random.js';
import { SimHost, SimNat, SimNetwork, type LinkQuality, type Segment } from './net.js';

/** A trans-continental-ish path: 15 ms one way, up to 4 ms of jitter, no loss. */
export const INTERNET_LINK_DEFAULT: LinkQuality = { latencyMs: 15, jitterMs: 4, loss: 0 };
/** A switched LAN: 1 ms, steady. */
export const LAN_LINK_DEFAULT: LinkQuality = { latencyMs: 1, jitterMs: 0, loss: 0 };

/** Hosts per LAN: .10 to .254 (below .10 is left for routers and servers, as at home). */
const LAN_FIRST_HOST = 10;
const LAN_LAST_HOST = 254;

export interface TopologyOptions {
  seed: number;
  internet?: Partial<LinkQuality>;
  /** Default link of every LAN. */
  lan?: Partial<LinkQuality>;
  /** Let promises settle after each instant (default true: needed when agents run). */
  settle?: boolean;
}

/** A preset name, `cgnat` (a home NAT behind a carrier NAT), or a behaviour of one's own. */
export type NatSpec = NatPreset | 'cgnat' | NatBehaviour;

export interface NatOptions extends Partial<Omit<NatBehaviour, 'kind'>> {
  name?: string;
  /** Put this NAT behind another (its outside is that NAT's LAN): NAT chains, double NAT. */
  behind?: SimNat;
  /** Link of its first LAN. */
  lan?: Partial<LinkQuality>;
  /** Number its LANs from the carrier-grade range 100.64.0.0/10, as an ISP's NAT does. */
  carrierSpace?: boolean;
  /** For `cgnat`: the carrier NAT to sit behind (default: a new one for this home). */
  carrier?: SimNat;
}

export interface HostOptions {
  /** Which of the gateway's LANs (default its first); when given, `behind` may be omitted. */
  lan?: Segment;
}

interface LanInfo {
  prefix: string;
  next: number;
}

export class Topology {
  readonly clock: VirtualClock;
  readonly random: SeededRandom;
  readonly net: SimNetwork;
  readonly hosts: SimHost[] = [];
  readonly nats: SimNat[] = [];
  /** Separate streams, so changing one concern's draws leaves the others' alone. */
  protected readonly natRandom: SeededRandom;
  private readonly lanLink: LinkQuality;
  private readonly lanInfo = new Map<Segment, LanInfo>();
  private readonly carriers = new WeakSet<SimNat>();
  private nextInternetHost = 10;
  private nextOutside = 10;
  private nextRouterLan = 0;
  private nextPrivateLan = 1;
  private nextCarrierLan = 0;
  private autoName = 1;

  constructor(o: TopologyOptions) {
    const root = new SeededRandom(o.seed);
    this.random = root.fork();
    this.natRandom = root.fork();
    this.clock = new VirtualClock({ settle: o.settle ?? true });
    this.net = new SimNetwork(this.clock, root.fork(), { ...INTERNET_LINK_DEFAULT, ...o.internet });
    this.lanLink = { ...LAN_LINK_DEFAULT, ...o.lan };
  }

  /** The internet segment. */
  internet(): Segment {
    return this.net.internet;
  }

  /**
   * Adds a NAT (or router, or firewall) on the internet or behind another NAT.
   * `cgnat` returns the home NAT; its `parent` is the carrier NAT.
   * The older positional form `addNat(name, preset, behind?)` is kept for the scenarios.
   */
  addNat(spec: NatSpec, options?: NatOptions): SimNat;
  addNat(name: string, spec: NatSpec, behind?: SimNat): SimNat;
  addNat(a: NatSpec | string, b?: NatOptions | NatSpec, c?: SimNat): SimNat {
    if (typeof b === 'string' || (typeof b === 'object' && b !== null && 'kind' in b)) return this.buildNat(b as NatSpec, { name: a as string, behind: c });
    return this.buildNat(a as NatSpec, (b as NatOptions | undefined) ?? {});
  }

  private buildNat(spec: NatSpec, o: NatOptions): SimNat {
    const name = o.name ?? `nat${this.autoName++}`;
    if (spec === 'cgnat') {
      const carrier = o.carrier ?? this.buildNat(CGNAT_CARRIER, { name: `${name}-carrier`, behind: o.behind, carrierSpace: true });
      if (!this.carriers.has(carrier)) throw new RangeError(`${carrier.name} is not a carrier NAT`);
      return this.buildNat(CGNAT_HOME, { ...o, name, behind: carrier, carrier: undefined, carrierSpace: false });
    }
    const { name: _n, behind, lan, carrierSpace, carrier: _c, ...overrides } = o;
    const behaviour = natBehaviour(spec, overrides);
    const outside = behind ? behind.inside : this.net.internet;
    const nat = new SimNat(name, behaviour, this.outsideAddress(outside), outside, this.natRandom.fork());
    nat.allocateAddress = () => this.outsideAddress(outside);
    // The scenarios name their carrier NATs cgnat…; keep their 100.64/10 numbering.
    if (carrierSpace ?? name.startsWith('cgnat')) this.carriers.add(nat);
    this.nats.push(nat);
    this.addLan(nat, { link: lan });
    return nat;
  }

  /** Another LAN behind `nat` (multicast stays within each LAN; unicast is routed between them). */
  addLan(nat: SimNat, options: { name?: string; link?: Partial<LinkQuality> } = {}): Segment {
    const lan = nat.addLan(options.name ?? `${nat.name}-lan${nat.lans.length === 0 ? '' : nat.lans.length}`, { ...this.lanLink, ...options.link });
    const prefix = this.lanPrefix(nat);
    this.lanInfo.set(lan, { prefix, next: LAN_FIRST_HOST });
    if (nat.behaviour.kind === 'router') {
      // Announce up through every router above, so the prefix is reachable from where NAT stops.
      for (let r: SimNat | undefined = nat; r !== undefined && r.behaviour.kind === 'router'; r = r.parent) r.announce(prefix);
    }
    return lan;
  }

  /** Adds a host on the internet, or behind a NAT (on its first LAN, or `options.lan`). */
  addHost(name: string, behind?: SimNat | 'internet', options: HostOptions = {}): SimHost {
    const host = new SimHost(name, this.net);
    this.attach(host, behind, options);
    this.hosts.push(host);
    return host;
  }

  /** Gives a host one more interface (a laptop on Wi-Fi and Ethernet); returns its address. */
  attach(host: SimHost, behind?: SimNat | 'internet', options: HostOptions & { primary?: boolean } = {}): string {
    const seg = this.segmentFor(behind, options.lan);
    const address = seg === this.net.internet ? this.internetHostAddress() : this.lanHostAddress(seg);
    host.attach(seg, address, { primary: options.primary });
    return address;
  }

  /**
   * Roaming: unplugs the host's default interface and plugs it in behind
   * `to` (or on the internet) with a new address. Its sockets stay bound.
   */
  moveHost(host: SimHost, to?: SimNat | 'internet', options: HostOptions = {}): string {
    if (host.interfaces.length > 0) host.detach();
    return this.attach(host, to, { ...options, primary: true });
  }

  /** The NAT gets a new public address; its mappings die with the old one. */
  renumberNat(nat: SimNat): string {
    return nat.changePublicAddress();
  }

  private segmentFor(behind: SimNat | 'internet' | undefined, lan: Segment | undefined): Segment {
    if (lan !== undefined) {
      if (lan.gateway === undefined || (behind !== undefined && behind !== 'internet' && lan.gateway !== behind)) {
        throw new RangeError(`${lan.name} is not a LAN of ${behind === undefined || behind === 'internet' ? 'a gateway' : behind.name}`);
      }
      return lan;
    }
    return behind === undefined || behind === 'internet' ? this.net.internet : behind.inside;
  }

  private internetHostAddress(): string {
    const n = this.nextInternetHost++;
    if (n >= 128 * 256) throw new RangeError('out of internet host addresses');
    return `198.18.${n >> 8}.${n & 255}`;
  }

  /** A gateway's outside address: public on the internet, else the next host address on the LAN above. */
  private outsideAddress(outside: Segment): string {
    if (outside !== this.net.internet) return this.lanHostAddress(outside);
    const n = this.nextOutside++;
    if (n >= 256 * 256) throw new RangeError('out of public NAT addresses');
    return `198.19.${n >> 8}.${n & 255}`;
  }

  private lanPrefix(nat: SimNat): string {
    if (nat.behaviour.kind === 'router' && nat.outside === this.net.internet) {
      const k = this.nextRouterLan++;
      if (k >= 128) throw new RangeError('out of public router LANs');
      return `198.18.${128 + k}`;
    }
    if (this.carriers.has(nat)) {
      const k = this.nextCarrierLan++;
      if (k >= 64 * 256) throw new RangeError('out of carrier LANs');
      return `100.${64 + (k >> 8)}.${k & 255}`;
    }
    const k = this.nextPrivateLan++;
    if (k >= 256 * 256) throw new RangeError('out of private LANs');
    return `10.${k >> 8}.${k & 255}`;
  }

  private lanHostAddress(lan: Segment): string {
    const info = this.lanInfo.get(lan);
    if (info === undefined) throw new RangeError(`${lan.name} was not made by this topology`);
    if (info.next > LAN_LAST_HOST) throw new RangeError(`${lan.name} is full (${LAN_LAST_HOST - LAN_FIRST_HOST + 1} hosts)`);
    return `${info.prefix}.${info.next++}`;
  }
}
