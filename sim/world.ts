/**
 * A simulated world running Knit's real code: the coordinator's registry and
 * control hub (SQLite in memory) and STUN observer core, and real agents
 * (agent/agent.ts with its disco core, discovery and control client) on
 * virtual UDP sockets and a virtual clock. Only sockets, clocks and the
 * control transport are replaced. The network itself (NATs, hosts, roaming)
 * is the Topology it extends.
 */
import { x25519 } from '@noble/curves/ed25519.js';
import { encodeKey } from '../shared/crypto/keys.js';
import { silentLogger } from '../shared/log.js';
import { ControlHub, type SessionHandle } from '../coordinator/control/hub.js';
import { CoordinatorMetrics } from '../coordinator/metrics.js';
import { createObserverCore } from '../coordinator/observer/core.js';
import { CONTROL, RelayCore, type RelayAction } from '../relay/core.js';
import { decodeKey } from '../shared/crypto/keys.js';
import type { VirtualUdpSocket } from './host.js';
import { createJoinQueue, type QueuedJoin } from '../coordinator/http/join-queue.js';
import { Registry } from '../coordinator/registry/registry.js';
import { SqliteStore } from '../coordinator/store/sqlite.js';
import { Agent } from '../agent/agent.js';
import type { ControlTransport } from '../agent/control/client.js';
import type { Netmap } from '../agent/control/netmap.js';
import type { NodeRecord } from '../agent/state.js';
import { createMemoryEngine, memoryHandshakes } from '../agent/engine/memory.js';
import type { PathKind, PathState } from '../agent/status.js';
import type { SimHost, SimNat } from './net.js';
import { LanDiscovery } from '../agent/lan/discovery.js';
import { createSimLanTransport, simLanInterfaces } from './lan.js';
import { Topology, type HostOptions, type TopologyOptions } from './topology.js';

export const TUNNEL_PORT = 41641;
export const STUN_PORTS = [3478, 3479];
/** The coordinator's relay (docs/relay.md): its UDP control port on the coordinator host. */
export const RELAY_PORT = 3480;
/** One-way delay of the control channel (agent ⇄ coordinator). */
const CONTROL_LATENCY_MS = 20;

export interface WorldOptions extends TopologyOptions {
  /** Agents announce and browse over mDNS on their LANs (default true, as `knit up`). */
  lanDiscovery?: boolean;
  /** The coordinator host runs the relay (default true); false shows what punching alone reaches. */
  relay?: boolean;
}

export interface SimAgent {
  name: string;
  host: SimHost;
  agent: Agent;
  nodeKey: string;
  privateKey: Uint8Array;
  node: NodeRecord;
  /** The peer map as the agent last saved it (its state dir's netmap.json). */
  cachedMap?: Netmap;
  /** Virtual ms since the agent started until its first path to each peer (by node key). */
  firstPath: Map<string, number>;
  /** The same, per path kind: when each kind (relay, direct, lan) was first reached. */
  pathAt: Map<string, Partial<Record<PathKind, number>>>;
  startedAt: number;
}

export class World extends Topology {
  // Set once `ready` resolves (the registry opens its store asynchronously); every method awaits it.
  registry!: Registry;
  hub!: ControlHub;
  readonly coordinator: SimHost;
  readonly agents: SimAgent[] = [];
  private coordinatorUp = true;
  /** Every agent's memory engine in one set: a path's handshake shows on both sides (agent/engine/memory.ts). */
  private readonly handshakes = memoryHandshakes(() => this.clock.wallNow());
  private readonly sessions = new Set<{ h: SessionHandle; close: (code: number, reason: string) => void }>();
  private token = '';
  /** POST /v1/join's group commit: agents added in one turn join in one transaction, as one map version. */
  private join!: QueuedJoin;
  private readonly ready: Promise<void>;
  private readonly coordinatorUrl: string;

  private readonly lanDiscovery: boolean;

  constructor(o: WorldOptions) {
    super(o);
    this.lanDiscovery = o.lanDiscovery ?? true;
    this.coordinator = this.addHost('coordinator');
    this.coordinatorUrl = `http://${this.coordinator.ip}:8080`;
    this.ready = this.openCoordinator(o.relay !== false);
    const observer = createObserverCore({ rateLimitPerSec: 1000 });
    for (const port of STUN_PORTS) {
      const s = this.coordinator.bindUdp(port);
      s.onMessage((bytes, from) => {
        const v = observer.handle(bytes, from, this.clock.now());
        if ('answer' in v) s.send(v.answer, from);
      });
    }
  }

  /** The relay on the coordinator host: the real relay core on virtual sockets (absent with relay: false). */
  relay?: RelayCore;

  private async openCoordinator(relay: boolean): Promise<void> {
    this.registry = await Registry.open(new SqliteStore(':memory:'), { clock: this.clock, url: this.coordinatorUrl, random: this.random.bytes, exclusive: true });
    this.hub = new ControlHub({
      registry: this.registry, clock: this.clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: STUN_PORTS, random: this.random.bytes, allowLoopbackEndpoints: false,
      relays: () => (this.relay ? [{ key: this.registry.coordinatorKey, port: RELAY_PORT }] : []),
    });
    this.join = createJoinQueue(this.registry);
    if (relay) this.relay = this.startRelay();
    this.token = (await this.registry.createToken({ reusable: true })).token;
  }

  private startRelay(): RelayCore {
    const core = new RelayCore({
      privateKey: this.registry.coordinatorPrivate, publicKey: decodeKey(this.registry.coordinatorKey)!,
      isMember: (k) => this.registry.peerByKey(k) !== undefined, random: this.random.bytes,
    });
    const control = this.coordinator.bindUdp(RELAY_PORT);
    const ports = new Map<number, VirtualUdpSocket>();
    const perform = (actions: RelayAction[]): void => {
      for (const a of actions) {
        if (a.type === 'send') (a.port === CONTROL ? control : ports.get(a.port))?.send(a.bytes, a.to);
        else if (a.type === 'open-ports') {
          const opened = [this.coordinator.bindUdp(0), this.coordinator.bindUdp(0)];
          for (const s of opened) {
            const port = s.localPort();
            ports.set(port, s);
            s.onMessage((bytes, from) => perform(core.handle({ type: 'udp', port, from, bytes }, this.clock.now())));
          }
          perform(core.handle({ type: 'ports-opened', pair: a.pair, ports: [opened[0]!.localPort(), opened[1]!.localPort()] }, this.clock.now()));
        } else if (a.type === 'close-port') {
          ports.get(a.port)?.close();
          ports.delete(a.port);
        }
      }
    };
    control.onMessage((bytes, from) => perform(core.handle({ type: 'udp', port: CONTROL, from, bytes }, this.clock.now())));
    return core;
  }

  /** Roaming, as Topology.moveHost; the host's agent notices as it would from its interface monitor. */
  override moveHost(host: SimHost, to?: SimNat | 'internet', options: HostOptions = {}): string {
    const address = super.moveHost(host, to, options);
    this.agents.find((a) => a.host === host)?.agent.networkChanged();
    return address;
  }

  private transport(): ControlTransport {
    return {
      open: (_url, handlers) => {
        let session: { h: SessionHandle; close: (code: number, reason: string) => void } | undefined;
        let open = true;
        const later = (fn: () => void) => this.clock.setTimeout(fn, CONTROL_LATENCY_MS);
        if (!this.coordinatorUp) {
          later(() => handlers.onClose(1006, 'connection refused'));
          return { send() {}, close() { open = false; } };
        }
        const s = {
          close: (code: number, reason: string) => {
            if (!open) return;
            open = false;
            this.sessions.delete(s);
            later(() => handlers.onClose(code, reason));
          },
          h: undefined as unknown as SessionHandle,
        };
        s.h = this.hub.connect({
          send: (text) => later(() => { if (open) handlers.onMessage(text); }),
          close: (code, reason) => s.close(code, reason),
          remoteAddress: 'sim',
        });
        session = s;
        this.sessions.add(s);
        later(() => handlers.onOpen());
        return {
          send: (text) => later(() => { if (open) session!.h.receive(text); }),
          close: () => {
            if (!open) return;
            open = false;
            this.sessions.delete(s);
            session!.h.closed();
          },
        };
      },
    };
  }

  /** Takes the coordinator down: every control session drops and new ones are refused. */
  coordinatorDown(): void {
    this.coordinatorUp = false;
    for (const s of [...this.sessions]) {
      s.h.closed();
      s.close(1006, 'coordinator down');
    }
  }

  coordinatorUpAgain(): void {
    this.coordinatorUp = true;
  }

  /** Joins a node (as POST /v1/join would) and starts a real agent for it on the host. */
  async addAgent(name: string, host: SimHost, options: { keepaliveS?: number } = {}): Promise<SimAgent> {
    const priv = this.random.bytes(32);
    const nodeKey = encodeKey(x25519.getPublicKey(priv));
    await this.ready;
    const res = (await this.join({ token: this.token, nodeKey, hostname: name })).response;
    const node: NodeRecord = {
      coordinatorUrl: this.coordinatorUrl, coordinatorKey: this.registry.coordinatorKey, id: res.node.id, name: res.node.name,
      addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix,
    };
    const sa = { name, host, nodeKey, privateKey: priv, node, firstPath: new Map(), pathAt: new Map(), startedAt: this.clock.now() } as unknown as SimAgent;
    this.agents.push(sa);
    await this.launch(sa, options.keepaliveS);
    return sa;
  }

  /** Stops an agent and starts it again on the same host with its identity and cached map (a reboot). */
  async restartAgent(sa: SimAgent): Promise<void> {
    await sa.agent.stop();
    sa.firstPath = new Map();
    sa.pathAt = new Map();
    sa.startedAt = this.clock.now();
    await this.launch(sa);
  }

  private async launch(sa: SimAgent, keepaliveS = 25): Promise<void> {
    const agent = new Agent(
      { identity: { privateKey: sa.privateKey, publicKey: sa.nodeKey }, node: sa.node, stunHost: this.coordinator.ip, iface: 'knit0', keepaliveS, portMode: 'memory', initialNetmap: sa.cachedMap },
      {
        clock: this.clock, random: this.random.bytes, logger: silentLogger, udp: sa.host.bindUdp(TUNNEL_PORT),
        transport: this.transport(), engine: createMemoryEngine({ handshakes: this.handshakes }), localAddresses: () => sa.host.addresses(),
        saveNetmap: (m) => { sa.cachedMap = m; },
        // Hard-NAT birthday probing's extra sockets (ephemeral ports on the host) and loopback stand-ins.
        extraUdp: { open: () => sa.host.bindUdp(0), openLoopback: async () => sa.host.bindUdp(0) },
        lan: this.lanDiscovery
          ? new LanDiscovery({ clock: this.clock, random: this.random.bytes, logger: silentLogger, transport: createSimLanTransport(sa.host), interfaces: () => simLanInterfaces(sa.host) })
          : undefined,
      },
    );
    // Timings count from a path that carries the tunnel (a handshake over it), as status does.
    agent.onPathConfirmed = (peer, kind) => {
      if (!sa.firstPath.has(peer)) sa.firstPath.set(peer, this.clock.now() - sa.startedAt);
      const at = sa.pathAt.get(peer) ?? {};
      at[kind] ??= this.clock.now() - sa.startedAt;
      sa.pathAt.set(peer, at);
    };
    sa.agent = agent;
    await agent.start();
  }

  /** a's current path to b. */
  path(a: SimAgent, b: SimAgent): PathState {
    return a.agent.status().peers.find((p) => p.nodeKey === b.nodeKey)?.path ?? 'none';
  }

  async stop(): Promise<void> {
    await this.ready;
    for (const a of this.agents) await a.agent.stop();
    await this.hub.stop();
    await this.registry.store.close();
  }
}
