/**
 * Two (or more) DiscoCores wired through a tiny in-test network on a manual
 * clock: per-host addresses, 10 ms one-way latency, call-me-maybe relayed
 * "via the coordinator" in 20 ms, and an optional per-host inbound filter to
 * model a NAT or firewall, and an optional link MTU per host (bigger packets to
 * or from it vanish, as on a link with no ICMP). Enough to test the core's behaviour in tables;
 * the full NAT models live in sim/.
 */
import { encodeKey, generateKeyPair } from '../../../shared/crypto/keys.js';
import { formatEndpoint } from '../../../shared/net/addr.js';
import type { UdpEndpoint } from '../../../shared/udp.js';
import type { NatType } from '../../../shared/wire/control.js';
import { DiscoCore } from '../../../agent/disco/core.js';
import type { DiscoAction, DiscoPeerInput } from '../../../agent/disco/events.js';
import { ManualClock, seededBytes } from '../../helpers/manual-clock.js';

export const LATENCY_MS = 10;

export interface Host {
  name: string;
  nodeKey: string;
  discoKey: string;
  core: DiscoCore;
  addr: UdpEndpoint; // where its packets come from, as others see it
  endpoints: string[]; // what the coordinator says about it
  natType: NatType;
  chosen: { endpoint: string; path: string }[];
  actions: DiscoAction[];
  node: ReturnType<typeof generateKeyPair>;
  disco: ReturnType<typeof generateKeyPair>;
  /** Inbound filter: return false to drop a packet from `from`. */
  accept: (from: UdpEndpoint) => boolean;
  /** The MTU of this host's link (whole IPv4 packets: UDP payload + 28); undefined = no limit. */
  linkMtu?: number;
  timer?: ReturnType<ManualClock['setTimeout']>;
}

export class Net {
  readonly clock = new ManualClock();
  readonly hosts: Host[] = [];
  private readonly random = seededBytes(11);
  delivered = 0;
  dropped = 0;

  add(name: string, addr: UdpEndpoint, opts: { endpoints?: string[]; natType?: NatType; eagerLimit?: number; bind?: boolean; node?: ReturnType<typeof generateKeyPair> } = {}): Host {
    const node = opts.node ?? generateKeyPair();
    const disco = generateKeyPair();
    const h: Host = {
      name, nodeKey: encodeKey(node.publicKey), discoKey: encodeKey(disco.publicKey), addr,
      core: new DiscoCore({ nodeKey: encodeKey(node.publicKey), discoPrivateKey: disco.privateKey, discoPublicKey: disco.publicKey, random: this.random, eagerLimit: opts.eagerLimit, nodePrivateKey: opts.bind ? node.privateKey : undefined }),
      endpoints: opts.endpoints ?? [formatEndpoint(addr)], natType: opts.natType ?? 'none', chosen: [], actions: [], accept: () => true, node, disco,
    };
    this.hosts.push(h);
    return h;
  }

  /** Takes a host off the network (its agent stopped). */
  remove(h: Host): void {
    this.hosts.splice(this.hosts.indexOf(h), 1);
    if (h.timer !== undefined) this.clock.clearTimeout(h.timer);
  }

  input(of: Host): DiscoPeerInput {
    return { nodeKey: of.nodeKey, discoKey: of.discoKey, name: of.name, endpoints: of.endpoints, natType: of.natType, online: true };
  }

  /** Tells every host about every other (a coordinator snapshot). */
  introduce(): void {
    for (const h of this.hosts) this.feed(h, { type: 'peers-updated', peers: this.hosts.filter((x) => x !== h).map((x) => this.input(x)) });
  }

  feed(h: Host, e: Parameters<DiscoCore['handle']>[0]): void {
    this.perform(h, h.core.handle(e, this.clock.now()));
  }

  private perform(h: Host, actions: DiscoAction[]): void {
    for (const a of actions) {
      h.actions.push(a);
      if (a.type === 'send-udp') this.send(h, a.to, a.bytes);
      else if (a.type === 'send-call-me-maybe') {
        const to = this.hosts.find((x) => x.nodeKey === a.toNodeKey);
        if (to) this.clock.setTimeout(() => this.feed(to, { type: 'call-me-maybe', fromNodeKey: h.nodeKey, endpoints: a.endpoints }), 2 * LATENCY_MS);
      } else if (a.type === 'set-peer-endpoint') h.chosen.push({ endpoint: a.endpoint, path: a.path });
    }
    this.arm(h);
  }

  private send(from: Host, to: UdpEndpoint, bytes: Uint8Array): void {
    const dest = this.hosts.find((x) => formatEndpoint(x.addr) === formatEndpoint(to) || x.endpoints.includes(formatEndpoint(to)));
    this.clock.setTimeout(() => {
      const ipBytes = bytes.length + 28;
      if (!dest || !dest.accept(from.addr) || ipBytes > (from.linkMtu ?? Infinity) || ipBytes > (dest.linkMtu ?? Infinity)) {
        this.dropped++;
        return;
      }
      this.delivered++;
      this.feed(dest, { type: 'udp', from: from.addr, bytes });
    }, LATENCY_MS);
  }

  private arm(h: Host): void {
    if (h.timer !== undefined) this.clock.clearTimeout(h.timer);
    const at = h.core.nextWakeup();
    h.timer = at === undefined ? undefined : this.clock.setTimeout(() => { h.timer = undefined; this.feed(h, { type: 'tick' }); }, Math.max(0, at - this.clock.now()));
  }

  status(h: Host, of: Host) {
    return h.core.peerStatus(this.clock.now()).find((s) => s.nodeKey === of.nodeKey)!;
  }
}
