/**
 * A simulated world running Knit's real code: the coordinator's registry and
 * control hub (SQLite in memory) and STUN observer core, and real agents
 * (agent/agent.ts with its disco core, discovery and control client) on
 * virtual UDP sockets and a virtual clock. Only sockets, clocks and the
 * control transport are replaced.
 */
import { x25519 } from '@noble/curves/ed25519.js';
import { encodeKey } from '../shared/crypto/keys.js';
import { silentLogger } from '../shared/log.js';
import { ControlHub, type SessionHandle } from '../coordinator/control/hub.js';
import { CoordinatorMetrics } from '../coordinator/metrics.js';
import { createObserverCore } from '../coordinator/observer/core.js';
import { Registry } from '../coordinator/registry/registry.js';
import { SqliteStore } from '../coordinator/store/sqlite.js';
import { Agent } from '../agent/agent.js';
import type { ControlTransport } from '../agent/control/client.js';
import type { Netmap } from '../agent/control/netmap.js';
import type { NodeRecord } from '../agent/state.js';
import { createMemoryEngine } from '../agent/engine/memory.js';
import type { PathKind } from '../agent/status.js';
import { VirtualClock } from './clock.js';
import { NAT_PRESETS, type NatBehaviour, type NatPreset } from './nat.js';
import { SeededRandom } from './random.js';
import { SimHost, SimNat, SimNetwork, type LinkQuality, type Segment } from './net.js';

export const TUNNEL_PORT = 41641;
export const STUN_PORTS = [3478, 3479];
/** One-way delay of the control channel (agent ⇄ coordinator). */
const CONTROL_LATENCY_MS = 20;

export interface WorldOptions {
  seed: number;
  internet?: Partial<LinkQuality>;
  lan?: Partial<LinkQuality>;
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
  startedAt: number;
}

export class World {
  readonly clock = new VirtualClock();
  readonly random: SeededRandom;
  readonly net: SimNetwork;
  readonly registry: Registry;
  readonly hub: ControlHub;
  readonly coordinator: SimHost;
  readonly agents: SimAgent[] = [];
  private readonly lanLink: LinkQuality;
  private nextPublic = 10;
  private nextHost = 10;
  private nextLan = 1;
  private readonly lans = new Map<SimNat, { index: number; next: number }>();
  private coordinatorUp = true;
  private readonly sessions = new Set<{ h: SessionHandle; close: (code: number, reason: string) => void }>();
  private readonly token: string;

  constructor(o: WorldOptions) {
    this.random = new SeededRandom(o.seed);
    this.net = new SimNetwork(this.clock, this.random, { latencyMs: 15, jitterMs: 4, loss: 0, ...o.internet });
    this.lanLink = { latencyMs: 1, jitterMs: 0, loss: 0, ...o.lan };
    this.registry = new Registry(new SqliteStore(':memory:'), { clock: this.clock, url: 'http://198.18.0.1:8080', random: this.random.bytes });
    this.hub = new ControlHub({ registry: this.registry, clock: this.clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: STUN_PORTS, random: this.random.bytes, allowLoopbackEndpoints: false });
    this.token = this.registry.createToken({ reusable: true }).token;
    this.coordinator = this.addHost('coordinator');
    const observer = createObserverCore({ rateLimitPerSec: 1000 });
    for (const port of STUN_PORTS) {
      const s = this.coordinator.bindUdp(port);
      s.onMessage((bytes, from) => {
        const v = observer.handle(bytes, from, this.clock.now());
        if ('answer' in v) s.send(v.answer, from);
      });
    }
  }

  /** A NAT on the internet (or behind another NAT: a carrier NAT in front of a home NAT). */
  addNat(name: string, preset: NatPreset | NatBehaviour, behind?: SimNat): SimNat {
    const behaviour = typeof preset === 'string' ? NAT_PRESETS[preset] : preset;
    const outside: Segment = behind ? behind.inside : this.net.internet;
    const ip = behind ? this.lanAddress(behind) : this.publicAddress();
    const nat = new SimNat(name, ip, outside, { ...behaviour }, this.random, this.lanLink);
    outside.nodes.set(ip, nat);
    this.lans.set(nat, { index: this.nextLan++, next: 10 });
    return nat;
  }

  /** Hosts on the internet: 198.18.0.10 onwards; NAT public addresses: 198.19.0.10 onwards. */
  private hostAddress(): string {
    const n = this.nextHost++;
    return `198.18.${n >> 8}.${n & 255}`;
  }

  private publicAddress(): string {
    const n = this.nextPublic++;
    return `198.19.${n >> 8}.${n & 255}`;
  }

  /** The next address inside a NAT: RFC 6598 space behind a carrier NAT (named cgnat…), 10/8 behind others. */
  private lanAddress(nat: SimNat): string {
    const lan = this.lans.get(nat)!;
    const n = lan.next++;
    return nat.name.startsWith('cgnat') ? `100.${64 + (lan.index >> 8)}.${lan.index & 255}.${n}` : `10.${lan.index >> 8}.${lan.index & 255}.${n}`;
  }

  addHost(name: string, behind?: SimNat): SimHost {
    const seg = behind ? behind.inside : this.net.internet;
    const ip = behind ? this.lanAddress(behind) : this.hostAddress();
    const host = new SimHost(name, ip, seg, this.net);
    seg.nodes.set(ip, host);
    return host;
  }

  /** Re-plugs a host behind another NAT (roaming); the agent notices as it would from its interface monitor. */
  moveHost(host: SimHost, to?: SimNat): void {
    host.segment.nodes.delete(host.ip);
    const seg = to ? to.inside : this.net.internet;
    host.ip = to ? this.lanAddress(to) : this.hostAddress();
    host.segment = seg;
    seg.nodes.set(host.ip, host);
    this.agents.find((a) => a.host === host)?.agent.networkChanged();
  }

  /** The NAT gets a new public address (its old mappings die with it). */
  renumberNat(nat: SimNat): void {
    nat.outside.nodes.delete(nat.publicIp);
    nat.publicIp = this.publicAddress();
    nat.outside.nodes.set(nat.publicIp, nat);
    nat.table.expireAll();
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
    const res = this.registry.join({ token: this.token, nodeKey, hostname: name }).response;
    this.hub.noteChanges();
    const node: NodeRecord = {
      coordinatorUrl: 'http://198.18.0.1:8080', coordinatorKey: this.registry.coordinatorKey, id: res.node.id, name: res.node.name,
      addresses: res.node.addresses, ipv4Prefix: res.mesh.ipv4Prefix, ipv6Prefix: res.mesh.ipv6Prefix,
    };
    const sa = { name, host, nodeKey, privateKey: priv, node, firstPath: new Map(), startedAt: this.clock.now() } as unknown as SimAgent;
    this.agents.push(sa);
    await this.launch(sa, options.keepaliveS);
    return sa;
  }

  /** Stops an agent and starts it again on the same host with its identity and cached map (a reboot). */
  async restartAgent(sa: SimAgent): Promise<void> {
    await sa.agent.stop();
    sa.firstPath = new Map();
    sa.startedAt = this.clock.now();
    await this.launch(sa);
  }

  private async launch(sa: SimAgent, keepaliveS = 25): Promise<void> {
    const agent = new Agent(
      { identity: { privateKey: sa.privateKey, publicKey: sa.nodeKey }, node: sa.node, stunHost: this.coordinator.ip, iface: 'knit0', keepaliveS, portMode: 'memory', initialNetmap: sa.cachedMap },
      {
        clock: this.clock, random: this.random.bytes, logger: silentLogger, udp: sa.host.bindUdp(TUNNEL_PORT),
        transport: this.transport(), engine: createMemoryEngine(), localAddresses: () => [sa.host.ip],
        saveNetmap: (m) => { sa.cachedMap = m; },
      },
    );
    agent.onPathChange = (peer, _from, to) => {
      if (to !== 'none' && !sa.firstPath.has(peer)) sa.firstPath.set(peer, this.clock.now() - sa.startedAt);
    };
    sa.agent = agent;
    await agent.start();
  }

  /** a's current path to b. */
  path(a: SimAgent, b: SimAgent): PathKind {
    return a.agent.status().peers.find((p) => p.nodeKey === b.nodeKey)?.path ?? 'none';
  }

  async stop(): Promise<void> {
    for (const a of this.agents) await a.agent.stop();
    this.hub.stop();
    this.registry.store.close();
  }
}
