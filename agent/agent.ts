/**
 * The agent runtime: the one place where the control client, endpoint
 * discovery, the disco core and the tunnel engine meet. It owns the tunnel
 * port's socket and the timer; every decision is made by the pure cores it
 * feeds (DiscoCore, StunProbe, the netmap reducer). Sockets, clock, random
 * and the control transport are injected, so the simulator runs this same
 * runtime on virtual ones.
 *
 * Flow:
 *   control: welcome → STUN servers; snapshot/delta → disco peers + engine peers
 *   udp port: disco packet → DiscoCore; STUN answer → StunProbe; other → counted and dropped
 *   StunProbe result → our endpoints → coordinator + DiscoCore (for call-me-maybe)
 *   DiscoCore actions → udp sends, call-me-maybe via control, engine endpoint changes
 *   network change → re-probe, re-punch, re-assert endpoints in the engine; LAN re-announce
 *   LAN discovery (mDNS) → `lan` candidates → DiscoCore (trusted only after a pong)
 */
import { x25519 } from '@noble/curves/ed25519.js';
import type { Clock, RandomBytes } from '../shared/clock.js';
import { decodeKey, encodeKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { WakeupTimer } from '../shared/wakeup.js';
import { parseEndpoint } from '../shared/net/addr.js';
import type { UdpEndpoint, UdpSocket } from '../shared/udp.js';
import type { NatType, PeerInfo, WelcomeMsg } from '../shared/wire/control.js';
import { isDiscoPacket } from '../shared/wire/disco.js';
import { isRelayPacket } from '../shared/wire/relay.js';
import { isStunPacket } from '../shared/wire/stun.js';
import { MAX_ENDPOINTS, MAX_PATH_REPORTS, type PathReport } from '../shared/wire/control.js';
import { ControlClient, type ControlStatus, type ControlTransport } from './control/client.js';
import type { Netmap } from './control/netmap.js';
import { DiscoCore, EAGER_PEER_LIMIT, type DiscoAction } from './disco/core.js';
import { RELAY_WS_ENDPOINT } from './relay/core.js';
import { RelayPaths, type RelayPathsAction, type RelayPathsEvent } from './relay/paths.js';
import { candidateEndpoints, StunProbe, type DiscoveryAction, type DiscoveryResult } from './discovery/stun-probe.js';
import type { Engine, EngineConfig, EnginePeerStats } from './engine/types.js';
import { meshAllowedIps } from './engine/prefix.js';
import type { LanDiscovery } from './lan/discovery.js';
import { meshIdOf } from './lan/records.js';
import { BirthdaySockets } from './net/birthday-sockets.js';
import type { WireguardProxy } from './net/proxy.js';
import { RelayWsBridge, type RelayWsDeps } from './net/relay-ws-bridge.js';
import type { SharedModeWaker } from './net/waker.js';
import { describePortMapping, type PortMapService } from './portmap/index.js';
import type { NodeIdentity, NodeRecord } from './state.js';
import type { PathKind, StatusDocument } from './status.js';

export interface AgentOptions {
  identity: NodeIdentity;
  node: NodeRecord;
  /** The observer's IP (the coordinator host, resolved by the shell). */
  stunHost: string;
  iface: string;
  keepaliveS: number;
  portMode: 'proxy' | 'shared' | 'memory';
  initialNetmap?: Netmap;
  /** Meshes with more peers than this punch on demand (disco EAGER_PEER_LIMIT by default). */
  eagerPeers?: number;
}

export interface AgentDeps {
  clock: Clock;
  random: RandomBytes;
  logger: Logger;
  udp: UdpSocket;
  transport: ControlTransport;
  engine: Engine;
  localAddresses: () => string[];
  saveNetmap?: (map: Netmap) => void;
  /** Proxy mode: the engine listens on loopback and WireGuard packets go through the agent. */
  proxy?: WireguardProxy;
  /**
   * Shared mode: the tunnel port peers and STUN see, owned by the engine, when it isn't the
   * port `udp` is bound to (kernel rules steer disco/STUN between the two; net/shared-port.ts).
   */
  tunnelPort?: number;
  /** Shared mode: catches WireGuard's handshakes to peers without a path (on-demand punching). */
  waker?: SharedModeWaker;
  /** LAN discovery over mDNS; absent with --no-lan-discovery. */
  lan?: LanDiscovery;
  /** Gateway port mapping (PCP → NAT-PMP → UPnP-IGD); absent with --no-port-mapping. */
  portMap?: PortMapService;
  /**
   * The relay's WebSocket fallback (agent/net/relay-ws-bridge.ts): how to open a WebSocket and a
   * loopback stand-in. Absent (the simulator): a relay that doesn't answer over UDP is only logged.
   */
  relayWs?: RelayWsDeps;
  /**
   * Extra UDP sockets for the hard side of birthday probing (agent/disco/hard-nat.ts): `open` is
   * synchronous (an ephemeral port), `openLoopback` makes a peer's loopback stand-in. Absent: this
   * agent never opens extra sockets (it still probes when it is the easy side).
   */
  extraUdp?: { open: () => UdpSocket; openLoopback: () => Promise<UdpSocket> };
}

/** Whether two maps differ in what the engine is told (peer keys and mesh addresses). */
function enginePeersChanged(before: Netmap | undefined, after: Netmap): boolean {
  if (!before || before.peers.size !== after.peers.size) return true;
  for (const [id, p] of after.peers) {
    const q = before.peers.get(id);
    if (q === p) continue; // the reducer keeps unchanged peers' objects
    if (!q || q.nodeKey !== p.nodeKey || q.addresses.join() !== p.addresses.join()) return true;
  }
  return false;
}

function prefixed(prefix: string, o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${prefix}${k[0]!.toUpperCase()}${k.slice(1)}`, v]));
}

/** A URL fit for logs and status: scheme, host and path only. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/** How long the responder side withholds a new peer's endpoint from WireGuard (anti-stall). */
export const RESPONDER_WAIT_MS = 2000;

/** A dying path triggers a STUN round at most this often (several peers die together after a NAT change). */
export const REPROBE_ON_DEATH_MS = 5000;

/** WireGuard stats are read this often; they confirm paths and feed `knit status`. */
export const STATS_POLL_MS = 2000;

/** Paths are reported to the coordinator (console, `knit nodes`) this often, and this soon after a change. */
export const PATH_REPORT_MS = 30_000;
export const PATH_REPORT_DEBOUNCE_MS = 1000;

export interface PingResult { ok: boolean; path: PathKind; endpoint?: string; rttMs?: number; error?: string }

export class Agent {
  private readonly disco: DiscoCore;
  /** Relay fallback and the disco-or-relay path choice (agent/relay/, docs/relay.md). */
  private readonly relay: RelayPaths;
  /** WireGuard packets over the relay's WebSocket when UDP to the relay fails (docs/relay.md). */
  private readonly relayWs?: RelayWsBridge;
  private readonly probe: StunProbe;
  private readonly control: ControlClient;
  private readonly discoKey: string;
  private netmap: Netmap;
  private endpoints = new Map<string, { endpoint: string; initiator: boolean; at: number; via?: number }>(); // node key → chosen endpoint
  /** The hard side's extra sockets and the forwarding of a path found through one (agent/net/birthday-sockets.ts). */
  private readonly birthday?: BirthdaySockets;
  private stats = new Map<string, EnginePeerStats>();
  private selfEndpoints: string[] = [];
  private natType: NatType = 'unknown';
  private portPreserved?: boolean;
  private readonly timer: WakeupTimer;
  private statsTimer: ReturnType<Clock['setTimeout']> | undefined;
  private pathReportTimer: ReturnType<Clock['setTimeout']> | undefined;
  private pathReportAt = Infinity;
  private applying: Promise<void> = Promise.resolve();
  private applyQueued = false;
  private reassert = false;
  private controlStatus: { status: ControlStatus; detail?: string } = { status: 'disconnected' };
  private pingWaiters = new Map<string, (r: PingResult) => void>();
  private running = false;
  private stunServers: UdpEndpoint[] = [];
  private lastDeathProbe = -Infinity;
  private lastReflexive: string | undefined;
  private appliedMap: Netmap | undefined;
  private discoveryWaiters: ((r: DiscoveryResult | undefined) => void)[] = [];
  /** The verified port-mapped endpoint ("ip:port"), advertised first among our candidates. */
  private portMapped: string | undefined;
  readonly counters = { udpOther: 0, udpTotal: 0 };
  /** Path changes, for `knit ping --until-direct` and logs. */
  onPathChange?: (nodeKey: string, from: PathKind, to: PathKind) => void;

  constructor(private readonly o: AgentOptions, private readonly d: AgentDeps) {
    const discoPrivate = d.random(32);
    const discoPublic = x25519.getPublicKey(discoPrivate);
    this.discoKey = encodeKey(discoPublic);
    this.netmap = o.initialNetmap ?? { version: 0, selfId: o.node.id, peers: new Map() };
    this.disco = new DiscoCore({
      nodeKey: o.identity.publicKey, discoPrivateKey: discoPrivate, discoPublicKey: discoPublic, random: d.random, eagerLimit: o.eagerPeers,
      nodePrivateKey: o.identity.privateKey, hardNatSockets: d.extraUdp !== undefined,
    });
    if (d.extraUdp) {
      this.birthday = new BirthdaySockets({
        open: d.extraUdp.open, openLoopback: d.extraUdp.openLoopback, forwardPort: () => this.tunnelPort(),
        onDisco: (via, bytes, from) => { this.counters.udpTotal++; this.discoEvent({ type: 'udp', from, bytes, via }); },
      });
    }
    this.probe = new StunProbe(() => this.tunnelPort(), d.random);
    this.timer = new WakeupTimer(d.clock, () => this.tick());
    this.relay = new RelayPaths({ nodePublicKey: decodeKey(o.identity.publicKey)!, nodePrivateKey: o.identity.privateKey, random: d.random }, o.eagerPeers ?? EAGER_PEER_LIMIT);
    if (d.relayWs) {
      const bridge = new RelayWsBridge(d.relayWs, {
        // Packets from the relay go where WireGuard's arrive: the tunnel port, or the proxy's socket.
        forwardPort: () => (this.d.proxy ? this.d.udp.localPort() : this.tunnelPort()),
        onOpen: () => this.relayEvent({ type: 'ws-open' }),
        onControl: (bytes) => this.relayEvent({ type: 'ws-frame', bytes }),
        onClose: () => this.relayEvent({ type: 'ws-closed' }),
      });
      this.relayWs = bridge;
      // A stand-in is no direct path either (WireGuard reports it as the peer's endpoint).
      this.relay.alsoRelayEndpoint = (endpoint) => bridge.isStandIn(endpoint);
    }
    this.control = new ControlClient(
      { url: o.node.coordinatorUrl, coordinatorKey: o.node.coordinatorKey, nodePrivateKey: o.identity.privateKey, nodeKey: o.identity.publicKey, discoKey: this.discoKey, initialMap: this.netmap },
      {
        transport: d.transport, clock: d.clock, random: d.random, logger: d.logger,
        events: {
          onWelcome: (w) => this.welcomed(w),
          onNetmap: (m) => this.netmapChanged(m, true),
          onCallMeMaybe: (from, eps) => this.discoEvent({ type: 'call-me-maybe', fromNodeKey: from, endpoints: eps }),
          onStatus: (status, detail) => {
            this.controlStatus = { status, detail };
            d.logger.info('coordinator connection', { status, detail });
          },
        },
      },
    );
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const want = (nodeKey: string) => {
      this.discoEvent({ type: 'want', nodeKey });
      this.relayEvent({ type: 'want', nodeKey });
    };
    if (this.d.proxy) this.d.proxy.onWant = want;
    if (this.d.waker) this.d.waker.onWant = want;
    this.d.udp.onMessage((bytes, from) => this.packet(bytes, from));
    if (this.d.portMap) {
      this.d.portMap.onCandidate = (m) => this.portMapChanged(m?.external);
      void this.d.portMap.start(this.tunnelPort());
    }
    if (this.d.lan) {
      this.d.lan.onCandidate = (nodeKey, endpoint) => this.discoEvent({ type: 'lan-candidate', nodeKey, endpoint });
      this.d.lan.setPeers([...this.netmap.peers.values()].map((p) => p.nodeKey));
      this.d.lan.start({ name: this.o.node.name, nodeKey: this.o.identity.publicKey, discoKey: this.discoKey, port: this.tunnelPort(), meshId: meshIdOf(this.o.node.coordinatorKey) });
    }
    this.selfEndpoints = candidateEndpoints(this.d.localAddresses(), this.tunnelPort(), []);
    this.disco.handle({ type: 'self-endpoints', endpoints: this.selfEndpoints, natType: this.natType }, this.d.clock.now());
    // A cached peer map lets cached peers connect before (or without) the coordinator.
    if (this.netmap.peers.size > 0) this.netmapChanged(this.netmap, false);
    else this.requestApply();
    this.control.start();
    this.pollStats();
    this.schedulePathReport(PATH_REPORT_MS);
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.control.stop();
    this.timer.cancel();
    if (this.statsTimer !== undefined) this.d.clock.clearTimeout(this.statsTimer);
    if (this.pathReportTimer !== undefined) this.d.clock.clearTimeout(this.pathReportTimer);
    for (const w of this.pingWaiters.values()) w({ ok: false, path: 'none', error: 'agent stopping' });
    for (const w of this.discoveryWaiters.splice(0)) w(undefined);
    this.pingWaiters.clear();
    await this.d.lan?.stop();
    await this.d.portMap?.stop(); // deletes the gateway's mapping
    await this.applying;
    this.d.proxy?.close();
    this.d.waker?.close();
    this.relayWs?.close();
    this.birthday?.close();
    this.d.udp.close();
  }

  /** The UDP port the world sees for this node's tunnel. */
  private tunnelPort(): number {
    return this.d.tunnelPort ?? this.d.udp.localPort();
  }

  /** The host's addresses changed (roaming): re-probe, re-punch, re-assert the engine's endpoints. */
  networkChanged(): void {
    const now = this.d.clock.now();
    this.d.logger.info('network changed', { addresses: this.d.localAddresses() });
    this.control.reconnectNow();
    this.selfEndpoints = candidateEndpoints(this.d.localAddresses(), this.tunnelPort(), []);
    this.reportEndpoints();
    this.probe.configure(this.stunServers, this.d.localAddresses());
    this.runDiscovery(this.probe.trigger(now));
    this.discoEvent({ type: 'network-changed' });
    this.relayEvent({ type: 'network-changed' });
    this.d.lan?.refreshInterfaces();
    this.d.portMap?.networkChanged();
    this.reassert = true;
    this.requestApply();
  }

  private welcomed(w: WelcomeMsg): void {
    this.stunServers = w.stun.map((port) => ({ address: this.o.stunHost, port }));
    this.d.portMap?.setObservers(this.stunServers);
    this.probe.configure(this.stunServers, this.d.localAddresses());
    this.runDiscovery(this.probe.trigger(this.d.clock.now()));
    this.reportEndpoints();
    this.schedulePathReport(PATH_REPORT_DEBOUNCE_MS); // the coordinator may have lost our last report
    // The first relay announced is used (absent host = the coordinator's host, like STUN).
    this.relayEvent({ type: 'relays', relays: (w.relays ?? []).map((r) => ({ key: r.key, endpoint: { address: r.host ?? this.o.stunHost, port: r.port }, ws: r.ws })) });
  }

  private netmapChanged(map: Netmap, fromCoordinator: boolean): void {
    const previous = this.appliedMap;
    this.appliedMap = map;
    this.netmap = map;
    const peers = [...map.peers.values()];
    const keys = new Set(peers.map((p) => p.nodeKey));
    for (const k of this.endpoints.keys()) if (!keys.has(k)) this.endpoints.delete(k);
    this.d.lan?.setPeers([...keys]);
    // The map's own objects: the reducer keeps an unchanged peer's object, so the cores can skip it.
    this.discoEvent({ type: 'peers-updated', peers });
    // Most deltas (online, endpoints, disco keys) change nothing WireGuard is told: the engine's
    // peer set is keys and mesh addresses. Skipping those applies keeps a big mesh's churn cheap.
    this.relayEvent({ type: 'peers', peers });
    if (enginePeersChanged(previous, map)) this.requestApply();
    if (fromCoordinator) this.d.saveNetmap?.(map);
  }

  private packet(bytes: Uint8Array, from: UdpEndpoint): void {
    this.counters.udpTotal++;
    const now = this.d.clock.now();
    if (isRelayPacket(bytes)) return this.relayEvent({ type: 'udp', from, bytes });
    if (isDiscoPacket(bytes)) return this.discoEvent({ type: 'udp', from, bytes });
    if (isStunPacket(bytes)) {
      this.d.portMap?.tunnelStun(bytes, from); // the port mapping's verification echo; each ignores the other's answers
      return this.runDiscovery(this.probe.packet(from, bytes, now));
    }
    this.counters.udpOther++;
    this.d.proxy?.fromNetwork(bytes, from);
  }

  private discoEvent(e: Parameters<DiscoCore['handle']>[0]): void {
    this.perform(this.disco.handle(e, this.d.clock.now()));
    this.arm();
  }

  private runDiscovery(actions: DiscoveryAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') this.d.udp.send(a.bytes, a.to);
      else {
        const r = a.result;
        this.natType = r.natType;
        this.portPreserved = r.portPreserved;
        const before = this.lastReflexive;
        this.lastReflexive = r.reflexive.map((e) => `${e.address}:${e.port}`).sort().join(',');
        this.selfEndpoints = candidateEndpoints(this.d.localAddresses(), this.tunnelPort(), r.reflexive);
        this.d.logger.debug('endpoints discovered', { endpoints: this.selfEndpoints, nat: r.natType });
        this.reportEndpoints();
        // Our public mapping moved (the NAT's address changed, or it forgot us) while nothing
        // local changed: to peers this is a roam, so re-punch and tell them where we are now.
        if (before !== undefined && r.reflexive.length > 0 && before !== this.lastReflexive) {
          this.d.logger.info('public endpoint changed', { endpoints: this.selfEndpoints });
          this.control.reconnectNow(); // the control TCP connection went through the old mapping
          this.perform(this.disco.handle({ type: 'network-changed' }, this.d.clock.now()));
          this.relayEvent({ type: 'network-changed' }); // the relay's binding went through the old mapping too
        }
        for (const w of this.discoveryWaiters.splice(0)) w(r);
      }
    }
    this.arm();
  }

  /**
   * A path died: maybe our NAT's public address or mapping changed, which no local
   * interface change reveals. Re-probe at once (at most every REPROBE_ON_DEATH_MS)
   * rather than waiting for the periodic round, so peers get our new endpoint fast.
   */
  private rediscoverSoon(): void {
    const now = this.d.clock.now();
    if (this.stunServers.length === 0 || now - this.lastDeathProbe < REPROBE_ON_DEATH_MS) return;
    this.lastDeathProbe = now;
    this.runDiscovery(this.probe.trigger(now));
  }

  /** Runs a fresh STUN round from the tunnel port (knit netcheck); undefined when no observer is known yet. */
  netcheck(): Promise<{ result?: DiscoveryResult; servers: string[]; localAddresses: string[]; port: number }> {
    const base = { servers: this.stunServers.map((s) => `${s.address}:${s.port}`), localAddresses: this.d.localAddresses(), port: this.tunnelPort() };
    if (this.stunServers.length === 0) return Promise.resolve(base);
    return new Promise((resolve) => {
      this.discoveryWaiters.push((result) => resolve({ ...base, result }));
      this.runDiscovery(this.probe.trigger(this.d.clock.now()));
    });
  }

  private reportEndpoints(): void {
    // A verified port mapping comes first: peers reach it without punching.
    if (this.portMapped && !this.selfEndpoints.includes(this.portMapped)) this.selfEndpoints = [this.portMapped, ...this.selfEndpoints].slice(0, MAX_ENDPOINTS);
    this.control.reportEndpoints(this.selfEndpoints, this.natType);
    this.perform(this.disco.handle({ type: 'self-endpoints', endpoints: this.selfEndpoints, natType: this.natType }, this.d.clock.now()));
  }

  /** The verified port mapping appeared, moved or went away: report it like the STUN-discovered endpoints. */
  private portMapChanged(external: string | undefined): void {
    if (external === this.portMapped || !this.running) return;
    const old = this.portMapped;
    this.portMapped = external;
    if (old) this.selfEndpoints = this.selfEndpoints.filter((e) => e !== old);
    this.reportEndpoints();
  }

  private perform(actions: DiscoAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send-udp':
          if (a.via === undefined) this.d.udp.send(a.bytes, a.to);
          else this.birthday?.send(a.via, a.bytes, a.to);
          break;
        case 'release-sockets':
          this.birthday?.release(a.ids);
          this.requestApply();
          break;
        case 'send-call-me-maybe': this.control.callMeMaybe(a.toNodeKey, a.endpoints); break;
        case 'set-peer-endpoint':
          this.endpoints.set(a.nodeKey, { endpoint: a.endpoint, initiator: a.initiator, at: this.d.clock.now(), ...(a.via !== undefined && { via: a.via }) });
          this.requestApply();
          // The waker replays from the tunnel port; a path on an extra socket gets WireGuard's next try instead.
          { const ep = parseEndpoint(a.endpoint); if (ep && a.via === undefined) this.d.waker?.pathFound(a.nodeKey, ep); }
          // The responder's withheld endpoint (see desiredConfig) is handed over after the wait.
          if (!a.initiator) this.d.clock.setTimeout(() => this.requestApply(), RESPONDER_WAIT_MS);
          break;
        case 'path-changed':
          // Disco's own view; what the peer's path is (relay included) comes back as a relay 'path' action.
          this.relayEvent({ type: 'disco-path', nodeKey: a.nodeKey, kind: a.to, endpoint: a.endpoint });
          if (a.to === 'none') this.rediscoverSoon();
          break;
        case 'pong': {
          const w = this.pingWaiters.get(a.nodeKey);
          if (w) {
            this.pingWaiters.delete(a.nodeKey);
            w({ ok: true, path: a.path, endpoint: a.endpoint, rttMs: a.rttMs });
          }
          break;
        }
      }
    }
  }

  private relayEvent(e: RelayPathsEvent): void {
    this.performRelay(this.relay.handle(e, this.d.clock.now()));
    this.arm();
  }

  private performRelay(actions: RelayPathsAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send-udp': this.d.udp.send(a.bytes, a.to); break;
        case 'reprobe': if (this.stunServers.length > 0) this.runDiscovery(this.probe.trigger(this.d.clock.now())); break;
        case 'udp-unanswered':
          this.d.logger.warn('the relay does not answer over UDP', { relay: this.relay.client.target?.endpoint, fallback: this.relayWs && this.relay.client.target?.ws ? 'websocket' : 'none' });
          break;
        case 'ws-connect':
          if (!this.relayWs) break;
          this.d.logger.info('relay: opening the WebSocket fallback', { relay: safeUrl(a.url) });
          this.relayWs.connect(a.url);
          break;
        case 'ws-send': this.relayWs?.sendControl(a.bytes); break;
        case 'ws-ready':
          this.d.logger.info('relay: WebSocket authenticated');
          this.relayWs?.setReady();
          break;
        case 'ws-close': this.relayWs?.disconnect(); break;
        case 'ws-claim': this.relayWs?.claim(a.peer); break;
        case 'path': {
          this.d.logger.info('path changed', { peer: this.peerName(a.nodeKey), from: a.from, to: a.to, endpoint: a.endpoint });
          this.onPathChange?.(a.nodeKey, a.from, a.to);
          this.schedulePathReport(PATH_REPORT_DEBOUNCE_MS);
          this.requestApply();
          if (a.to === 'relay') {
            // WireGuard's first initiation, held by the waker, goes to the relay at once.
            const ep = parseEndpoint(a.endpoint);
            if (ep) this.d.waker?.pathFound(a.nodeKey, ep);
            if (!this.isInitiator(a.nodeKey)) this.d.clock.setTimeout(() => this.requestApply(), RESPONDER_WAIT_MS);
          }
          break;
        }
      }
    }
  }

  private isInitiator(nodeKey: string): boolean {
    return this.o.identity.publicKey < nodeKey;
  }

  /** What the engine is told for a peer: the relay while relayed, else disco's choice (kept while there is none). */
  private engineEndpoint(nodeKey: string): { endpoint: string; initiator: boolean; at: number; via?: number } | undefined {
    const path = this.relay.path(nodeKey);
    if (path.kind === 'relay' && path.endpoint === RELAY_WS_ENDPOINT) {
      // Over the relay's WebSocket: WireGuard talks to the peer's loopback stand-in (prepared by requestApply).
      const standIn = this.relayWs?.standIn(nodeKey);
      return standIn ? { endpoint: standIn, initiator: this.isInitiator(nodeKey), at: this.relay.relaySince(nodeKey) } : undefined;
    }
    if (path.kind === 'relay' && path.endpoint) return { endpoint: path.endpoint, initiator: this.isInitiator(nodeKey), at: this.relay.relaySince(nodeKey) };
    return this.endpoints.get(nodeKey);
  }

  /** A relay path as status shows it: relay:port, or the WebSocket's URL (without credentials or query). */
  private relayEndpointText(endpoint: string | undefined): string | undefined {
    if (endpoint !== RELAY_WS_ENDPOINT) return endpoint;
    const url = this.relay.client.target?.ws;
    return url ? safeUrl(url) : endpoint;
  }

  private peerName(nodeKey: string): string {
    for (const p of this.netmap.peers.values()) if (p.nodeKey === nodeKey) return p.name;
    return nodeKey.slice(0, 8);
  }

  /** One timer for the cores: the earliest wakeup any asks for. */
  private arm(): void {
    if (!this.running) return;
    this.timer.arm(Math.min(this.disco.nextWakeup() ?? Infinity, this.probe.nextWakeup() ?? Infinity, this.relay.nextWakeup() ?? Infinity));
  }

  private tick(): void {
    const now = this.d.clock.now();
    this.runDiscovery(this.probe.tick(now));
    this.perform(this.disco.handle({ type: 'tick' }, now));
    this.performRelay(this.relay.handle({ type: 'tick' }, now));
    this.arm();
  }

  private desiredConfig(): EngineConfig {
    const proxy = this.d.proxy;
    return {
      privateKey: encodeKey(this.o.identity.privateKey),
      listenPort: proxy ? proxy.enginePort : this.tunnelPort(),
      addresses: this.o.node.addresses,
      peers: [...this.netmap.peers.values()].map((p: PeerInfo) => {
        const chosen = this.engineEndpoint(p.nodeKey);
        const handshook = (this.stats.get(p.nodeKey)?.lastHandshakeMs ?? 0) > 0;
        // Anti-stall (LAB-NOTES): the two sides must never initiate in lock-step. The initiator
        // gets endpoint and keepalive at once (setting keepalive makes WireGuard initiate); the
        // responder gets no endpoint for RESPONDER_WAIT_MS — its WireGuard learns it from the
        // initiation — and keepalive only after the first handshake.
        const keepalive = chosen && (chosen.initiator || handshook) ? this.o.keepaliveS : 0;
        const waiting = chosen !== undefined && !chosen.initiator && !handshook && this.d.clock.now() - chosen.at < RESPONDER_WAIT_MS;
        // A path on a hard-NAT extra socket reaches WireGuard through its loopback stand-in.
        const direct = chosen?.via !== undefined ? this.birthday?.standIn(p.nodeKey) : chosen?.endpoint;
        const real = proxy ? proxy.engineEndpoint(p.nodeKey, direct) : direct; // the proxy needs the route either way
        // Shared mode: a peer without a path points at the waker, so WireGuard's wish to reach it
        // is seen (on-demand punching); the proxy's stand-ins do the same in proxy mode.
        const endpoint = waiting ? undefined : real ?? this.d.waker?.endpoint;
        return { publicKey: p.nodeKey, allowedIps: meshAllowedIps(p.addresses, this.o.node), endpoint, persistentKeepaliveS: keepalive };
      }),
    };
  }

  /** Applies the desired engine config; applies never overlap, and a burst of requests costs one apply. */
  private requestApply(): void {
    if (this.applyQueued) return;
    this.applyQueued = true;
    this.applying = this.applying.then(async () => {
      this.applyQueued = false;
      if (!this.running) return;
      const reassert = this.reassert;
      this.reassert = false;
      try {
        await this.d.proxy?.prepare([...this.netmap.peers.values()].map((p) => p.nodeKey));
        await this.relayWs?.prepare(this.relay.wsPeers());
        if (this.birthday) {
          const routes = [];
          for (const p of this.netmap.peers.values()) {
            const e = this.engineEndpoint(p.nodeKey);
            const peer = e?.via !== undefined ? parseEndpoint(e.endpoint) : undefined;
            if (peer) routes.push({ nodeKey: p.nodeKey, via: e!.via!, peer });
          }
          await this.birthday.prepare(routes);
        }
        this.d.waker?.setPathless([...this.netmap.peers.values()].filter((p) => !this.engineEndpoint(p.nodeKey)).map((p) => p.nodeKey));
        await this.d.engine.apply(this.desiredConfig(), { reassertEndpoints: reassert });
      } catch (err) {
        this.d.logger.error('engine apply failed', { err: (err as Error).message });
      }
    });
  }

  /** Reports a path sample in `inMs` unless one is due sooner; each report schedules the next. */
  private schedulePathReport(inMs: number): void {
    if (!this.running) return;
    const at = this.d.clock.now() + inMs;
    if (this.pathReportTimer !== undefined && this.pathReportAt <= at) return;
    if (this.pathReportTimer !== undefined) this.d.clock.clearTimeout(this.pathReportTimer);
    this.pathReportAt = at;
    this.pathReportTimer = this.d.clock.setTimeout(() => {
      this.pathReportTimer = undefined;
      this.pathReportAt = Infinity;
      this.control.reportPaths(this.pathSample());
      this.schedulePathReport(PATH_REPORT_MS);
    }, inMs);
  }

  /**
   * Our paths as the coordinator wants them, cheaply (every agent sends one a second while
   * paths change): O(1) per peer, no status document. In a big mesh most peers are idle by
   * design (paths on demand), so only connected ones are reported; a small one reports all.
   */
  private pathSample(): PathReport[] {
    const now = this.d.clock.now();
    const big = this.netmap.peers.size > (this.o.eagerPeers ?? EAGER_PEER_LIMIT);
    const out: PathReport[] = [];
    for (const p of this.netmap.peers.values()) {
      const kind = this.relay.path(p.nodeKey).kind;
      if (big && kind === 'none') continue;
      const rttMs = kind === 'lan' || kind === 'direct' ? this.disco.rttOf(p.nodeKey, now) : undefined;
      out.push({ peer: p.nodeKey, kind, lastHandshake: this.stats.get(p.nodeKey)?.lastHandshakeMs ?? 0, ...(rttMs !== undefined ? { rttMs } : {}) });
      if (out.length >= MAX_PATH_REPORTS) break;
    }
    return out;
  }

  private pollStats(): void {
    if (!this.running) return;
    this.statsTimer = this.d.clock.setTimeout(async () => {
      try {
        const list = await this.d.engine.stats();
        let newHandshake = false;
        for (const s of list) {
          const prev = this.stats.get(s.publicKey);
          if ((prev?.lastHandshakeMs ?? 0) === 0 && s.lastHandshakeMs > 0) newHandshake = true;
          this.stats.set(s.publicKey, s);
          if (s.lastHandshakeMs > 0 && s.lastHandshakeMs !== prev?.lastHandshakeMs) {
            // Through the proxy WireGuard only ever sees the loopback stand-in: its endpoint says nothing.
            // Nor is a relay port (WireGuard roams to it when relayed packets arrive) a direct path.
            // A hard-NAT stand-in (loopback) isn't one either.
            const endpoint = this.d.proxy || this.relay.isRelayEndpoint(s.endpoint) || this.birthday?.isStandIn(s.endpoint) ? undefined : s.endpoint;
            this.discoEvent({ type: 'wireguard-stats', nodeKey: s.publicKey, lastHandshakeMs: s.lastHandshakeMs, endpoint });
          }
        }
        // WireGuard roams to the relay port when a relayed packet arrives after we went direct
        // (both sides switch at slightly different moments): put it back on the direct path.
        const roamedBack = !this.d.proxy && list.some((s) => this.relay.isRelayEndpoint(s.endpoint) && this.relay.path(s.publicKey).kind !== 'relay');
        if (roamedBack) this.reassert = true;
        if (newHandshake || roamedBack) this.requestApply(); // the responder side may now turn its keepalive on
      } catch (err) {
        this.d.logger.warn('engine stats failed', { err: (err as Error).message });
      }
      this.pollStats();
    }, STATS_POLL_MS);
  }

  /** Finds a peer by name, mesh IP or node key. */
  findPeer(selector: string): PeerInfo | undefined {
    for (const p of this.netmap.peers.values()) {
      if (p.name === selector || p.nodeKey === selector || p.addresses.some((a) => a.split('/')[0] === selector)) return p;
    }
    return undefined;
  }

  /** One disco ping round to a peer; resolves with the first pong or a timeout. */
  ping(selector: string, timeoutMs = 3000): Promise<PingResult> {
    const peer = this.findPeer(selector);
    if (!peer) return Promise.resolve({ ok: false, path: 'none', error: `no peer called ${selector}` });
    return new Promise((resolve) => {
      const t = this.d.clock.setTimeout(() => {
        this.pingWaiters.delete(peer.nodeKey);
        resolve({ ok: false, path: 'none', error: 'no answer' });
      }, timeoutMs);
      this.pingWaiters.set(peer.nodeKey, (r) => { this.d.clock.clearTimeout(t); resolve(r); });
      this.discoEvent({ type: 'ping-now', nodeKey: peer.nodeKey });
    });
  }

  status(): StatusDocument {
    const now = this.d.clock.now();
    const disco = new Map(this.disco.peerStatus(now).map((s) => [s.nodeKey, s]));
    return {
      self: {
        id: this.o.node.id, name: this.o.node.name, nodeKey: this.o.identity.publicKey,
        ips: this.o.node.addresses.map((a) => a.split('/')[0]!), port: this.tunnelPort(),
        endpoints: this.selfEndpoints, natType: this.natType, portPreserving: this.portPreserved,
      },
      coordinator: { url: this.o.node.coordinatorUrl, status: this.controlStatus.status, detail: this.controlStatus.detail, version: this.netmap.version },
      engine: { kind: this.d.engine.kind, iface: this.o.iface, portMode: this.o.portMode },
      ...(this.d.portMap ? { portMapping: describePortMapping(this.d.portMap.status(), now, this.d.clock.wallNow()) } : {}),
      counters: {
        ...this.counters, ...this.disco.counters,
        ...(this.d.proxy ? prefixed('proxy', this.d.proxy.counters) : {}), ...(this.d.waker ? prefixed('waker', this.d.waker.counters) : {}),
        ...(this.d.lan?.counters ? prefixed('lan', { ...this.d.lan.counters }) : {}),
        ...(this.d.portMap ? prefixed('portmap', { ...this.d.portMap.counters }) : {}),
        ...prefixed('relay', { ...this.relay.client.counters }),
        ...(this.relayWs ? prefixed('relayWs', { ...this.relayWs.counters, open: this.relay.client.webSocketState === 'ready' ? 1 : 0 }) : {}),
        ...(this.birthday ? prefixed('birthday', { ...this.birthday.counters, open: this.birthday.size }) : {}),
      },
      peers: [...this.netmap.peers.values()].map((p) => {
        const s = disco.get(p.nodeKey);
        const st = this.stats.get(p.nodeKey);
        const path = this.relay.path(p.nodeKey);
        return {
          id: p.id, name: p.name, nodeKey: p.nodeKey, ip: p.addresses[0]?.split('/')[0] ?? '', ips: p.addresses.map((a) => a.split('/')[0]!),
          online: p.online, path: path.kind, endpoint: path.kind === 'relay' ? this.relayEndpointText(path.endpoint) : s?.endpoint,
          ...(path.kind === 'relay' ? { transport: this.relay.transport(p.nodeKey) } : {}), rttMs: path.kind === 'relay' ? undefined : s?.rttMs,
          lastHandshake: st?.lastHandshakeMs ?? 0, rxBytes: st?.rxBytes ?? 0, txBytes: st?.txBytes ?? 0, why: path.kind === 'none' ? s?.why : undefined,
        };
      }),
    };
  }

  /** The peer map held now: cheap, unlike status() (the simulator checks convergence with it). */
  get mapInfo(): { version: number; peers: number } {
    return { version: this.netmap.version, peers: this.netmap.peers.size };
  }

  /** Our current candidate endpoints (for tests and status). */
  get endpointsReported(): string[] {
    return this.selfEndpoints;
  }
}

