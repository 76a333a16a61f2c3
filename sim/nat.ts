/**
 * NAT models in RFC 4787 terms, pure apart from the time passed in.
 *
 *   mapping    (§4.1) which outbound flows share a public port:
 *              EI  endpoint-independent      one port per inner ip:port
 *              AD  address-dependent         one per inner ip:port and destination IP
 *              APD address-and-port-dependent one per inner ip:port and destination ip:port
 *   filtering  (§5) which inbound packets a mapping admits:
 *              EI any source; AD sources whose IP we sent to; APD sources whose ip:port we sent to
 *   ports      (§4.2.1) preserve the inner port when free, else sequential; sequential; random
 *   timeout    (§4.3) a mapping idle this long (no outbound) is gone: 30 s by default
 *   hairpin    (§6) inside hosts reaching each other through the public address
 *   oneToOne   a static 1:1 NAT: the public IP is the inner host's, every port, no filtering
 *   blockUdp   a firewall that drops all UDP
 */
import type { UdpEndpoint } from '../shared/udp.js';
import type { SeededRandom } from './random.js';

export type Dependence = 'EI' | 'AD' | 'APD';

export interface NatBehaviour {
  mapping: Dependence;
  filtering: Dependence;
  ports: 'preserve' | 'sequential' | 'random';
  timeoutMs: number;
  hairpin: boolean;
  oneToOne?: boolean;
  blockUdp?: boolean;
}

/** The named NATs the grid and scenarios use. */
export const NAT_PRESETS = {
  easy: { mapping: 'EI', filtering: 'APD', ports: 'preserve', timeoutMs: 30_000, hairpin: false },
  'easy-ad': { mapping: 'EI', filtering: 'AD', ports: 'preserve', timeoutMs: 30_000, hairpin: false },
  'easy-ei': { mapping: 'EI', filtering: 'EI', ports: 'preserve', timeoutMs: 120_000, hairpin: true },
  hard: { mapping: 'APD', filtering: 'APD', ports: 'random', timeoutMs: 30_000, hairpin: false },
  'one-to-one': { mapping: 'EI', filtering: 'EI', ports: 'preserve', timeoutMs: 300_000, hairpin: false, oneToOne: true },
  blocked: { mapping: 'EI', filtering: 'APD', ports: 'preserve', timeoutMs: 30_000, hairpin: false, blockUdp: true },
} as const satisfies Record<string, NatBehaviour>;

export type NatPreset = keyof typeof NAT_PRESETS;

interface Mapping {
  inner: UdpEndpoint;
  publicPort: number;
  lastOut: number;
  sentTo: Set<string>; // "ip" and "ip:port" the inner host sent to through this mapping
}

const FIRST_DYNAMIC_PORT = 1024;

export class NatTable {
  private readonly byKey = new Map<string, Mapping>();
  private readonly byPort = new Map<number, Mapping>();
  private nextPort = FIRST_DYNAMIC_PORT;
  counters = { translated: 0, filtered: 0, expired: 0, blocked: 0 };

  constructor(readonly behaviour: NatBehaviour, private readonly random: SeededRandom) {}

  private key(inner: UdpEndpoint, dst: UdpEndpoint): string {
    const base = `${inner.address}:${inner.port}`;
    if (this.behaviour.mapping === 'EI') return base;
    if (this.behaviour.mapping === 'AD') return `${base}>${dst.address}`;
    return `${base}>${dst.address}:${dst.port}`;
  }

  private alive(m: Mapping, now: number): boolean {
    if (now - m.lastOut < this.behaviour.timeoutMs) return true;
    this.byKey.forEach((v, k) => { if (v === m) this.byKey.delete(k); });
    this.byPort.delete(m.publicPort);
    this.counters.expired++;
    return false;
  }

  private allocatePort(inner: UdpEndpoint): number {
    const free = (p: number) => !this.byPort.has(p);
    if (this.behaviour.ports === 'preserve' && free(inner.port)) return inner.port;
    if (this.behaviour.ports === 'random') {
      for (let i = 0; i < 100; i++) {
        const p = this.random.int(FIRST_DYNAMIC_PORT, 65535);
        if (free(p)) return p;
      }
    }
    for (let i = 0; i < 65536; i++) {
      const p = this.nextPort;
      this.nextPort = this.nextPort >= 65535 ? FIRST_DYNAMIC_PORT : this.nextPort + 1;
      if (free(p)) return p;
    }
    throw new RangeError('NAT port space exhausted');
  }

  /** Outbound: the public port the packet leaves from, or undefined if the NAT drops it. */
  outbound(inner: UdpEndpoint, dst: UdpEndpoint, now: number): number | undefined {
    if (this.behaviour.blockUdp) {
      this.counters.blocked++;
      return undefined;
    }
    if (this.behaviour.oneToOne) return inner.port;
    const k = this.key(inner, dst);
    let m = this.byKey.get(k);
    if (m && !this.alive(m, now)) m = undefined;
    if (!m) {
      m = { inner, publicPort: this.allocatePort(inner), lastOut: now, sentTo: new Set() };
      this.byKey.set(k, m);
      this.byPort.set(m.publicPort, m);
    }
    m.lastOut = now;
    m.sentTo.add(dst.address);
    m.sentTo.add(`${dst.address}:${dst.port}`);
    this.counters.translated++;
    return m.publicPort;
  }

  /** Inbound to a public port: the inner endpoint, or undefined if no mapping admits it. */
  inbound(src: UdpEndpoint, publicPort: number, now: number, oneToOneHost?: string): UdpEndpoint | undefined {
    if (this.behaviour.blockUdp) {
      this.counters.blocked++;
      return undefined;
    }
    if (this.behaviour.oneToOne) return oneToOneHost ? { address: oneToOneHost, port: publicPort } : undefined;
    const m = this.byPort.get(publicPort);
    if (!m || !this.alive(m, now)) {
      this.counters.filtered++;
      return undefined;
    }
    const f = this.behaviour.filtering;
    const ok = f === 'EI' || (f === 'AD' ? m.sentTo.has(src.address) : m.sentTo.has(`${src.address}:${src.port}`));
    if (!ok) {
      this.counters.filtered++;
      return undefined;
    }
    return m.inner;
  }

  /** Forgets every mapping (a NAT reboot, or a scenario's forced expiry). */
  expireAll(): void {
    this.byKey.clear();
    this.byPort.clear();
  }

  get size(): number {
    return this.byPort.size;
  }
}
