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
 *   StunProbe result → our endpoints (self-endpoints.ts) → coordinator + DiscoCore (for call-me-maybe)
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
import type { PeerInfo, WelcomeMsg } from '../shared/wire/control.js';
import { isDiscoPacket } from '../shared/wire/disco.js';
import { isRelayPacket } from '../shared/wire/relay.js';
import { isStunPacket } from '../shared/wire/stun.js';
import { ControlClient, type ControlStatus, type ControlTransport } from './control/client.js';
import type { Netmap } from './control/netmap.js';
import { DiscoCore, EAGER_PEER_LIMIT } from './disco/core.js';
import type { DiscoAction } from './disco/events.js';
import { RelayPaths, type RelayPathsAction, type RelayPathsEvent } from './relay/paths.js';
import {
  birthdayRoutes, desiredEngineConfig, enginePeersChanged, isInitiator, pathlessPeers, RESPONDER_WAIT_MS,
  type ChosenEndpoint, type EndpointSources,
} from './engine-config.js';
import { engineHealthChecks, familyRecheckDue } from './engine-health.js';
import { EngineStatsPoller } from './engine-stats.js';
import type { Engine } from './engine/types.js';
import type { LanDiscovery } from './lan/discovery.js';
import { meshIdOf } from './lan/records.js';
import { BirthdaySockets } from './net/birthday-sockets.js';
import type { WireguardProxy } from './net/proxy.js';
import { RelayWsBridge, type RelayWsDeps } from './net/relay-ws-bridge.js';
import type { SharedModeWaker } from './net/waker.js';
import { PathConfirmer } from './path-confirm.js';
import { PATH_REPORT_DEBOUNCE_MS, PATH_REPORT_MS, pathReports, PathReportTimer } from './path-reports.js';
import type { PortMapService } from './portmap/index.js';
import type { NodeIdentity, NodeRecord } from './state.js';
import { SelfEndpoints, type NetcheckReport } from './self-endpoints.js';
import type { HealthCheck } from './health.js';
import { WG_DEFAULT_MTU } from './engine/ip-link.js';
import { mtuHealth, peerTunnelMtu, type PathMtuReport, type TunnelMtuSources } from './tunnel-mtu.js';
import type { PathKind, StatusDocument } from './status.js';
import { buildStatus, safeUrl } from './status-builder.js';

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
  /** The host's input firewall and Knit's scoped rules in it (agent/firewall/); absent with the memory engine. */
  firewall?: { health(): HealthCheck };
}

export interface PingResult { ok: boolean; path: PathKind; endpoint?: string; rttMs?: number; error?: string }

export class Agent {
  private readonly disco: DiscoCore;
  /** Relay fallback and the disco-or-relay path choice (agent/relay/, docs/relay.md). */
  private readonly relay: RelayPaths;
  /** WireGuard packets over the relay's WebSocket when UDP to the relay fails (docs/relay.md). */
  private readonly relayWs?: RelayWsBridge;
  /** Our candidate endpoints: host addresses, STUN, the port mapping. */
  private readonly selfEndpoints: SelfEndpoints;
  private readonly control: ControlClient;
  private readonly discoKey: string;
  private netmap: Netmap;
  private readonly endpoints = new Map<string, ChosenEndpoint>(); // node key → disco's chosen endpoint
  private readonly endpointSources: EndpointSources;
  /** What disco proved each peer's chosen path carries (agent/tunnel-mtu.ts), by node key. */
  private readonly pathMtus = new Map<string, PathMtuReport>();
  private readonly mtuSources: TunnelMtuSources;
  /** The hard side's extra sockets and the forwarding of a path found through one (agent/net/birthday-sockets.ts). */
  private readonly birthday?: BirthdaySockets;
  private readonly engineStats: EngineStatsPoller;
  /** Whether each path carries the tunnel yet (a handshake newer than the path), and forced handshakes when not. */
  private readonly confirm = new PathConfirmer();
  /** Peers to re-create at the next apply, so WireGuard handshakes at once (PathConfirmer.due). */
  private readonly rehandshake = new Set<string>();
  private readonly timer: WakeupTimer;
  private readonly pathReportTimer: PathReportTimer;
  private applying: Promise<void> = Promise.resolve();
  private applyQueued = false;
  private reassert = false;
  /** When a switched-off address family was last tried again (agent/engine-health.ts). */
  private familyRecheckAt = 0;
  private controlStatus: { status: ControlStatus; detail?: string } = { status: 'disconnected' };
  private pingWaiters = new Map<string, (r: PingResult) => void>();
  private running = false;
  private appliedMap: Netmap | undefined;
  readonly counters = { udpOther: 0, udpTotal: 0 };
  /** Path changes (the path handed to the engine), for the simulator's timings and logs. */
  onPathChange?: (nodeKey: string, from: PathKind, to: PathKind) => void;
  /** A path carries the tunnel: WireGuard handshook over it after it was handed over. */
  onPathConfirmed?: (nodeKey: string, kind: PathKind) => void;

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
    this.selfEndpoints = new SelfEndpoints({
      clock: d.clock, random: d.random, logger: d.logger, udp: d.udp, localAddresses: () => d.localAddresses(), tunnelPort: () => this.tunnelPort(),
      report: (endpoints, natType) => {
        this.control.reportEndpoints(endpoints, natType);
        this.perform(this.disco.handle({ type: 'self-endpoints', endpoints, natType }, this.d.clock.now()));
      },
      publicEndpointMoved: () => {
        this.control.reconnectNow(); // the control TCP connection went through the old mapping
        this.perform(this.disco.handle({ type: 'network-changed' }, this.d.clock.now()));
        this.relayEvent({ type: 'network-changed' }); // the relay's binding went through the old mapping too
      },
      arm: () => this.arm(),
    });
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
    this.endpointSources = { selfNodeKey: o.identity.publicKey, relay: this.relay, relayWs: this.relayWs, disco: this.endpoints };
    this.mtuSources = { interfaceMtu: WG_DEFAULT_MTU, relay: this.relay, pathMtus: this.pathMtus };
    this.engineStats = new EngineStatsPoller({
      clock: d.clock, logger: d.logger, engine: d.engine, running: () => this.running,
      onHandshake: (s) => {
        // Through the proxy WireGuard only ever sees the loopback stand-in: its endpoint says nothing.
        // Nor is a relay port (WireGuard roams to it when relayed packets arrive) a direct path.
        // A hard-NAT stand-in (loopback) isn't one either.
        const endpoint = this.d.proxy || this.relay.isRelayEndpoint(s.endpoint) || this.birthday?.isStandIn(s.endpoint) ? undefined : s.endpoint;
        this.discoEvent({ type: 'wireguard-stats', nodeKey: s.publicKey, lastHandshakeMs: s.lastHandshakeMs, endpoint });
      },
      onRead: (list, firstHandshake) => {
        for (const s of list) {
          if (!this.confirm.handshake(s.publicKey, s.lastHandshakeMs)) continue;
          const path = this.relay.path(s.publicKey);
          this.d.logger.info('path confirmed by a handshake', { peer: this.peerName(s.publicKey), path: path.kind, endpoint: path.endpoint });
          this.pathReportTimer.schedule(PATH_REPORT_DEBOUNCE_MS);
          this.onPathConfirmed?.(s.publicKey, path.kind);
        }
        this.engineStats.setFast(this.confirm.pending());
        this.arm();
        // WireGuard roams to the relay port when a relayed packet arrives after we went direct
        // (both sides switch at slightly different moments): put it back on the direct path.
        const roamedBack = !this.d.proxy && list.some((s) => this.relay.isRelayEndpoint(s.endpoint) && this.relay.path(s.publicKey).kind !== 'relay');
        if (roamedBack) this.reassert = true;
        if (firstHandshake || roamedBack) this.requestApply(); // the responder side may now turn its keepalive on
        // A family the host had switched off (IPv6) is picked up once it is back.
        const now = this.d.clock.now();
        if (familyRecheckDue(this.d.engine.health(), this.familyRecheckAt, now)) {
          this.familyRecheckAt = now;
          this.requestApply();
        }
      },
    });
    this.pathReportTimer = new PathReportTimer({
      clock: d.clock, running: () => this.running,
      report: () => this.control.reportPaths(pathReports({
        now: this.d.clock.now(), peers: this.netmap.peers, eagerLimit: this.o.eagerPeers ?? EAGER_PEER_LIMIT,
        relay: this.relay, disco: this.disco, stats: this.engineStats.stats, confirm: this.confirm,
      })),
    });
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
      this.d.portMap.onCandidate = (m) => { if (this.running) this.selfEndpoints.portMapChanged(m?.external); };
      void this.d.portMap.start(this.tunnelPort());
    }
    if (this.d.lan) {
      this.d.lan.onCandidate = (nodeKey, endpoint) => this.discoEvent({ type: 'lan-candidate', nodeKey, endpoint });
      this.d.lan.setPeers([...this.netmap.peers.values()].map((p) => p.nodeKey));
      this.d.lan.start({ name: this.o.node.name, nodeKey: this.o.identity.publicKey, discoKey: this.discoKey, port: this.tunnelPort(), meshId: meshIdOf(this.o.node.coordinatorKey) });
    }
    this.selfEndpoints.resetToLocal();
    this.disco.handle({ type: 'self-endpoints', endpoints: this.selfEndpoints.list, natType: this.selfEndpoints.natType }, this.d.clock.now());
    // A cached peer map lets cached peers connect before (or without) the coordinator.
    if (this.netmap.peers.size > 0) this.netmapChanged(this.netmap, false);
    else this.requestApply();
    this.control.start();
    this.engineStats.poll();
    this.pathReportTimer.schedule(PATH_REPORT_MS);
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.control.stop();
    this.timer.cancel();
    this.engineStats.cancel();
    this.pathReportTimer.cancel();
    for (const w of this.pingWaiters.values()) w({ ok: false, path: 'none', error: 'agent stopping' });
    this.selfEndpoints.cancelNetchecks();
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
    this.selfEndpoints.resetToLocal();
    this.selfEndpoints.report();
    this.selfEndpoints.reconfigure(now);
    this.discoEvent({ type: 'network-changed' });
    this.relayEvent({ type: 'network-changed' });
    this.d.lan?.refreshInterfaces();
    this.d.portMap?.networkChanged();
    this.reassert = true;
    this.requestApply();
  }

  private welcomed(w: WelcomeMsg): void {
    const observers = w.stun.map((port) => ({ address: this.o.stunHost, port }));
    this.selfEndpoints.setObservers(observers);
    this.selfEndpoints.loopbackAccepted = w.loopbackEndpoints === true;
    this.d.portMap?.setObservers(observers);
    this.selfEndpoints.reconfigure(this.d.clock.now());
    this.selfEndpoints.report();
    this.pathReportTimer.schedule(PATH_REPORT_DEBOUNCE_MS); // the coordinator may have lost our last report
    // The first relay announced is used (absent host = the coordinator's host, like STUN).
    this.relayEvent({ type: 'relays', relays: (w.relays ?? []).map((r) => ({ key: r.key, endpoint: { address: r.host ?? this.o.stunHost, port: r.port }, ws: r.ws })) });
  }

  private netmapChanged(map: Netmap, fromCoordinator: boolean): void {
    const previous = this.appliedMap;
    this.appliedMap = map;
    this.netmap = map;
    const peers = [...map.peers.values()];
    const keys = new Set(peers.map((p) => p.nodeKey));
    for (const k of this.endpoints.keys()) {
      if (keys.has(k)) continue;
      this.endpoints.delete(k);
      this.confirm.forget(k);
    }
    for (const k of this.pathMtus.keys()) if (!keys.has(k)) this.pathMtus.delete(k);
    // A peer that restarted (a new disco key) lost its WireGuard session: ours to it is dead too.
    if (previous) {
      for (const p of peers) {
        const before = previous.peers.get(p.id);
        if (before && before !== p && before.discoKey !== '' && before.discoKey !== p.discoKey) this.peerRestarted(p.nodeKey);
      }
    }
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
      return this.selfEndpoints.packet(from, bytes, now);
    }
    this.counters.udpOther++;
    this.d.proxy?.fromNetwork(bytes, from);
  }

  private discoEvent(e: Parameters<DiscoCore['handle']>[0]): void {
    this.perform(this.disco.handle(e, this.d.clock.now()));
    this.arm();
  }

  /** Runs a fresh STUN round from the tunnel port (knit netcheck); undefined when no observer is known yet. */
  netcheck(): Promise<NetcheckReport> {
    return this.selfEndpoints.netcheck();
  }

  private perform(actions: DiscoAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send-udp':
          if (a.via === undefined) this.d.udp.send(a.bytes, a.to, a.ttl === undefined ? undefined : { ttl: a.ttl });
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
          // The responder's withheld endpoint (agent/engine-config.ts) is handed over after the wait.
          if (!a.initiator) this.d.clock.setTimeout(() => this.requestApply(), RESPONDER_WAIT_MS);
          break;
        case 'path-changed':
          // Disco's own view; what the peer's path is (relay included) comes back as a relay 'path' action.
          this.relayEvent({ type: 'disco-path', nodeKey: a.nodeKey, kind: a.to, endpoint: a.endpoint });
          if (a.to === 'none') this.selfEndpoints.rediscoverSoon();
          break;
        case 'path-mtu':
          if (a.tunnelMtu === undefined) this.pathMtus.delete(a.nodeKey);
          else this.pathMtus.set(a.nodeKey, { endpoint: a.endpoint, pathMtu: a.pathMtu, tunnelMtu: a.tunnelMtu });
          if (a.tunnelMtu !== undefined && a.tunnelMtu < WG_DEFAULT_MTU) this.d.logger.info('path MTU', { peer: this.peerName(a.nodeKey), endpoint: a.endpoint, pathMtu: a.pathMtu, tunnelMtu: a.tunnelMtu });
          this.requestApply();
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
        case 'reprobe': this.selfEndpoints.reprobe(this.d.clock.now()); break;
        case 'observed-port': this.selfEndpoints.relayObservedPort(a.port, this.d.clock.now()); break;
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
          // Handed to the engine now; it counts once WireGuard handshakes over it (path-confirm.ts).
          this.confirm.pathChanged(a.nodeKey, a.to, a.endpoint, isInitiator(this.o.identity.publicKey, a.nodeKey), this.d.clock.now(), this.d.clock.wallNow());
          this.engineStats.setFast(this.confirm.pending());
          this.onPathChange?.(a.nodeKey, a.from, a.to);
          this.pathReportTimer.schedule(PATH_REPORT_DEBOUNCE_MS);
          this.requestApply();
          if (a.to === 'relay') {
            // WireGuard's first initiation, held by the waker, goes to the relay at once.
            const ep = parseEndpoint(a.endpoint);
            if (ep) this.d.waker?.pathFound(a.nodeKey, ep);
            if (!isInitiator(this.o.identity.publicKey, a.nodeKey)) this.d.clock.setTimeout(() => this.requestApply(), RESPONDER_WAIT_MS);
          }
          break;
        }
      }
    }
  }

  /** The path stays, but it must be handshaken again (PathConfirmer.peerRestarted). */
  private peerRestarted(nodeKey: string): void {
    const path = this.relay.path(nodeKey);
    if (path.kind === 'none') return;
    this.confirm.peerRestarted(nodeKey, path.kind, path.endpoint, isInitiator(this.o.identity.publicKey, nodeKey), this.d.clock.now(), this.d.clock.wallNow());
    this.engineStats.setFast(true);
    this.arm();
  }

  private peerName(nodeKey: string): string {
    for (const p of this.netmap.peers.values()) if (p.nodeKey === nodeKey) return p.name;
    return nodeKey.slice(0, 8);
  }

  /** One timer for the cores: the earliest wakeup any asks for. */
  private arm(): void {
    if (!this.running) return;
    this.timer.arm(Math.min(
      this.disco.nextWakeup() ?? Infinity, this.selfEndpoints.nextWakeup() ?? Infinity, this.relay.nextWakeup() ?? Infinity, this.confirm.nextWakeup() ?? Infinity,
    ));
  }

  private tick(): void {
    const now = this.d.clock.now();
    this.selfEndpoints.tick(now);
    this.perform(this.disco.handle({ type: 'tick' }, now));
    this.performRelay(this.relay.handle({ type: 'tick' }, now));
    const force = this.confirm.due(now);
    if (force.length > 0) {
      for (const k of force) this.rehandshake.add(k);
      this.d.logger.debug('forcing a handshake', { peers: force.map((k) => this.peerName(k)) });
      this.requestApply();
    }
    this.arm();
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
      const rehandshake = new Set(this.rehandshake);
      this.rehandshake.clear();
      try {
        await this.d.proxy?.prepare([...this.netmap.peers.values()].map((p) => p.nodeKey));
        await this.relayWs?.prepare(this.relay.wsPeers());
        if (this.birthday) await this.birthday.prepare(birthdayRoutes(this.netmap.peers.values(), this.endpointSources));
        this.d.waker?.setPathless(pathlessPeers(this.netmap.peers.values(), this.endpointSources));
        const proxy = this.d.proxy;
        const desired = desiredEngineConfig({
          now: this.d.clock.now(), privateKey: this.o.identity.privateKey, listenPort: proxy ? proxy.enginePort : this.tunnelPort(),
          node: this.o.node, keepaliveS: this.o.keepaliveS, peers: this.netmap.peers.values(), endpoints: this.endpointSources,
          stats: this.engineStats.stats, birthday: this.birthday, proxy, waker: this.d.waker, forcing: rehandshake,
          routeMtu: (nodeKey) => peerTunnelMtu(nodeKey, this.mtuSources).routeMtu,
        });
        await this.d.engine.apply(desired, { reassertEndpoints: reassert, rehandshake });
      } catch (err) {
        this.d.logger.error('engine apply failed', { err: (err as Error).message });
      }
    });
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
    return buildStatus({
      now: this.d.clock.now(), wallNow: this.d.clock.wallNow(), node: this.o.node, nodeKey: this.o.identity.publicKey,
      iface: this.o.iface, portMode: this.o.portMode, engineKind: this.d.engine.kind, port: this.tunnelPort(),
      selfEndpoints: this.selfEndpoints.list, natType: this.selfEndpoints.natType, portPreserved: this.selfEndpoints.portPreserved,
      control: this.controlStatus, netmap: this.netmap, stats: this.engineStats.stats, counters: this.counters,
      disco: this.disco, relay: this.relay, confirm: this.confirm, relayWs: this.relayWs, birthday: this.birthday,
      proxy: this.d.proxy, waker: this.d.waker, lan: this.d.lan, portMap: this.d.portMap,
      tunnelMtu: (nodeKey) => peerTunnelMtu(nodeKey, this.mtuSources),
      health: this.health(),
    });
  }

  /** The checks the agent's parts report; status and `knit doctor` show them. */
  private health(): HealthCheck[] {
    return [
      ...engineHealthChecks(this.d.engine.health(), this.d.engine.kind, this.d.clock.wallNow()),
      ...(this.d.firewall ? [this.d.firewall.health()] : []),
      this.mtuCheck(),
    ];
  }

  /** Paths smaller than the interface's MTU, and those too small for IPv6 (agent/tunnel-mtu.ts). */
  private mtuCheck(): HealthCheck {
    const peers = [...this.netmap.peers.values()].map((p) => ({ name: p.name, ...peerTunnelMtu(p.nodeKey, this.mtuSources) }));
    return mtuHealth(peers, this.mtuSources.interfaceMtu);
  }

  /** The peer map held now: cheap, unlike status() (the simulator checks convergence with it). */
  get mapInfo(): { version: number; peers: number } {
    return { version: this.netmap.version, peers: this.netmap.peers.size };
  }

  /** Our current candidate endpoints (for tests and status). */
  get endpointsReported(): string[] {
    return this.selfEndpoints.list;
  }
}

