/**
 * The shell around the LAN discovery core: it owns the timer and a transport
 * (real multicast sockets in production, the simulator's multicast segments
 * in sim/), reads the interface list when told the network changed, and hands
 * LAN candidates to whoever listens (the agent runtime, which passes them to
 * the disco core as `lan-candidate` events).
 */
import type { Packet } from 'dns-packet';
import type { Clock, RandomBytes } from '../../shared/clock.js';
import type { Logger } from '../../shared/log.js';
import { WakeupTimer } from '../../shared/wakeup.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { LanCore, type LanAction, type LanCounters, type LanEvent, type LanInterface } from './core.js';
import type { LanSelf } from './records.js';

/** How packets reach the links. Sends are best-effort: mDNS tolerates loss by design. */
export interface LanTransport {
  /** The links to use from now on: opens new ones, closes those no longer listed. */
  setInterfaces(list: readonly LanInterface[]): void;
  send(iface: LanInterface, packet: Packet): void;
  /** `packet` is undefined when the bytes didn't decode as DNS (counted as malformed). */
  onPacket(handler: (from: string, packet: Packet | undefined) => void): void;
  /** Waits for pending sends (the goodbye), then closes every socket. */
  close(): Promise<void>;
}

export interface LanDiscoveryDeps {
  clock: Clock;
  random: RandomBytes;
  logger: Logger;
  transport: LanTransport;
  /** The links to announce and browse on, read at start and on every network change. */
  interfaces: () => LanInterface[];
}

export class LanDiscovery {
  /** A peer's LAN address, learned from its announcement (unauthenticated: a candidate to ping). */
  onCandidate?: (nodeKey: string, endpoint: UdpEndpoint, discoKey: string) => void;
  private core: LanCore | undefined;
  private readonly timer: WakeupTimer;
  private peers: string[] = [];

  constructor(private readonly d: LanDiscoveryDeps) {
    this.timer = new WakeupTimer(d.clock, () => this.event({ type: 'tick' }));
  }

  start(self: LanSelf): void {
    if (this.core) return;
    this.core = new LanCore(self, this.d.random);
    this.d.transport.onPacket((from, packet) => this.event({ type: 'packet', from, packet }));
    this.event({ type: 'peers', nodeKeys: this.peers });
    this.refreshInterfaces();
    this.event({ type: 'start' });
    this.d.logger.info('lan discovery started', { interfaces: this.core.interfaces.map((i) => `${i.name} ${i.address}/${i.prefixLen}`) });
  }

  setPeers(nodeKeys: string[]): void {
    this.peers = nodeKeys;
    this.event({ type: 'peers', nodeKeys });
  }

  /** The network changed: re-read the links; a changed set is announced and browsed afresh. */
  refreshInterfaces(): void {
    const list = this.d.interfaces();
    this.d.transport.setInterfaces(list);
    this.event({ type: 'interfaces', interfaces: list });
  }

  /** Says goodbye on every link, then closes the sockets. */
  async stop(): Promise<void> {
    if (!this.core) return;
    this.event({ type: 'stop' });
    this.timer.cancel();
    this.core = undefined;
    await this.d.transport.close();
  }

  get counters(): LanCounters | undefined {
    return this.core?.counters;
  }

  private event(e: LanEvent): void {
    if (!this.core) return;
    this.perform(this.core.handle(e, this.d.clock.now()));
    this.timer.arm(this.core.nextWakeup());
  }

  private perform(actions: LanAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') this.d.transport.send(a.iface, a.packet);
      else this.onCandidate?.(a.nodeKey, a.endpoint, a.discoKey);
    }
  }
}
