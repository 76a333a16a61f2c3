/**
 * NAT models in RFC 4787 terms: the behaviour of one NAT box and its mapping
 * table, pure apart from the time passed in (no sockets, no clock).
 *
 *   kind       napt        a NAPT, as below (the common home and carrier NAT)
 *              one-to-one  static 1:1 NAT: the public address is the inside host's, every port, no filtering
 *              router      no NAT at all: inside hosts have public addresses and anything may reach them
 *              block-udp   a firewall that drops every UDP packet crossing it, either way
 *   mapping    (§4.1) which outbound flows share a public port:
 *              EI  endpoint-independent        one port per inner ip:port
 *              AD  address-dependent           one per inner ip:port and destination IP
 *              APD address-and-port-dependent  one per inner ip:port and destination ip:port
 *   filtering  (§5) which inbound packets a mapping admits:
 *              EI any source; AD sources whose IP the inner endpoint sent to;
 *              APD sources whose ip:port it sent to. Each such permission ages
 *              like the mapping (a conntrack entry per flow, as Linux keeps).
 *   ports      (§4.2.1) preserve the inner port when free (else sequential),
 *              sequential from a per-NAT starting point, or random
 *   timeoutMs  (§4.3) a mapping idle this long is gone: 30 s for most home
 *              routers' UDP, 120 s (RFC 4787 REQ-5's minimum), 300 s (its recommendation)
 *   refreshOnInbound (§4.3) outbound traffic always refreshes a mapping; inbound only when set
 *   hairpin    (§6) inside hosts reach each other through the public address;
 *              the receiver sees the sender's public endpoint (REQ-9)
 *   wanInput   what the box does with an unsolicited packet to its public address:
 *              drop  a home router's WAN firewall (nothing remembered)
 *              accept a plain Linux box or cloud NAT instance: its own stack takes the
 *                    packet (answering ICMP port unreachable) and conntrack keeps that
 *                    inbound flow; an inside host's later flow to the same remote that
 *                    would use the same public port clashes with it and is given another
 *                    port, as masquerade does (LAB-NOTES). The flow lives on while the
 *                    remote keeps sending, and for the timeout after.
 *
 * Double NAT is not a behaviour: it is two NATs chained in the topology (net.ts).
 */
import type { UdpEndpoint } from '../shared/udp.js';
import type { SeededRandom } from './random.js';

export type Dependence = 'EI' | 'AD' | 'APD';
export type NatKind = 'napt' | 'one-to-one' | 'router' | 'block-udp';
export type PortAssignment = 'preserve' | 'sequential' | 'random';

export interface NatBehaviour {
  kind: NatKind;
  mapping: Dependence;
  filtering: Dependence;
  ports: PortAssignment;
  timeoutMs: number;
  refreshOnInbound: boolean;
  hairpin: boolean;
  wanInput: 'drop' | 'accept';
}

/** RFC 4787 §4.3 REQ-5 lower bound, and the value it recommends. */
export const NAT_TIMEOUT_DEFAULT_MS = 30_000;
export const NAT_TIMEOUT_REQ5_MS = 120_000;
export const NAT_TIMEOUT_RECOMMENDED_MS = 300_000;

const napt = (mapping: Dependence, filtering: Dependence, ports: PortAssignment, extra: Partial<NatBehaviour> = {}): NatBehaviour => ({
  kind: 'napt', mapping, filtering, ports, timeoutMs: NAT_TIMEOUT_DEFAULT_MS, refreshOnInbound: false, hairpin: false, wanInput: 'drop', ...extra,
});

/**
 * One NAT box each. The grid's names: `none`, `easy`, `easy-ad`, `hard`,
 * `one-to-one`, `blocked`; `cgnat` (two of these chained) is built by the
 * topology (CGNAT_HOME behind CGNAT_CARRIER). The others are for tests and scenarios.
 */
export const NAT_PRESETS = {
  /** No NAT: a plain router, public addresses inside. */
  none: { ...napt('EI', 'EI', 'preserve'), kind: 'router' },
  /** Linux masquerade / most home routers: port-restricted cone. */
  easy: napt('EI', 'APD', 'preserve'),
  /** Address-restricted cone. */
  'easy-ad': napt('EI', 'AD', 'preserve'),
  /** Full cone, with hairpinning and the REQ-5 timeout. */
  'easy-ei': napt('EI', 'EI', 'preserve', { timeoutMs: NAT_TIMEOUT_REQ5_MS, hairpin: true }),
  /** Symmetric NAT with random ports: no port prediction helps. */
  hard: napt('APD', 'APD', 'random'),
  /** Symmetric NAT with sequential ports: what port prediction targets. */
  'hard-seq': napt('APD', 'APD', 'sequential'),
  /** Static 1:1 NAT (a cloud VM's elastic address). */
  'one-to-one': { ...napt('EI', 'EI', 'preserve', { timeoutMs: NAT_TIMEOUT_RECOMMENDED_MS }), kind: 'one-to-one' },
  /** A firewall that drops UDP (only the relay over TCP/WebSocket gets through). */
  blocked: { ...napt('EI', 'APD', 'preserve'), kind: 'block-udp' },
} as const satisfies Record<string, NatBehaviour>;

export type NatPreset = keyof typeof NAT_PRESETS;

/** A carrier-grade NAT (RFC 6888): endpoint-independent mapping, ports from a pool, not preserved. */
export const CGNAT_CARRIER: NatBehaviour = napt('EI', 'APD', 'sequential', { timeoutMs: NAT_TIMEOUT_REQ5_MS });
/** The home router behind it. */
export const CGNAT_HOME: NatBehaviour = NAT_PRESETS.easy;

/** Ports a NAPT hands out: above the well-known range, as Linux masquerade does. */
export const NAT_PORT_MIN = 1024;
export const NAT_PORT_MAX = 65535;

interface Mapping {
  key: string;
  inner: UdpEndpoint;
  publicPort: number;
  lastActive: number;
  /** Filtering permissions (remote IP, or ip:port) → last outbound time. Empty for EI filtering. */
  permits: Map<string, number>;
}

export interface NatCounters {
  /** Outbound packets given a public port. */
  translated: number;
  /** Inbound packets a mapping admitted. */
  admitted: number;
  /** Inbound packets dropped: no mapping, or filtering said no. */
  filtered: number;
  /** Mappings created and mappings that timed out (or were forgotten at once). */
  created: number;
  expired: number;
}

/**
 * The mapping table of one NAPT. Callers translate outbound packets with
 * `outbound` and inbound ones with `inbound`; both take `now`, and expiry is
 * evaluated lazily against it (plus a sweep when the table grows).
 */
export class NatTable {
  private readonly byKey = new Map<string, Mapping>();
  private readonly byPort = new Map<number, Mapping>();
  /** wanInput accept: inbound flows the box's own stack took, "publicPort<remote ip:port" → last packet. */
  private readonly stackFlows = new Map<string, number>();
  private nextPort: number;
  private sweepAt = 256;
  readonly counters: NatCounters = { translated: 0, admitted: 0, filtered: 0, created: 0, expired: 0 };

  constructor(readonly behaviour: NatBehaviour, private readonly random: SeededRandom) {
    checkBehaviour(behaviour);
    // Sequential NATs start somewhere of their own, as real ones do; preserve falls back to the same counter.
    this.nextPort = behaviour.ports === 'sequential' ? random.int(NAT_PORT_MIN, NAT_PORT_MAX) : NAT_PORT_MIN;
  }

  /** Live mappings (ones that timed out but were not yet swept are counted until the next sweep). */
  get size(): number {
    return this.byPort.size;
  }

  /** The public port an outbound packet leaves from; creates or refreshes its mapping. */
  outbound(inner: UdpEndpoint, dst: UdpEndpoint, now: number): number {
    const b = this.behaviour;
    let key = b.mapping === 'EI' ? `${inner.address}:${inner.port}`
      : b.mapping === 'AD' ? `${inner.address}:${inner.port}>${dst.address}`
        : `${inner.address}:${inner.port}>${dst.address}:${dst.port}`;
    // A flow that once clashed with the box's own inbound flow keeps its other port while it lives.
    const clashKey = `${inner.address}:${inner.port}>${dst.address}:${dst.port}!`;
    const clash = this.byKey.get(clashKey);
    if (clash !== undefined && this.alive(clash, now)) key = clashKey;
    let m = this.byKey.get(key);
    if (m !== undefined && !this.alive(m, now)) m = undefined;
    if (m !== undefined && key !== clashKey && this.stackFlow(m.publicPort, dst, now)) {
      key = clashKey; // this remote already "owns" that public port on the box's own stack
      m = undefined;
    }
    if (m === undefined) {
      if (this.byPort.size >= this.sweepAt) this.sweep(now);
      const preferred = key === clashKey ? -1 : inner.port;
      let port = this.allocatePort(preferred, now);
      if (key !== clashKey && this.stackFlow(port, dst, now)) port = this.allocatePort(-1, now);
      m = { key, inner: { address: inner.address, port: inner.port }, publicPort: port, lastActive: now, permits: new Map() };
      this.byKey.set(key, m);
      this.byPort.set(m.publicPort, m);
      this.counters.created++;
    }
    m.lastActive = now;
    if (b.filtering !== 'EI') m.permits.set(b.filtering === 'AD' ? dst.address : `${dst.address}:${dst.port}`, now);
    this.counters.translated++;
    return m.publicPort;
  }

  /** The inner endpoint for a packet from `src` to `publicPort`, or undefined when no live mapping admits it. */
  inbound(src: UdpEndpoint, publicPort: number, now: number): UdpEndpoint | undefined {
    const m = this.byPort.get(publicPort);
    if (m === undefined || !this.alive(m, now)) {
      this.counters.filtered++;
      return undefined;
    }
    const b = this.behaviour;
    if (b.filtering !== 'EI') {
      const pk = b.filtering === 'AD' ? src.address : `${src.address}:${src.port}`;
      const t = m.permits.get(pk);
      if (t === undefined || now - t >= b.timeoutMs) {
        this.counters.filtered++;
        return undefined;
      }
      if (b.refreshOnInbound) m.permits.set(pk, now);
    }
    if (b.refreshOnInbound) m.lastActive = now;
    this.counters.admitted++;
    return m.inner;
  }

  /**
   * A packet from `inner` to `dst` that dies at this box (its TTL ran out): it refreshes the flow
   * it matches, if one is live, and creates nothing (Linux drops the unconfirmed entry).
   */
  touch(inner: UdpEndpoint, dst: UdpEndpoint, now: number): void {
    const b = this.behaviour;
    const clash = this.byKey.get(`${inner.address}:${inner.port}>${dst.address}:${dst.port}!`);
    const key = b.mapping === 'EI' ? `${inner.address}:${inner.port}`
      : b.mapping === 'AD' ? `${inner.address}:${inner.port}>${dst.address}`
        : `${inner.address}:${inner.port}>${dst.address}:${dst.port}`;
    const m = clash !== undefined && this.alive(clash, now) ? clash : this.byKey.get(key);
    if (m === undefined || !this.alive(m, now)) return;
    if (b.filtering === 'EI') return void (m.lastActive = now);
    const pk = b.filtering === 'AD' ? dst.address : `${dst.address}:${dst.port}`;
    const t = m.permits.get(pk);
    if (t === undefined || now - t >= b.timeoutMs) return; // no flow to that remote: nothing to refresh
    m.permits.set(pk, now);
    m.lastActive = now;
  }

  /** wanInput accept: an unsolicited packet from `src` to `publicPort` was taken by the box's own stack. */
  unsolicited(src: UdpEndpoint, publicPort: number, now: number): void {
    if (this.stackFlows.size >= 4096) for (const [k, t] of this.stackFlows) if (now - t >= this.behaviour.timeoutMs) this.stackFlows.delete(k);
    this.stackFlows.set(`${publicPort}<${src.address}:${src.port}`, now);
  }

  /** Whether the box's own stack holds a live inbound flow from `remote` to `publicPort`. */
  private stackFlow(publicPort: number, remote: UdpEndpoint, now: number): boolean {
    if (this.stackFlows.size === 0) return false;
    const t = this.stackFlows.get(`${publicPort}<${remote.address}:${remote.port}`);
    return t !== undefined && now - t < this.behaviour.timeoutMs;
  }

  /** The public port of the live mapping `inner` would use towards `dst`, without creating or refreshing one. */
  peek(inner: UdpEndpoint, dst: UdpEndpoint, now: number): number | undefined {
    const b = this.behaviour;
    const key = b.mapping === 'EI' ? `${inner.address}:${inner.port}`
      : b.mapping === 'AD' ? `${inner.address}:${inner.port}>${dst.address}`
        : `${inner.address}:${inner.port}>${dst.address}:${dst.port}`;
    const m = this.byKey.get(key);
    return m !== undefined && now - m.lastActive < b.timeoutMs ? m.publicPort : undefined;
  }

  /** Every live mapping, for tests and traces. */
  mappings(now: number): { inner: UdpEndpoint; publicPort: number; idleMs: number }[] {
    this.sweep(now);
    return [...this.byPort.values()].map((m) => ({ inner: { ...m.inner }, publicPort: m.publicPort, idleMs: now - m.lastActive }));
  }

  /** Forgets every mapping (a NAT reboot, a new public address, or a scenario's forced expiry). */
  expireAll(): void {
    this.counters.expired += this.byPort.size;
    this.byKey.clear();
    this.byPort.clear();
  }

  /** Drops every mapping idle for the timeout or longer. */
  sweep(now: number): void {
    for (const m of [...this.byPort.values()]) this.alive(m, now);
    this.sweepAt = Math.max(256, this.byPort.size * 2);
  }

  private alive(m: Mapping, now: number): boolean {
    if (now - m.lastActive < this.behaviour.timeoutMs) return true;
    this.byKey.delete(m.key);
    this.byPort.delete(m.publicPort);
    this.counters.expired++;
    return false;
  }

  private free(port: number, now: number): boolean {
    const m = this.byPort.get(port);
    return m === undefined || !this.alive(m, now);
  }

  private allocatePort(innerPort: number, now: number): number {
    const ports = this.behaviour.ports;
    if (ports === 'preserve' && innerPort >= NAT_PORT_MIN && this.free(innerPort, now)) return innerPort;
    if (ports === 'random' || innerPort < 0) { // -1: a clash, resolved with a random port as masquerade does
      // A few draws find a free port unless the table is nearly full; then the scan below does.
      for (let i = 0; i < 32; i++) {
        const p = this.random.int(NAT_PORT_MIN, NAT_PORT_MAX);
        if (this.free(p, now)) return p;
      }
    }
    for (let i = NAT_PORT_MIN; i <= NAT_PORT_MAX; i++) {
      const p = this.nextPort;
      this.nextPort = p >= NAT_PORT_MAX ? NAT_PORT_MIN : p + 1;
      if (this.free(p, now)) return p;
    }
    throw new RangeError('NAT port space exhausted');
  }
}

/** Throws on a behaviour no NAT could have (a programmer error in a scenario). */
export function checkBehaviour(b: NatBehaviour): void {
  const dep = ['EI', 'AD', 'APD'];
  if (!['napt', 'one-to-one', 'router', 'block-udp'].includes(b.kind)) throw new RangeError(`NAT kind ${String(b.kind)}`);
  if (!dep.includes(b.mapping) || !dep.includes(b.filtering)) throw new RangeError(`NAT mapping/filtering ${String(b.mapping)}/${String(b.filtering)}`);
  if (!['preserve', 'sequential', 'random'].includes(b.ports)) throw new RangeError(`NAT ports ${String(b.ports)}`);
  if (!(b.timeoutMs > 0) || !Number.isFinite(b.timeoutMs)) throw new RangeError(`NAT timeoutMs ${b.timeoutMs}`);
  if (b.wanInput !== 'drop' && b.wanInput !== 'accept') throw new RangeError(`NAT wanInput ${String(b.wanInput)}`);
}

/** Resolves a preset name (or a behaviour) plus overrides into a checked behaviour. */
export function natBehaviour(preset: NatPreset | NatBehaviour, overrides: Partial<NatBehaviour> = {}): NatBehaviour {
  const base = typeof preset === 'string' ? NAT_PRESETS[preset] : preset;
  if (base === undefined) throw new RangeError(`unknown NAT preset ${String(preset)}`);
  const b: NatBehaviour = { ...base };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (b as unknown as Record<string, unknown>)[k] = v;
  checkBehaviour(b);
  return b;
}
