/**
 * Our own endpoints: the candidates peers are told to reach us at, and the
 * NAT type that comes with them. They are the host's addresses on the tunnel
 * port, what the STUN observers see of us (StunProbe, run over the tunnel
 * port), and a verified gateway port mapping, advertised first. Rounds run on
 * the coordinator's welcome, a network change, a dying path, the relay's
 * request and `knit netcheck`; every change goes to the agent shell
 * (agent/agent.ts), which tells the coordinator and the disco core.
 */
import type { Clock, RandomBytes } from '../shared/clock.js';
import type { Logger } from '../shared/log.js';
import type { UdpEndpoint, UdpSocket } from '../shared/udp.js';
import { isReportableEndpoint, parseEndpoint } from '../shared/net/addr.js';
import { MAX_ENDPOINTS, type NatType } from '../shared/wire/control.js';
import { candidateEndpoints, StunProbe, type DiscoveryAction, type DiscoveryResult } from './discovery/stun-probe.js';

/** A dying path triggers a STUN round at most this often (several peers die together after a NAT change). */
export const REPROBE_ON_DEATH_MS = 5000;
/**
 * How long a port the relay saw our binds come from stays a candidate without a fresh bind
 * (binds are renewed every 10 s: seven of them).
 */
export const RELAY_OBSERVED_KEEP_MS = 75_000;

/** A set of reflexive endpoints as one comparable text (order does not matter). */
function reflexiveKey(list: readonly UdpEndpoint[]): string {
  return list.map((e) => `${e.address}:${e.port}`).sort().join(',');
}

export interface NetcheckReport { result?: DiscoveryResult; servers: string[]; localAddresses: string[]; port: number }

export interface SelfEndpointsDeps {
  clock: Clock;
  random: RandomBytes;
  logger: Logger;
  udp: Pick<UdpSocket, 'send'>;
  localAddresses: () => string[];
  tunnelPort: () => number;
  /** The candidates changed or must be told again: to the coordinator and the disco core. */
  report: (endpoints: string[], natType: NatType) => void;
  /** Our public mapping moved while nothing local changed: to peers this is a roam. */
  publicEndpointMoved: () => void;
  /** After every STUN step: the probe's next wakeup may have moved. */
  arm: () => void;
}

export class SelfEndpoints {
  list: string[] = [];
  natType: NatType = 'unknown';
  portPreserved?: boolean;
  private readonly probe: StunProbe;
  private observers: UdpEndpoint[] = [];
  private lastDeathProbe = -Infinity;
  /** The verified port-mapped endpoint ("ip:port"), advertised first among our candidates. */
  private portMapped: string | undefined;
  private netcheckWaiters: ((r: DiscoveryResult | undefined) => void)[] = [];
  /** Our public endpoints as the last STUN round saw them (long-lived flows); undefined before the first. */
  private reflexive: UdpEndpoint[] | undefined;
  /** The NAT port the relay saw our newest binds come from, and when (see relayObservedPort). */
  private relayObserved: { port: number; at: number } | undefined;

  constructor(private readonly d: SelfEndpointsDeps) {
    this.probe = new StunProbe(d.tunnelPort, d.random);
  }

  /** The host's addresses only: at start and after a network change, until STUN says more. */
  resetToLocal(): void {
    this.list = candidateEndpoints(this.d.localAddresses(), this.d.tunnelPort(), []);
  }

  /** The STUN observers the coordinator announced (on the tunnel port's host); used from the next round. */
  setObservers(observers: UdpEndpoint[]): void {
    this.observers = observers;
  }

  /** Takes the current observers and host addresses and runs a round now. */
  reconfigure(now: number): void {
    this.probe.configure(this.observers, this.d.localAddresses());
    this.run(this.probe.trigger(now));
  }

  /** Runs a round now if any observer is known (the relay asks after losing its binding). */
  reprobe(now: number): void {
    if (this.observers.length > 0) this.run(this.probe.trigger(now));
  }

  /**
   * A path died: maybe our NAT's public address or mapping changed, which no local
   * interface change reveals. Re-probe at once (at most every REPROBE_ON_DEATH_MS)
   * rather than waiting for the periodic round, so peers get our new endpoint fast.
   */
  rediscoverSoon(): void {
    const now = this.d.clock.now();
    if (this.observers.length === 0 || now - this.lastDeathProbe < REPROBE_ON_DEATH_MS) return;
    this.lastDeathProbe = now;
    this.run(this.probe.trigger(now));
  }

  /** Runs a fresh STUN round from the tunnel port (knit netcheck); no result when no observer is known yet. */
  netcheck(): Promise<NetcheckReport> {
    const base = { servers: this.observers.map((s) => `${s.address}:${s.port}`), localAddresses: this.d.localAddresses(), port: this.d.tunnelPort() };
    if (this.observers.length === 0) return Promise.resolve(base);
    return new Promise((resolve) => {
      this.netcheckWaiters.push((result) => resolve({ ...base, result }));
      this.run(this.probe.trigger(this.d.clock.now()));
    });
  }

  /** Answers every pending netcheck with no result (the agent is stopping). */
  cancelNetchecks(): void {
    for (const w of this.netcheckWaiters.splice(0)) w(undefined);
  }

  /** A STUN packet that arrived on the tunnel port. */
  packet(from: UdpEndpoint, bytes: Uint8Array, now: number): void {
    this.run(this.probe.packet(from, bytes, now));
  }

  tick(now: number): void {
    this.run(this.probe.tick(now));
  }

  nextWakeup(): number | undefined {
    return this.probe.nextWakeup();
  }

  /**
   * The relay saw a bind of ours come from `port` (shared/wire/relay.ts). STUN's flows are old
   * and keep the port they were given; a new flow gets the port of the newest flow of the same
   * source in Linux masquerade, and after a clash (a router whose own stack took a peer's first
   * punch) that is another port. The relay's flow is new, so its port is where a new flow to a
   * peer will come from: it becomes a candidate on our public address too, so the peer can aim
   * at it (docs/disco.md, quiet punching).
   */
  relayObservedPort(port: number, now: number): void {
    const changed = this.relayObserved?.port !== port;
    this.relayObserved = { port, at: now };
    if (changed) this.report();
  }

  /** Public IPv4 candidates at the relay-observed port, where it differs from STUN's (and is fresh). */
  private relayObservedCandidates(now: number): string[] {
    const o = this.relayObserved;
    if (!o || now - o.at > RELAY_OBSERVED_KEEP_MS) return [];
    return (this.reflexive ?? []).filter((e) => e.port !== o.port && !e.address.includes(':')).map((e) => `${e.address}:${o.port}`);
  }

  /** The verified port mapping appeared, moved or went away: report it like the STUN-discovered endpoints. */
  portMapChanged(external: string | undefined): void {
    if (external === this.portMapped) return;
    const old = this.portMapped;
    this.portMapped = external;
    if (old) this.list = this.list.filter((e) => e !== old);
    this.report();
  }

  /**
   * Whether the coordinator passes loopback endpoints on (its welcome says so; single-machine
   * tests). Until it says so they aren't reported: it would drop them, and peers can't use them.
   */
  loopbackAccepted = false;

  report(): void {
    // A verified port mapping comes first: peers reach it without punching.
    if (this.portMapped && !this.list.includes(this.portMapped)) this.list = [this.portMapped, ...this.list].slice(0, MAX_ENDPOINTS);
    const allowLoopback = this.loopbackAccepted;
    const extra = this.relayObservedCandidates(this.d.clock.now()).filter((e) => !this.list.includes(e));
    const all = [...this.list, ...extra].slice(0, MAX_ENDPOINTS);
    this.d.report(all.filter((e) => isReportableEndpoint(parseEndpoint(e)!, { allowLoopback })), this.natType);
  }

  private run(actions: DiscoveryAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') this.d.udp.send(a.bytes, a.to);
      else {
        const r = a.result;
        this.natType = r.natType;
        this.portPreserved = r.portPreserved;
        const before = this.reflexive && reflexiveKey(this.reflexive);
        this.reflexive = r.reflexive;
        this.list = candidateEndpoints(this.d.localAddresses(), this.d.tunnelPort(), r.reflexive);
        this.d.logger.debug('endpoints discovered', { endpoints: this.list, nat: r.natType });
        this.report();
        // Our public mapping moved (the NAT's address changed, or it forgot us) while nothing
        // local changed: to peers this is a roam, so re-punch and tell them where we are now.
        if (before !== undefined && r.reflexive.length > 0 && before !== reflexiveKey(r.reflexive)) {
          this.d.logger.info('public endpoint changed', { endpoints: this.list });
          this.d.publicEndpointMoved();
        }
        for (const w of this.netcheckWaiters.splice(0)) w(r);
      }
    }
    this.d.arm();
  }
}
