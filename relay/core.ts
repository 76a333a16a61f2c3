/**
 * The relay's decisions, sans-I/O: datagrams, WebSocket frames, opened ports
 * and the time in; datagrams to send, ports to open or close and frames to
 * write out. The shells (relay/index.ts on node:dgram + ws, sim/world.ts on
 * virtual sockets) own every socket; the same code runs in both.
 *
 * Model (TURN-like, docs/relay.md): for each pair of mesh members {A, B} the
 * relay holds two UDP ports, P_AB (A's side) and P_BA (B's side).
 *
 *   A ──alloc(B)──► control port         → alloc-ok(P_AB)
 *   A ──bind(P_AB, counter)──► P_AB      → bind-ok; A's address := the bind's source
 *   A's WireGuard ──► P_AB ══relay══► from P_BA ──► B's bound address
 *
 * Because the bind travels from the tunnel port to P_AB itself, the source the
 * relay binds is the very NAT mapping WireGuard's packets to P_AB will use,
 * even behind a symmetric NAT. When UDP doesn't get through, a side may be
 * bound to an authenticated WebSocket session instead.
 *
 * Rules: only members (isMember, the coordinator's list) are answered; a
 * packet is forwarded only from a side's bound address, only if it is shaped
 * like WireGuard, only to the other side of the same pair, and within the
 * sender's packet and byte budgets. Every answer is smaller than its request.
 * Everything else is dropped and counted.
 */
import { LRUCache } from 'lru-cache';
import type { RandomBytes } from '../shared/clock.js';
import { decodeKey, encodeKey } from '../shared/crypto/keys.js';
import { formatEndpoint } from '../shared/net/addr.js';
import type { UdpEndpoint } from '../shared/udp.js';
import { SourceBudget } from '../shared/source-budget.js';
import {
  decodeWsData, encodeWsData, isRelayPacket, isWireguardShaped, openRelay, RELAY_WS_CHALLENGE_LEN, relaySender, relaySharedKey, sealRelay,
  type RelayErrorCode, type RelayMessage,
} from '../shared/wire/relay.js';

/** The control port is named so; allocation ports by their number. */
export const CONTROL = 'control' as const;
export type RelayPort = number | typeof CONTROL;

export type RelayEvent =
  | { type: 'udp'; port: RelayPort; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'ports-opened'; pair: number; ports: [number, number] }
  | { type: 'ports-failed'; pair: number }
  | { type: 'ws-open'; session: number }
  | { type: 'ws-message'; session: number; bytes: Uint8Array }
  | { type: 'ws-close'; session: number }
  | { type: 'tick' };

export type RelayAction =
  | { type: 'send'; port: RelayPort; to: UdpEndpoint; bytes: Uint8Array }
  /** Open two UDP ports for a new pair, then feed `ports-opened` (or `ports-failed`). */
  | { type: 'open-ports'; pair: number }
  | { type: 'close-port'; port: number }
  | { type: 'ws-send'; session: number; bytes: Uint8Array }
  | { type: 'ws-close'; session: number; reason: string };

export interface RelayCoreOptions {
  /** The relay's X25519 key pair (for the coordinator's relay: the coordinator key). */
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  /** Whether a node key (base64) belongs to a mesh member now. */
  isMember: (nodeKey: string) => boolean;
  random: RandomBytes;
  maxPairs?: number;
  packetsPerSec?: number;
  bytesPerSec?: number;
}

export interface RelayCounters {
  controlReceived: number;
  allocs: number;
  binds: number;
  forwardedPackets: number;
  forwardedBytes: number;
  forwardedWs: number;
  dropMalformed: number;
  dropNotMember: number;
  dropUnknownSource: number;
  dropPeerNotBound: number;
  dropRateLimited: number;
  dropStaleBind: number;
  dropCapacity: number;
  pairsOpen: number;
  wsSessions: number;
}

/** Pairs (two ports each) held at most: 8,192 pairs = 16,384 ports. */
export const RELAY_MAX_PAIRS = 8192;
/**
 * Per-node forwarding budget. 20,000 packets/s is ~200 Mbit/s of full-size WireGuard
 * packets, more than a relayed path should carry for long; the byte budget caps the same.
 */
export const RELAY_PACKETS_PER_S = 20_000;
export const RELAY_BYTES_PER_S = 32 * 1024 * 1024;
/** A binding not refreshed for this long is forgotten (agents re-bind every RELAY_REBIND_MS = 15 s). */
export const RELAY_BIND_TTL_MS = 60_000;
/** A pair with neither side bound for this long gives its ports back. */
export const RELAY_PAIR_IDLE_MS = 120_000;
/** Membership is re-checked this often: a removed node loses its pairs and sessions. */
export const RELAY_SWEEP_MS = 5000;
/** Control packets from senders we haven't keyed yet cost an X25519: this many per source IP per second. */
export const RELAY_NEW_KEYS_PER_S = 10;
/** Alloc answers waiting for a pair's ports, at most. */
const MAX_PENDING_PER_PAIR = 8;

interface Side {
  node: string;
  nodeBytes: Uint8Array;
  port?: number;
  addr?: UdpEndpoint;
  addrKey?: string;
  counter: number;
  boundAt: number;
  ws?: number;
  /** When the side last sent over its WebSocket: a claim newer than its UDP bind wins (its UDP died). */
  wsAt: number;
}

interface Pair {
  id: number;
  key: string;
  sides: [Side, Side];
  lastActive: number;
  opening: boolean;
  pending: { side: 0 | 1; txid: Uint8Array; to: UdpEndpoint; key: Uint8Array }[];
}

interface Bucket { packets: number; bytes: number; at: number }

interface WsSession { id: number; challenge: Uint8Array; node?: string; nodeBytes?: Uint8Array }

export class RelayCore {
  readonly counters: RelayCounters = {
    controlReceived: 0, allocs: 0, binds: 0, forwardedPackets: 0, forwardedBytes: 0, forwardedWs: 0, dropMalformed: 0, dropNotMember: 0,
    dropUnknownSource: 0, dropPeerNotBound: 0, dropRateLimited: 0, dropStaleBind: 0, dropCapacity: 0, pairsOpen: 0, wsSessions: 0,
  };
  private readonly pairs = new Map<string, Pair>(); // "keyA|keyB" (sorted) → pair
  private readonly pairsById = new Map<number, Pair>();
  private readonly byPort = new Map<number, { pair: Pair; side: 0 | 1 }>();
  private readonly keys = new LRUCache<string, Uint8Array>({ max: 16_384 });
  private readonly newKeyBudget = new SourceBudget(RELAY_NEW_KEYS_PER_S);
  private readonly buckets = new Map<string, Bucket>();
  private readonly sessions = new Map<number, WsSession>();
  private readonly wsByNode = new Map<string, number>();
  private nextPairId = 1;
  private nextSweep = 0;
  private readonly maxPairs: number;
  private readonly pps: number;
  private readonly bps: number;

  constructor(private readonly o: RelayCoreOptions) {
    this.maxPairs = o.maxPairs ?? RELAY_MAX_PAIRS;
    this.pps = o.packetsPerSec ?? RELAY_PACKETS_PER_S;
    this.bps = o.bytesPerSec ?? RELAY_BYTES_PER_S;
    if (!(this.maxPairs > 0 && this.pps > 0 && this.bps > 0)) throw new RangeError('relay limits must be positive');
  }

  get publicKey(): string {
    return encodeKey(this.o.publicKey);
  }

  handle(e: RelayEvent, now: number): RelayAction[] {
    const out: RelayAction[] = [];
    switch (e.type) {
      case 'udp':
        if (e.port === CONTROL) this.control(e.from, e.bytes, now, out);
        else this.allocationPort(e.port, e.from, e.bytes, now, out);
        break;
      case 'ports-opened': this.portsOpened(e.pair, e.ports, now, out); break;
      case 'ports-failed': {
        const p = this.pairsById.get(e.pair);
        if (p) {
          this.counters.dropCapacity += p.pending.length;
          for (const w of p.pending) out.push(this.reply(w.to, CONTROL, { type: 'error', txid: w.txid, code: 3 }, w.key));
          this.release(p, out);
        }
        break;
      }
      case 'ws-open': {
        const challenge = this.o.random(RELAY_WS_CHALLENGE_LEN);
        this.sessions.set(e.session, { id: e.session, challenge });
        this.counters.wsSessions = this.sessions.size;
        out.push({ type: 'ws-send', session: e.session, bytes: challenge });
        break;
      }
      case 'ws-message': this.wsMessage(e.session, e.bytes, now, out); break;
      case 'ws-close': this.wsClosed(e.session); break;
      case 'tick': break;
    }
    if (now >= this.nextSweep) this.sweep(now, out);
    return out;
  }

  /** When the shell should tick next. */
  nextWakeup(): number {
    return this.nextSweep;
  }

  /**
   * The forwarding hot path for a datagram on an allocation port that is not a relay
   * control message: where to send it (from which port, or over which WebSocket), or
   * undefined when it is dropped (counted). Allocates nothing on success.
   */
  forward(port: number, from: UdpEndpoint, bytes: Uint8Array, now: number): RelayAction | undefined {
    const at = this.byPort.get(port);
    if (!at) {
      this.counters.dropUnknownSource++;
      return undefined;
    }
    const me = at.pair.sides[at.side];
    if (me.addr === undefined || me.addr.port !== from.port || me.addr.address !== from.address) {
      this.counters.dropUnknownSource++;
      return undefined;
    }
    return this.deliver(at.pair, at.side, bytes, now);
  }

  private deliver(pair: Pair, from: 0 | 1, bytes: Uint8Array, now: number): RelayAction | undefined {
    if (!isWireguardShaped(bytes)) {
      this.counters.dropMalformed++;
      return undefined;
    }
    const me = pair.sides[from];
    if (!this.spend(me.node, bytes.length, now)) {
      this.counters.dropRateLimited++;
      return undefined;
    }
    const other = pair.sides[1 - from]!;
    pair.lastActive = now;
    const wsNewer = other.ws !== undefined && other.wsAt > other.boundAt;
    if (!wsNewer && other.addr !== undefined && other.port !== undefined && now - other.boundAt < RELAY_BIND_TTL_MS) {
      this.counters.forwardedPackets++;
      this.counters.forwardedBytes += bytes.length;
      return { type: 'send', port: other.port, to: other.addr, bytes };
    }
    if (other.ws !== undefined) {
      this.counters.forwardedPackets++;
      this.counters.forwardedBytes += bytes.length;
      this.counters.forwardedWs++;
      return { type: 'ws-send', session: other.ws, bytes: encodeWsData(me.nodeBytes, bytes) };
    }
    this.counters.dropPeerNotBound++;
    return undefined;
  }

  private spend(node: string, size: number, now: number): boolean {
    let b = this.buckets.get(node);
    if (!b) {
      b = { packets: this.pps, bytes: this.bps, at: now };
      this.buckets.set(node, b);
    }
    const dt = Math.max(0, now - b.at) / 1000;
    b.at = now;
    b.packets = Math.min(this.pps, b.packets + dt * this.pps);
    b.bytes = Math.min(this.bps, b.bytes + dt * this.bps);
    if (b.packets < 1 || b.bytes < size) return false;
    b.packets -= 1;
    b.bytes -= size;
    return true;
  }

  /** The box key for a node, if it is a member (derived once, cached). */
  private keyFor(node: Uint8Array, from: UdpEndpoint, now: number): { key: Uint8Array; nodeKey: string } | undefined {
    const nodeKey = encodeKey(node);
    if (!this.o.isMember(nodeKey)) {
      this.counters.dropNotMember++;
      return undefined;
    }
    let key = this.keys.get(nodeKey);
    if (!key) {
      if (!this.newKeyBudget.allow(from.address, now)) {
        this.counters.dropRateLimited++;
        return undefined;
      }
      key = relaySharedKey(this.o.privateKey, node);
      if (!key) {
        this.counters.dropMalformed++;
        return undefined;
      }
      this.keys.set(nodeKey, key);
    }
    return { key, nodeKey };
  }


  /** Opens a control message from a member, or counts why not. */
  private open(bytes: Uint8Array, from: UdpEndpoint, now: number): { m: RelayMessage; key: Uint8Array; nodeKey: string; nodeBytes: Uint8Array } | undefined {
    const sender = relaySender(bytes);
    if (!sender) {
      this.counters.dropMalformed++;
      return undefined;
    }
    const k = this.keyFor(sender, from, now);
    if (!k) return undefined;
    const m = openRelay(bytes, k.key);
    if (!m) {
      this.counters.dropMalformed++;
      return undefined;
    }
    return { m, key: k.key, nodeKey: k.nodeKey, nodeBytes: sender };
  }

  private reply(to: UdpEndpoint, port: RelayPort, m: RelayMessage, key: Uint8Array): RelayAction {
    return { type: 'send', port, to, bytes: sealRelay(m, this.o.publicKey, key, this.o.random(24)) };
  }

  private control(from: UdpEndpoint, bytes: Uint8Array, now: number, out: RelayAction[]): void {
    this.counters.controlReceived++;
    const r = this.open(bytes, from, now);
    if (!r) return;
    const { m, key, nodeKey, nodeBytes } = r;
    if (m.type !== 'alloc') {
      this.counters.dropMalformed++; // binds go to the allocated port, never here
      return;
    }
    const peer = encodeKey(m.peer);
    if (peer === nodeKey || !decodeKey(peer) || !this.o.isMember(peer)) {
      out.push(this.reply(from, CONTROL, { type: 'error', txid: m.txid, code: 2 }, key));
      return;
    }
    this.counters.allocs++;
    const pair = this.pairFor(nodeKey, nodeBytes, peer, m.peer, now, out);
    if (!pair) {
      this.counters.dropCapacity++;
      out.push(this.reply(from, CONTROL, { type: 'error', txid: m.txid, code: 3 }, key));
      return;
    }
    const side = pair.sides[0].node === nodeKey ? 0 : 1;
    const port = pair.sides[side].port;
    if (port !== undefined) out.push(this.reply(from, CONTROL, { type: 'alloc-ok', txid: m.txid, port }, key));
    else if (pair.pending.length < MAX_PENDING_PER_PAIR) pair.pending.push({ side, txid: m.txid, to: from, key });
  }

  /** The pair of two members, created (and its ports requested) if needed; undefined at capacity. */
  private pairFor(a: string, aBytes: Uint8Array, b: string, bBytes: Uint8Array, now: number, out: RelayAction[]): Pair | undefined {
    const [x, y] = a < b ? [[a, aBytes], [b, bBytes]] as const : [[b, bBytes], [a, aBytes]] as const;
    const key = `${x[0]}|${y[0]}`;
    let p = this.pairs.get(key);
    if (p) return p;
    if (this.pairs.size >= this.maxPairs) return undefined;
    const side = (node: string, nodeBytes: Uint8Array): Side => ({ node, nodeBytes: nodeBytes.slice(), counter: -1, boundAt: -Infinity, wsAt: -Infinity });
    p = { id: this.nextPairId++, key, sides: [side(x[0], x[1]), side(y[0], y[1])], lastActive: now, opening: true, pending: [] };
    this.pairs.set(key, p);
    this.pairsById.set(p.id, p);
    this.counters.pairsOpen = this.pairs.size;
    out.push({ type: 'open-ports', pair: p.id });
    return p;
  }

  private portsOpened(id: number, ports: [number, number], now: number, out: RelayAction[]): void {
    const p = this.pairsById.get(id);
    if (!p || !p.opening) {
      for (const port of ports) out.push({ type: 'close-port', port }); // released while opening
      return;
    }
    p.opening = false;
    p.lastActive = now;
    ports.forEach((port, i) => {
      p.sides[i]!.port = port;
      this.byPort.set(port, { pair: p, side: i as 0 | 1 });
    });
    for (const w of p.pending.splice(0)) out.push(this.reply(w.to, CONTROL, { type: 'alloc-ok', txid: w.txid, port: ports[w.side] }, w.key));
  }

  private allocationPort(port: number, from: UdpEndpoint, bytes: Uint8Array, now: number, out: RelayAction[]): void {
    if (!isRelayPacket(bytes)) {
      const a = this.forward(port, from, bytes, now);
      if (a) out.push(a);
      return;
    }
    this.counters.controlReceived++;
    const at = this.byPort.get(port);
    const r = at && this.open(bytes, from, now);
    if (!at || !r) {
      if (!at) this.counters.dropUnknownSource++;
      return;
    }
    const { m, key, nodeKey } = r;
    if (m.type !== 'bind') {
      this.counters.dropMalformed++;
      return;
    }
    const side = at.pair.sides[at.side];
    const refuse = (code: RelayErrorCode): void => { out.push(this.reply(from, port, { type: 'error', txid: m.txid, code }, key)); };
    if (side.node !== nodeKey || m.port !== port) return refuse(4);
    if (m.counter <= side.counter) {
      this.counters.dropStaleBind++;
      return refuse(5);
    }
    this.counters.binds++;
    side.counter = m.counter;
    side.addr = { address: from.address, port: from.port };
    side.addrKey = formatEndpoint(from);
    side.boundAt = now;
    at.pair.lastActive = now;
    out.push(this.reply(from, port, { type: 'bind-ok', txid: m.txid, observedPort: from.port }, key));
  }

  private wsMessage(id: number, bytes: Uint8Array, now: number, out: RelayAction[]): void {
    const s = this.sessions.get(id);
    if (!s) return;
    if (s.node === undefined) {
      // The first frame must be a sealed ws-hello echoing our challenge.
      const r = this.open(bytes, { address: `ws:${id}`, port: 0 }, now);
      if (!r || r.m.type !== 'ws-hello' || Buffer.compare(Buffer.from(r.m.challenge), Buffer.from(s.challenge)) !== 0) {
        if (r) this.counters.dropMalformed++;
        out.push({ type: 'ws-close', session: id, reason: 'authentication failed' });
        this.wsClosed(id);
        return;
      }
      s.node = r.nodeKey;
      s.nodeBytes = r.nodeBytes.slice();
      const old = this.wsByNode.get(r.nodeKey);
      if (old !== undefined && old !== id) out.push({ type: 'ws-close', session: old, reason: 'replaced by a newer session' });
      this.wsByNode.set(r.nodeKey, id);
      out.push({ type: 'ws-send', session: id, bytes: sealRelay({ type: 'ws-ok' }, this.o.publicKey, r.key, this.o.random(24)) });
      return;
    }
    const d = decodeWsData(bytes);
    if (!d) {
      this.counters.dropMalformed++;
      return;
    }
    const peer = encodeKey(d.peer);
    if (peer === s.node || !this.o.isMember(peer)) {
      this.counters.dropNotMember++;
      return;
    }
    const pair = this.pairFor(s.node, s.nodeBytes!, peer, d.peer, now, out);
    if (!pair) {
      this.counters.dropCapacity++;
      return;
    }
    const side = pair.sides[0].node === s.node ? 0 : 1;
    pair.sides[side].ws = id;
    pair.sides[side].wsAt = now;
    const a = this.deliver(pair, side, d.packet, now);
    if (a) out.push(a);
  }

  private wsClosed(id: number): void {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessions.delete(id);
    this.counters.wsSessions = this.sessions.size;
    if (s.node !== undefined && this.wsByNode.get(s.node) === id) this.wsByNode.delete(s.node);
    for (const p of this.pairs.values()) for (const side of p.sides) if (side.ws === id) side.ws = undefined;
  }

  private release(p: Pair, out: RelayAction[]): void {
    this.pairs.delete(p.key);
    this.pairsById.delete(p.id);
    for (const side of p.sides) {
      if (side.port === undefined) continue;
      this.byPort.delete(side.port);
      out.push({ type: 'close-port', port: side.port });
    }
    this.counters.pairsOpen = this.pairs.size;
  }

  /** Forgets stale bindings, idle pairs, and everything of nodes no longer in the mesh. */
  private sweep(now: number, out: RelayAction[]): void {
    this.nextSweep = now + RELAY_SWEEP_MS;
    for (const p of [...this.pairs.values()]) {
      const gone = p.sides.some((s) => !this.o.isMember(s.node));
      for (const s of p.sides) {
        if (s.addr !== undefined && now - s.boundAt >= RELAY_BIND_TTL_MS) s.addr = s.addrKey = undefined;
      }
      const idle = p.sides.every((s) => s.addr === undefined && s.ws === undefined) && now - p.lastActive >= RELAY_PAIR_IDLE_MS;
      if (gone || (idle && !p.opening)) this.release(p, out);
    }
    for (const s of [...this.sessions.values()]) {
      if (s.node !== undefined && !this.o.isMember(s.node)) {
        out.push({ type: 'ws-close', session: s.id, reason: 'not a member' });
        this.wsClosed(s.id);
      }
    }
    for (const [node, b] of this.buckets) if (now - b.at > 10_000) this.buckets.delete(node);
  }
}
