/**
 * The agent runtime's view of endpoint discovery (agent/self-endpoints.ts): the
 * method-per-event API it was written against — configure, trigger, packet,
 * tick — over the sans-I/O core in discovery.ts. Every decision (schedule,
 * matching, classification) is the core's; this file only maps calls to
 * events. New code should use createEndpointDiscovery from ./index.js.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { sameEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { createEndpointDiscovery, type DiscoveryAction, type DiscoveryOptions, type DiscoveryResult, type EndpointDiscovery } from './discovery.js';

export { candidateEndpoints } from './classify.js';
export { REDISCOVER_MS, STUN_RETRANSMIT_MS, STUN_ROUND_TIMEOUT_MS, type DiscoveryAction, type DiscoveryResult } from './discovery.js';

export class StunProbe {
  private readonly core: EndpointDiscovery;
  private servers: UdpEndpoint[] = [];
  private localAddresses: string[] = [];
  private triggered?: { servers: UdpEndpoint[]; localAddresses: string[] };

  constructor(private readonly localPort: () => number, random: RandomBytes, options: Omit<DiscoveryOptions, 'random'> = {}) {
    this.core = createEndpointDiscovery({ ...options, random });
  }

  /** The latest result, if a round has ended. */
  get last(): DiscoveryResult | undefined {
    return this.core.last();
  }

  /** Sets the observer addresses (from the coordinator's welcome) and the host's own addresses; the next trigger uses them. */
  configure(servers: UdpEndpoint[], localAddresses: string[]): void {
    this.servers = servers;
    this.localAddresses = localAddresses;
  }

  /**
   * Starts a round now with the configured observers and addresses (start,
   * network change, netcheck). Same observers but other addresses is a roam:
   * the core then forgets the old network's mapping.
   */
  trigger(now: number): DiscoveryAction[] {
    const localPort = this.localPort();
    const roamed = this.triggered !== undefined && sameList(this.triggered.servers, this.servers) &&
      this.triggered.localAddresses.join(',') !== this.localAddresses.join(',');
    this.triggered = { servers: this.servers, localAddresses: this.localAddresses };
    if (roamed) return this.core.handle({ type: 'interfaces-changed', localAddresses: this.localAddresses, localPort }, now);
    return this.core.handle({ type: 'start', servers: this.servers, localAddresses: this.localAddresses, localPort }, now);
  }

  /** A STUN packet that arrived on the tunnel port. */
  packet(from: UdpEndpoint, bytes: Uint8Array, now: number): DiscoveryAction[] {
    return this.core.handle({ type: 'packet', from, bytes }, now);
  }

  /** Safe to call at any time: only what is due happens. */
  tick(now: number): DiscoveryAction[] {
    return this.core.handle({ type: 'tick' }, now);
  }

  nextWakeup(): number | undefined {
    return this.core.nextWakeup();
  }
}

function sameList(a: readonly UdpEndpoint[], b: readonly UdpEndpoint[]): boolean {
  return a.length === b.length && a.every((x, i) => sameEndpoint(x, b[i]!));
}
