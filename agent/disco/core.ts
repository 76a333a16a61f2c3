/**
 * The disco core: every peer's path machine plus the packet handling around
 * them, sans-I/O. The agent shell feeds it events (peer map updates, disco
 * packets from the tunnel port, call-me-maybe relayed by the coordinator,
 * network changes, WireGuard stats, timer ticks) with `now`, performs the
 * actions it returns, and arms one timer for `nextWakeup()`. The simulator
 * runs this very code.
 *
 * Safety rules enforced here:
 *  - only packets sealed by a known peer's disco key are looked at;
 *  - a ping must carry the node key the coordinator bound to that disco key;
 *  - a pong counts only for an outstanding ping: same txid, same address, in time;
 *  - pings per destination, pongs per source and call-me-maybes per peer are rate-limited;
 *  - a pong is never larger than its ping (see shared/wire/disco.ts).
 */
import { BoundedMap } from '../../shared/bounded-map.js';
import { MinHeap } from '../../shared/min-heap.js';
import type { RandomBytes } from '../../shared/clock.js';
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint, isLoopbackIp, isPrivateIp, parseEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import {
  DISCO_MAGIC_NODE, DISCO_TXID_LEN, discoNodeKey, discoPacketKind, discoSender, discoSharedKey, openDisco, sealDisco, type DiscoMessage,
} from '../../shared/wire/disco.js';
import type { PathKind } from '../status.js';
import {
  addCandidate, candidateKey, due, expireCandidates, newPeerPath, nextWakeup as peerNextWakeup, noteWireguardEvidence, notePong,
  pathKind, PATH_DEAD_MS, PING_TIMEOUT_MS, startBurst, withdrawCoordinatorCandidates, type Candidate, type PeerPathState,
} from './peer-path.js';
import {
  BIRTHDAY_SOCKETS, describeAttempt, HARD_NAT_BACKOFF_BASE_MS, HARD_NAT_MAX_OPEN_SOCKETS, hardNatNextWakeup, hardNatRole, newHardNatState, noteBurstFailed,
  predictPorts, probeTarget, resetHardNat, startAttempt, stopSending, takeSlice, type HardNatState,
} from './hard-nat.js';

export interface DiscoPeerInput {
  nodeKey: string;
  discoKey: string; // '' = unknown yet (never connected)
  name: string;
  endpoints: string[];
  natType: NatType;
  online: boolean;
}

export type DiscoEvent =
  | { type: 'peers-updated'; peers: DiscoPeerInput[] }
  | { type: 'lan-candidate'; nodeKey: string; endpoint: UdpEndpoint }
  /** `via`: the packet arrived on one of the hard-NAT extra sockets (hard-nat.ts), not the tunnel port. */
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array; via?: number }
  | { type: 'call-me-maybe'; fromNodeKey: string; endpoints: string[] }
  | { type: 'network-changed' }
  | { type: 'self-endpoints'; endpoints: string[]; natType: NatType }
  | { type: 'wireguard-stats'; nodeKey: string; lastHandshakeMs: number; endpoint?: string }
  | { type: 'ping-now'; nodeKey: string }
  /** Traffic wants this peer (WireGuard sent towards it): punch now if it isn't already. */
  | { type: 'want'; nodeKey: string }
  | { type: 'tick' };

export type DiscoAction =
  /** `via`: send from that hard-NAT extra socket (the shell opens it on first use) instead of the tunnel port. */
  | { type: 'send-udp'; to: UdpEndpoint; bytes: Uint8Array; via?: number }
  | { type: 'send-call-me-maybe'; toNodeKey: string; endpoints: string[] }
  /**
   * Hand this endpoint to the engine. `initiator`: this side should start WireGuard's handshake (see docs/disco.md,
   * anti-stall). `via`: the path runs on that extra socket, so the shell carries the peer's WireGuard packets.
   */
  | { type: 'set-peer-endpoint'; nodeKey: string; endpoint: string; path: PathKind; initiator: boolean; via?: number }
  /** These hard-NAT extra sockets are no longer needed: close them. */
  | { type: 'release-sockets'; ids: number[] }
  | { type: 'path-changed'; nodeKey: string; from: PathKind; to: PathKind; endpoint?: string; rttMs?: number }
  | { type: 'pong'; nodeKey: string; endpoint: string; rttMs: number; path: PathKind };

export interface DiscoPeerStatus {
  nodeKey: string;
  name: string;
  path: PathKind;
  endpoint?: string;
  rttMs?: number;
  lastPongAt?: number;
  candidates: number;
  why?: string;
}

export interface DiscoCounters {
  pingsSent: number;
  pongsSent: number;
  pongsAccepted: number;
  dropMalformed: number;
  dropUnknownSender: number;
  dropBadNodeKey: number;
  dropUnexpectedPong: number;
  dropRateLimited: number;
  /** Pings whose txid we answered before: replays. */
  dropReplay: number;
  callMeMaybeSent: number;
  callMeMaybeReceived: number;
  discoKeysAdopted: number;
  discoKeysAnnounced: number;
  /** Hard-NAT attempts started, probes sent (easy side), openers sent from extra sockets (hard side). */
  hardNatAttempts: number;
  hardNatProbes: number;
  hardNatOpeners: number;
  /** Extra sockets open now (a gauge). */
  hardNatSockets: number;
  /** Paths chosen while a hard-NAT attempt was running. */
  hardNatDirect: number;
  /** Packets on an extra socket from a peer other than the one it was opened for. */
  dropWrongSocket: number;
}

/** Minimum spacing of pings to one destination (all peers together). */
export const MIN_PING_INTERVAL_MS = 200;
/** Pongs answered per source address per second. Pongs are small, but a flood of replayed pings shouldn't be echoed. */
export const PONGS_PER_SOURCE_PER_S = 20;
/** Node-sealed announcements we try to open, per source address per second (the first costs an X25519). */
export const UNKNOWN_SENDER_TRIES_PER_S = 5;
/** A peer is asked to call back at most this often. */
export const CALL_ME_MAYBE_INTERVAL_MS = 2000;
/**
 * Up to this many peers, every peer is punched as soon as it appears: the first packet to
 * anyone finds a path ready. Beyond it (a full mesh is O(n²) probes for the whole mesh),
 * peers are punched on demand — WireGuard traffic towards them, `knit ping`, or the peer
 * contacting us — as Tailscale does.
 */
export const EAGER_PEER_LIMIT = 128;
/** A wanted peer stays active this long after the last sign of demand. */
export const WANT_TTL_MS = 120_000;
/** Answered pings remembered against replays: minutes of pings from the peers we talk to. */
const SEEN_PINGS_MAX = 16_384;
/** Outstanding pings kept at most (the oldest is forgotten first). */
const MAX_OUTSTANDING = 8192;

interface Peer {
  /** The epoch of the newest disco-key announcement adopted from this peer: older ones are replays. */
  announcedEpoch?: number;
  input: DiscoPeerInput;
  discoPub?: Uint8Array;
  /** The disco box key, derived on first use (an X25519 per peer is the cost of a big map). */
  sharedKey?: Uint8Array;
  /** The key for node-sealed packets with this peer (X25519 of the node keys), derived on first use. */
  nodeBoxKey?: Uint8Array;
  /** In a big mesh, a peer is punched only while wanted (traffic, a ping, the peer calling us). */
  wantedUntil: number;
  path: PeerPathState;
  lastCallMeMaybeAt: number;
  lastKind: PathKind;
  lastHandshakeMs: number;
  /** Port prediction / birthday probing towards this peer (hard-nat.ts). */
  hardNat: HardNatState;
  /** When this peer's timers want to run (cached), and a generation that invalidates stale heap entries. */
  wake?: number;
  wakeGen: number;
}

interface Wake { at: number; key: string; gen: number }

interface Outstanding {
  nodeKey: string;
  key: string;
  sentAt: number;
  /** A hard-NAT probe or opener: not a candidate yet; its pong makes one. */
  hardNat?: { ep: UdpEndpoint; via?: number };
}

export interface DiscoCoreOptions {
  nodeKey: string;
  discoPrivateKey: Uint8Array;
  discoPublicKey: Uint8Array;
  random: RandomBytes;
  /** Meshes with more peers than this punch on demand (default EAGER_PEER_LIMIT). */
  eagerLimit?: number;
  /**
   * The node's private key: pings then carry a binding (proof that we hold our node key) so
   * a peer can accept our new disco key without the coordinator, and we accept theirs.
   */
  nodePrivateKey?: Uint8Array;
  /** The shell can open extra UDP sockets (the hard side of birthday probing, hard-nat.ts). */
  hardNatSockets?: boolean;
}

export class DiscoCore {
  private readonly peers = new Map<string, Peer>(); // by node key
  private readonly byDisco = new Map<string, string>(); // disco key (base64) → node key
  private readonly outstanding = new Map<string, Outstanding>(); // txid hex → ping
  // Bounded because packet sources are the attacker's to choose; grown as used (see BoundedMap).
  private readonly destLastPing = new BoundedMap<string, number>(4096);
  private readonly pongBudget = new BoundedMap<string, { tokens: number; at: number }>(4096);
  private readonly unknownBudget = new BoundedMap<string, { tokens: number; at: number }>(4096);
  /** Peer|destination pairs we announced our disco key to (once each per run). */
  private readonly announcedTo = new BoundedMap<string, true>(8192);
  /** Pings answered (peer|txid): a replay gets nothing. */
  private readonly seenPings = new BoundedMap<string, true>(SEEN_PINGS_MAX);
  private readonly nodeKeyBytes: Uint8Array;
  private selfEndpoints: string[] = [];
  /** Peers whose state an event touched: their wakeups are recomputed after it. */
  private readonly touched = new Set<Peer>();
  /** Min-heap of peer wakeups (lazy deletion by generation): timers cost O(log n), not O(peers). */
  private readonly wakes = new MinHeap<Wake>((a, b) => a.at < b.at);
  private selfNatType: NatType = 'unknown';
  /** Hard-NAT extra sockets: id → the peer it was opened for. */
  private readonly socketOwner = new Map<number, string>();
  private nextSocketId = 1;
  readonly counters: DiscoCounters = {
    pingsSent: 0, pongsSent: 0, pongsAccepted: 0, dropMalformed: 0, dropUnknownSender: 0, dropBadNodeKey: 0,
    dropUnexpectedPong: 0, dropRateLimited: 0, dropReplay: 0, callMeMaybeSent: 0, callMeMaybeReceived: 0, discoKeysAdopted: 0, discoKeysAnnounced: 0,
    hardNatAttempts: 0, hardNatProbes: 0, hardNatOpeners: 0, hardNatSockets: 0, hardNatDirect: 0, dropWrongSocket: 0,
  };

  private readonly eagerLimit: number;
  private lastNow = 0;

  constructor(private readonly o: DiscoCoreOptions) {
    this.eagerLimit = o.eagerLimit ?? EAGER_PEER_LIMIT;
    const k = decodeKey(o.nodeKey);
    if (!k) throw new TypeError('nodeKey must be a base64 X25519 key');
    this.nodeKeyBytes = k;
  }

  handle(e: DiscoEvent, now: number): DiscoAction[] {
    this.lastNow = now;
    // Our key's epoch: the clock at our first event. The clock is epoch-anchored (and virtual time
    // runs on across sim restarts), so a restarted agent's announcements carry a later epoch.
    this.keyEpoch ??= Math.max(0, Math.floor(now));
    const out: DiscoAction[] = [];
    this.handleEvent(e, now, out);
    this.runTimers(now, out);
    for (const p of this.touched) this.rearm(p);
    this.touched.clear();
    return out;
  }

  private handleEvent(e: DiscoEvent, now: number, out: DiscoAction[]): void {
    switch (e.type) {
      case 'peers-updated': this.updatePeers(e.peers, now, out); break;
      case 'lan-candidate': {
        const p = this.touch(e.nodeKey);
        if (!p) break;
        const fresh = addCandidate(p.path, e.endpoint, 'lan', now);
        if (fresh && p.path.best?.kind !== 'lan') startBurst(p.path, now);
        // A peer whose disco key we never learned (it joined while the coordinator was away
        // from us): our node-sealed key makes it answer with its own, and punching starts.
        const key = `${p.input.nodeKey}|${formatEndpoint(e.endpoint)}`;
        if (!p.discoPub && !this.announcedTo.has(key)) {
          this.announcedTo.set(key, true);
          this.announce(p, e.endpoint, out);
        }
        break;
      }
      case 'udp': this.receive(e.from, e.bytes, now, out, e.via); break;
      case 'call-me-maybe': {
        const p = this.touch(e.fromNodeKey);
        if (!p) break;
        p.wantedUntil = now + WANT_TTL_MS; // the peer wants a path to us
        this.counters.callMeMaybeReceived++;
        const keys = new Set<string>();
        for (const text of e.endpoints.slice(0, 16)) {
          const ep = parseEndpoint(text);
          if (!ep) continue;
          keys.add(formatEndpoint(ep));
          addCandidate(p.path, ep, 'call-me-maybe', now);
        }
        // The peer's address may have changed: let any fresh answer replace the current path.
        const bestEp = p.path.best && p.path.candidates.get(p.path.best.key)?.ep;
        if (p.path.best && !(bestEp && keys.has(formatEndpoint(bestEp)))) p.path.best.suspect = true;
        startBurst(p.path, now);
        break;
      }
      case 'network-changed':
        for (const p of this.peers.values()) {
          if (!this.active(p, now)) continue;
          this.touched.add(p);
          if (p.path.best) p.path.best.suspect = true;
          startBurst(p.path, now);
          resetHardNat(p.hardNat); // our mappings are new: hard-NAT attempts start over after this burst
          this.callMeMaybe(p, now, out, true);
        }
        break;
      case 'self-endpoints':
        this.selfEndpoints = e.endpoints.slice(0, 16);
        this.selfNatType = e.natType;
        break;
      case 'wireguard-stats': {
        const p = this.touch(e.nodeKey);
        if (!p) break;
        p.lastHandshakeMs = e.lastHandshakeMs;
        const ep = e.endpoint ? parseEndpoint(e.endpoint) : undefined;
        // WireGuard only moves its endpoint after an authenticated packet, so a handshake
        // from an address counts as proof the way a pong does.
        if (ep && e.lastHandshakeMs > 0) {
          const c = noteWireguardEvidence(p.path, ep, now);
          if (c) this.chosen(p, c, now, out);
        }
        break;
      }
      case 'want': {
        const p = this.touch(e.nodeKey);
        if (!p) break;
        this.want(p, now, out);
        break;
      }
      case 'ping-now': {
        const p = this.touch(e.nodeKey);
        if (!p) break;
        this.want(p, now, out);
        const target = p.path.best ? p.path.candidates.get(p.path.best.key) : undefined;
        for (const c of target ? [target] : p.path.candidates.values()) this.ping(p, c, now, out, true);
        break;
      }
      case 'tick': break;
    }
  }

  /** The peer an event is about, marked so its wakeup is recomputed after the event. */
  private touch(nodeKey: string): Peer | undefined {
    const p = this.peers.get(nodeKey);
    if (p) this.touched.add(p);
    return p;
  }

  nextWakeup(): number | undefined {
    while (this.wakes.size > 0 && this.stale(this.wakes.peek()!)) this.wakes.pop();
    return this.wakes.peek()?.at;
  }

  private stale(w: Wake): boolean {
    const p = this.peers.get(w.key);
    return !p || p.wakeGen !== w.gen;
  }

  /** Recomputes a peer's wakeup and files it in the heap. */
  private rearm(p: Peer): void {
    const a = peerNextWakeup(p.path);
    const h = p.discoPub ? hardNatNextWakeup(p.hardNat, !p.path.best) : undefined; // runTimers skips a peer without a disco key
    const at = a === undefined ? h : h === undefined ? a : Math.min(a, h);
    if (at === p.wake) return;
    p.wake = at;
    p.wakeGen++;
    if (at !== undefined) this.wakes.push({ at, key: p.input.nodeKey, gen: p.wakeGen });
  }

  /** A peer's RTT on its chosen path; undefined without one. O(1), unlike peerStatus. */
  rttOf(nodeKey: string, now: number): number | undefined {
    const p = this.peers.get(nodeKey);
    if (!p || pathKind(p.path, now) === 'none') return undefined;
    return p.path.best && p.path.candidates.get(p.path.best.key)?.rttMs;
  }

  peerStatus(now: number): DiscoPeerStatus[] {
    return [...this.peers.values()].map((p) => {
      const path = pathKind(p.path, now);
      const best = p.path.best && p.path.candidates.get(p.path.best.key);
      return {
        nodeKey: p.input.nodeKey, name: p.input.name, path,
        endpoint: path !== 'none' ? best?.key : undefined, rttMs: path !== 'none' ? best?.rttMs : undefined,
        lastPongAt: best && Number.isFinite(best.lastPongAt) ? best.lastPongAt : undefined,
        candidates: p.path.candidates.size,
        why: path === 'none' ? this.explain(p) : undefined,
      };
    });
  }

  /** A sentence a person can act on, for a peer without a path. */
  private explain(p: Peer): string {
    if (!p.discoPub) return 'the peer has never connected to the coordinator, so its keys and endpoints are unknown';
    if (p.path.candidates.size === 0) {
      return p.input.online ? 'the peer has not reported any endpoints yet' : 'the peer is offline and no endpoint of it is known';
    }
    const tried = p.path.candidates.size;
    if (p.path.pingsSent === 0 && !this.active(p, this.lastNow)) {
      return `not punched yet: with ${this.peers.size} peers, paths are made on demand (traffic to the peer, knit ping, or the peer reaching out)`;
    }
    if (this.selfNatType === 'blocked' || p.input.natType === 'blocked') return 'UDP is blocked on one side; a relay is needed';
    if (this.selfNatType === 'endpoint-dependent' && p.input.natType === 'endpoint-dependent') {
      return 'both sides map endpoint-dependently (symmetric NAT), so hole punching cannot work; a relay is needed';
    }
    if (!p.input.online) return `the peer is offline (coordinator) and none of its ${tried} known endpoints answered`;
    const role = hardNatRole(this.selfNatType, p.input.natType);
    if (role && p.hardNat.attempts > 0) {
      const next = p.hardNat.nextAttemptAt !== undefined ? `; next attempt in ${Math.max(0, Math.round((p.hardNat.nextAttemptAt - this.lastNow) / 1000))} s` : '';
      return `${role === 'hard' ? 'our' : "the peer's"} NAT maps endpoint-dependently; port prediction / birthday probing found no port yet (${p.hardNat.attempts} attempt(s)${next}). The relay carries traffic meanwhile`;
    }
    if (this.selfNatType === 'endpoint-dependent' || p.input.natType === 'endpoint-dependent') {
      const who = this.selfNatType === 'endpoint-dependent' ? 'our NAT maps' : "the peer's NAT maps";
      return `${who} endpoint-dependently (symmetric NAT), so punching works only if the other NAT accepts any port from this address; it didn't answer (${tried} candidates tried). A relay is needed`;
    }
    return `no candidate answered (${tried} tried, ${p.path.pingsSent} pings): a firewall may drop UDP on port ${p.input.endpoints[0]?.split(':').pop() ?? '?'}, or the peer's agent is not running`;
  }

  private updatePeers(list: DiscoPeerInput[], now: number, out: DiscoAction[]): void {
    // First bring the map up to date, then decide whom to punch: whether the mesh is
    // "big" (on-demand punching) depends on the whole list, not on how far we've read.
    const changed: { p: Peer; fresh: boolean; added: boolean }[] = [];
    const seen = new Set<string>();
    for (const input of list) {
      seen.add(input.nodeKey);
      let p = this.peers.get(input.nodeKey);
      if (p?.input === input) continue; // the same object: unchanged since the last map (the agent passes the map's own)
      const isNew = !p;
      if (!p) {
        p = { input, path: newPeerPath(), lastCallMeMaybeAt: -Infinity, lastKind: 'none', lastHandshakeMs: 0, hardNat: newHardNatState(), wakeGen: 0, wantedUntil: -Infinity };
        this.peers.set(input.nodeKey, p);
      }
      this.touched.add(p);
      const discoChanged = p.input.discoKey !== input.discoKey || (isNew && input.discoKey !== '');
      if (discoChanged) {
        if (p.input.discoKey) this.byDisco.delete(p.input.discoKey);
        const pub = decodeKey(input.discoKey);
        p.discoPub = pub;
        p.sharedKey = undefined;
        if (pub) this.byDisco.set(input.discoKey, input.nodeKey);
      }
      const sameEndpoints = !isNew && p.input.endpoints === input.endpoints; // the map keeps unchanged arrays
      p.input = input;
      let added = false;
      if (!sameEndpoints) {
        const listed = new Set<string>();
        for (const text of input.endpoints) {
          const ep = parseEndpoint(text);
          if (!ep) continue;
          listed.add(formatEndpoint(ep));
          if (addCandidate(p.path, ep, 'coordinator', now)) added = true;
        }
        withdrawCoordinatorCandidates(p.path, listed);
      }
      changed.push({ p, fresh: isNew || discoChanged, added });
    }
    for (const [key, p] of this.peers) {
      if (seen.has(key)) continue;
      this.peers.delete(key);
      if (p.input.discoKey) this.byDisco.delete(p.input.discoKey);
      this.releaseSockets(p, [...this.socketOwner].filter(([, k]) => k === key).map(([id]) => id), out);
    }
    for (const { p, fresh, added } of changed) {
      if (!p.discoPub || !this.active(p, now)) continue;
      if (fresh) {
        // A new peer, or the same peer restarted (new disco key): punch and ask it to call back.
        if (p.path.best) p.path.best.suspect = true;
        startBurst(p.path, now);
        resetHardNat(p.hardNat);
        this.callMeMaybe(p, now, out, false);
      } else if (added) {
        // New endpoints from the coordinator: if the current path isn't among them the peer
        // has moved (its call-me-maybe may be lost while it reconnects), so re-punch now.
        const best = p.path.best;
        if (best && !p.input.endpoints.includes(best.key) && p.path.candidates.get(best.key)?.sources.includes('coordinator')) best.suspect = true;
        if (!best || best.suspect) startBurst(p.path, now);
      }
    }
  }

  /** The key for node-sealed packets with this peer (X25519 of the node keys), derived on first use. */
  private nodeBoxKey(p: Peer): Uint8Array | undefined {
    if (!this.o.nodePrivateKey) return undefined;
    if (!p.nodeBoxKey) {
      const peerNode = decodeKey(p.input.nodeKey);
      p.nodeBoxKey = peerNode && discoNodeKey(this.o.nodePrivateKey, peerNode);
    }
    return p.nodeBoxKey;
  }

  private keyEpoch: number | undefined;

  /** Our disco key, node-sealed for this peer: how a restarted agent is believed without the coordinator. */
  private announce(p: Peer, to: UdpEndpoint, out: DiscoAction[]): void {
    const key = this.nodeBoxKey(p);
    if (!key) return;
    this.counters.discoKeysAnnounced++;
    out.push({ type: 'send-udp', to, bytes: sealDisco({ type: 'disco-key', discoKey: this.o.discoPublicKey, epoch: this.keyEpoch ?? 0 }, this.nodeKeyBytes, key, this.o.random(24), DISCO_MAGIC_NODE) });
  }

  /**
   * A node-sealed disco-key announcement: the peer (proven by its node key) has a new disco
   * key, typically after a restart while the coordinator is away. Adopt it, re-punch, and
   * announce ours back once, so that two restarted agents both learn. Opening costs an
   * X25519 on first contact, so tries are rate-limited per source address.
   */
  private receiveAnnouncement(bytes: Uint8Array, from: UdpEndpoint, now: number, out: DiscoAction[]): void {
    const sender = discoSender(bytes);
    const p = sender && this.touch(Buffer.from(sender).toString('base64'));
    if (!p || !this.allowUnknown(from.address, now)) {
      this.counters.dropUnknownSender++;
      return;
    }
    const key = this.nodeBoxKey(p);
    const m = key && openDisco(bytes, key);
    if (!m || m.type !== 'disco-key') {
      this.counters.dropMalformed++;
      return;
    }
    const discoKey = Buffer.from(m.discoKey).toString('base64');
    // A captured older announcement, replayed, would make us adopt a stale key: only newer epochs count.
    if (p.announcedEpoch !== undefined && m.epoch < p.announcedEpoch) {
      this.counters.dropReplay++;
      return;
    }
    p.announcedEpoch = Math.max(p.announcedEpoch ?? 0, m.epoch);
    if (discoKey === p.input.discoKey) return; // nothing new: no reply, so announcements never ping-pong
    if (p.input.discoKey) this.byDisco.delete(p.input.discoKey);
    p.input = { ...p.input, discoKey };
    p.discoPub = m.discoKey;
    p.sharedKey = undefined;
    this.byDisco.set(discoKey, p.input.nodeKey);
    this.counters.discoKeysAdopted++;
    if (p.path.best) p.path.best.suspect = true;
    p.wantedUntil = now + WANT_TTL_MS;
    startBurst(p.path, now);
    addCandidate(p.path, from, 'ping', now);
    this.announce(p, from, out);
  }

  private allowUnknown(source: string, now: number): boolean {
    const b = this.unknownBudget.get(source) ?? { tokens: UNKNOWN_SENDER_TRIES_PER_S, at: now };
    b.tokens = Math.min(UNKNOWN_SENDER_TRIES_PER_S, b.tokens + ((now - b.at) / 1000) * UNKNOWN_SENDER_TRIES_PER_S);
    b.at = now;
    this.unknownBudget.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private sharedKey(p: Peer): Uint8Array | undefined {
    if (!p.sharedKey && p.discoPub) p.sharedKey = discoSharedKey(this.o.discoPrivateKey, p.discoPub);
    return p.sharedKey;
  }

  /** Small meshes punch every peer at once; beyond `eagerLimit` peers only those wanted or already connected. */
  private active(p: Peer, now: number): boolean {
    return this.peers.size <= this.eagerLimit || p.path.best !== undefined || now < p.wantedUntil;
  }

  private want(p: Peer, now: number, out: DiscoAction[]): void {
    const wasActive = this.active(p, now);
    p.wantedUntil = now + WANT_TTL_MS;
    if (!p.discoPub || wasActive) return;
    startBurst(p.path, now);
    this.callMeMaybe(p, now, out, false);
  }

  private callMeMaybe(p: Peer, now: number, out: DiscoAction[], force: boolean): void {
    if (!force && now - p.lastCallMeMaybeAt < CALL_ME_MAYBE_INTERVAL_MS) return;
    p.lastCallMeMaybeAt = now;
    this.counters.callMeMaybeSent++;
    out.push({ type: 'send-call-me-maybe', toNodeKey: p.input.nodeKey, endpoints: this.selfEndpoints });
  }

  private runTimers(now: number, out: DiscoAction[]): void {
    for (const [txid, o] of this.outstanding) {
      if (now - o.sentAt <= PING_TIMEOUT_MS) break; // insertion order = send order
      this.outstanding.delete(txid);
    }
    while (this.wakes.size > 0 && this.wakes.peek()!.at <= now) {
      const w = this.wakes.pop()!;
      const p = this.peers.get(w.key);
      if (!p || p.wakeGen !== w.gen) continue;
      p.wake = undefined; // consumed: rearm() files the next one
      this.touched.add(p);
      if (!p.discoPub) continue;
      const d = due(p.path, now);
      for (const c of d.ping) this.ping(p, c, now, out, false);
      if (d.burstEnded && !p.path.best && hardNatRole(this.selfNatType, p.input.natType)) noteBurstFailed(p.hardNat, now);
      this.runHardNat(p, now, out);
      if (d.died || d.burstEnded) {
        expireCandidates(p.path, now);
        // A peer nobody wants any more is left alone until traffic or the peer asks again.
        if (this.active(p, now)) this.callMeMaybe(p, now, out, false);
        else p.path.repunchAt = undefined;
      }
      this.notePathKind(p, now, out);
    }
  }

  private notePathKind(p: Peer, now: number, out: DiscoAction[]): void {
    const kind = pathKind(p.path, now);
    if (kind === p.lastKind) return;
    const best = p.path.best && p.path.candidates.get(p.path.best.key);
    out.push({ type: 'path-changed', nodeKey: p.input.nodeKey, from: p.lastKind, to: kind, endpoint: kind !== 'none' ? best?.key : undefined, rttMs: best?.rttMs });
    p.lastKind = kind;
  }

  private ping(p: Peer, c: Candidate, now: number, out: DiscoAction[], explicit: boolean): void {
    const last = this.destLastPing.get(c.key);
    if (last !== undefined && now - last < MIN_PING_INTERVAL_MS && !explicit) {
      this.counters.dropRateLimited++;
      return;
    }
    this.destLastPing.set(c.key, now);
    const txid = this.o.random(DISCO_TXID_LEN);
    const txHex = Buffer.from(txid).toString('hex');
    this.outstanding.set(txHex, { nodeKey: p.input.nodeKey, key: c.key, sentAt: now });
    if (this.outstanding.size > MAX_OUTSTANDING) this.outstanding.delete(this.outstanding.keys().next().value!);
    c.lastPingAt = now;
    p.path.pingsSent++;
    this.counters.pingsSent++;
    out.push({ type: 'send-udp', to: c.ep, bytes: this.seal(p, { type: 'ping', txid, nodeKey: this.nodeKeyBytes }), ...(c.via !== undefined && { via: c.via }) });
    // Until the peer has answered us once since we started, it may hold an old disco key of
    // ours (we restarted and the coordinator couldn't tell it): say which key is current.
    if (c.via === undefined && p.path.pongsReceived === 0 && !this.announcedTo.has(`${p.input.nodeKey}|${c.key}`)) {
      this.announcedTo.set(`${p.input.nodeKey}|${c.key}`, true);
      this.announce(p, c.ep, out);
    }
  }

  private seal(p: Peer, m: DiscoMessage): Uint8Array {
    return sealDisco(m, this.o.discoPublicKey, this.sharedKey(p)!, this.o.random(24));
  }

  private allowPong(source: string, now: number): boolean {
    const b = this.pongBudget.get(source) ?? { tokens: PONGS_PER_SOURCE_PER_S, at: now };
    b.tokens = Math.min(PONGS_PER_SOURCE_PER_S, b.tokens + ((now - b.at) / 1000) * PONGS_PER_SOURCE_PER_S);
    b.at = now;
    this.pongBudget.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private receive(from: UdpEndpoint, bytes: Uint8Array, now: number, out: DiscoAction[], via?: number): void {
    const sender = discoSender(bytes);
    if (!sender) {
      this.counters.dropMalformed++;
      return;
    }
    if (discoPacketKind(bytes) === 'node') {
      if (via !== undefined) return void this.counters.dropWrongSocket++; // announcements belong on the tunnel port
      return this.receiveAnnouncement(bytes, from, now, out);
    }
    const nodeKey = this.byDisco.get(Buffer.from(sender).toString('base64'));
    const p = nodeKey ? this.peers.get(nodeKey) : undefined;
    const key = p && this.sharedKey(p);
    if (!p || !key) {
      this.counters.dropUnknownSender++;
      return;
    }
    // An extra socket serves only the peer it was opened for.
    if (via !== undefined && this.socketOwner.get(via) !== p.input.nodeKey) {
      this.counters.dropWrongSocket++;
      return;
    }
    this.touched.add(p);
    const m = openDisco(bytes, key);
    if (!m) {
      this.counters.dropMalformed++;
      return;
    }
    const fromKey = candidateKey(from, via);
    if (m.type === 'ping') {
      if (Buffer.from(m.nodeKey).toString('base64') !== p.input.nodeKey) {
        this.counters.dropBadNodeKey++;
        return;
      }
      // Every genuine ping has a fresh txid: one seen before is a replay (someone on the path
      // resending a captured ping from spoofed sources to draw pongs and pings at them).
      const replayKey = `${p.input.nodeKey}|${Buffer.from(m.txid).toString('hex')}`;
      if (this.seenPings.has(replayKey)) {
        this.counters.dropReplay++;
        return;
      }
      this.seenPings.set(replayKey, true);
      if (!this.allowPong(from.address, now)) {
        this.counters.dropRateLimited++;
        return;
      }
      this.counters.pongsSent++;
      p.wantedUntil = now + WANT_TTL_MS;
      out.push({ type: 'send-udp', to: from, bytes: this.seal(p, { type: 'pong', txid: m.txid, src: from }), ...(via !== undefined && { via }) });
      // The ping's source is where the peer's packets come from: a candidate worth pinging back
      // at once — that return ping is what opens our side of a NAT for the crossing.
      const isNew = addCandidate(p.path, from, 'ping', now, via);
      const c = p.path.candidates.get(fromKey);
      if (c && (isNew || !p.path.best || p.path.best.suspect)) this.ping(p, c, now, out, false);
      return;
    }
    if (m.type === 'pong') {
      const txHex = Buffer.from(m.txid).toString('hex');
      const o = this.outstanding.get(txHex);
      if (!o || o.nodeKey !== p.input.nodeKey || o.key !== fromKey || now - o.sentAt > PING_TIMEOUT_MS) {
        this.counters.dropUnexpectedPong++;
        return;
      }
      this.outstanding.delete(txHex);
      this.counters.pongsAccepted++;
      // A hard-NAT probe or opener met: the port it went to (or the socket it left from) is a path.
      if (o.hardNat) addCandidate(p.path, o.hardNat.ep, 'hard-nat', now, o.hardNat.via);
      const rtt = Math.max(0, Math.round(now - o.sentAt));
      const changed = notePong(p.path, fromKey, rtt, now);
      if (changed) this.chosen(p, changed, now, out);
      out.push({ type: 'pong', nodeKey: p.input.nodeKey, endpoint: fromKey, rttMs: rtt, path: pathKind(p.path, now) });
      return;
    }
    if (m.type !== 'call-me-maybe') {
      this.counters.dropMalformed++; // disco-key travels node-sealed only
      return;
    }
    // call-me-maybe over disco: accepted the same way as one relayed by the coordinator.
    this.handleEvent({ type: 'call-me-maybe', fromNodeKey: p.input.nodeKey, endpoints: m.endpoints.map(formatEndpoint) }, now, out);
  }

  private chosen(p: Peer, c: Candidate, now: number, out: DiscoAction[]): void {
    if (p.hardNat.current && !p.hardNat.current.released) this.counters.hardNatDirect++;
    out.push({
      type: 'set-peer-endpoint', nodeKey: p.input.nodeKey, endpoint: formatEndpoint(c.ep), path: c.kind, initiator: this.o.nodeKey < p.input.nodeKey,
      ...(c.via !== undefined && { via: c.via }),
    });
    this.notePathKind(p, now, out);
  }

  /**
   * The hard-NAT side of a peer's timers: send the probes or openers the pacing allows, give back
   * an attempt's sockets when its hold ends (except one carrying the path), and start the next
   * attempt when it is due and the peer still has no path. See hard-nat.ts for the plan.
   */
  private runHardNat(p: Peer, now: number, out: DiscoAction[]): void {
    const s = p.hardNat;
    const a = s.current;
    if (a) {
      if (p.path.best) stopSending(a); // found: the rest of the budget is saved
      for (let n = takeSlice(a, now); n > 0; n--, a.sent++) {
        if (a.role === 'easy') {
          this.probe(p, probeTarget(a, a.sent), undefined, now, out);
          this.counters.hardNatProbes++;
        } else {
          const id = this.nextSocketId++;
          this.socketOwner.set(id, p.input.nodeKey);
          this.counters.hardNatSockets++;
          a.socketIds.push(id);
          this.probe(p, a.target!, id, now, out);
          this.counters.hardNatOpeners++;
        }
      }
      if (!a.released && now >= a.releaseAt) {
        a.released = true;
        const live = this.liveSockets(p, now);
        for (const id of a.socketIds) if (live.has(id)) s.kept.add(id);
        this.releaseSockets(p, a.socketIds.filter((id) => !live.has(id)), out);
        s.current = undefined;
      }
    }
    if (s.kept.size > 0) {
      const live = this.liveSockets(p, now);
      const idle = [...s.kept].filter((id) => !live.has(id));
      for (const id of idle) s.kept.delete(id);
      this.releaseSockets(p, idle, out);
    }
    if (p.path.best || s.nextAttemptAt === undefined || now < s.nextAttemptAt) return;
    const role = hardNatRole(this.selfNatType, p.input.natType);
    if (!role || !p.discoPub || !this.active(p, now)) return resetHardNat(s);
    if (s.current) {
      s.nextAttemptAt = s.current.releaseAt; // one attempt at a time per peer
      return;
    }
    if (role === 'hard' && this.o.hardNatSockets && this.socketOwner.size + BIRTHDAY_SOCKETS > HARD_NAT_MAX_OPEN_SOCKETS) {
      s.nextAttemptAt = now + HARD_NAT_BACKOFF_BASE_MS / 4; // other peers' attempts hold the sockets: wait, this one isn't counted
      return;
    }
    const prediction = predictPorts(role === 'hard' ? this.selfEndpoints : p.input.endpoints);
    const peerEndpoint = role === 'hard' ? this.publicEndpointOf(p) : undefined;
    if (!prediction || (role === 'hard' && !peerEndpoint)) return resetHardNat(s);
    startAttempt(s, { role, prediction, peerEndpoint, canOpenSockets: this.o.hardNatSockets === true, random: this.o.random }, now);
    this.counters.hardNatAttempts++;
    // The hard side pings the peer from the tunnel port too: that mapping is what a prediction aims at.
    if (role === 'hard') startBurst(p.path, now);
    this.runHardNat(p, now, out); // the first slice goes now
  }

  /** A peer's public endpoint (the first one that isn't private or loopback), where the hard side's openers go. */
  private publicEndpointOf(p: Peer): UdpEndpoint | undefined {
    for (const text of p.input.endpoints) {
      const ep = parseEndpoint(text);
      if (ep && !isPrivateIp(ep.address) && !isLoopbackIp(ep.address)) return ep;
    }
    return undefined;
  }

  /** Extra sockets carrying a live path of this peer (the chosen one, or any answered within PATH_DEAD_MS). */
  private liveSockets(p: Peer, now: number): Set<number> {
    const live = new Set<number>();
    for (const c of p.path.candidates.values()) {
      if (c.via !== undefined && (c.key === p.path.best?.key || now - c.lastPongAt < PATH_DEAD_MS)) live.add(c.via);
    }
    return live;
  }

  private releaseSockets(p: Peer, ids: number[], out: DiscoAction[]): void {
    const mine = ids.filter((id) => this.socketOwner.delete(id));
    if (mine.length === 0) return;
    this.counters.hardNatSockets -= mine.length;
    const gone = new Set(mine);
    for (const c of [...p.path.candidates.values()]) if (c.via !== undefined && gone.has(c.via) && c.key !== p.path.best?.key) p.path.candidates.delete(c.key);
    out.push({ type: 'release-sockets', ids: mine });
  }

  /** A hard-NAT probe (easy side, `via` undefined) or opener (hard side, from extra socket `via`): a ping with no candidate behind it. */
  private probe(p: Peer, to: UdpEndpoint, via: number | undefined, now: number, out: DiscoAction[]): void {
    const txid = this.o.random(DISCO_TXID_LEN);
    this.outstanding.set(Buffer.from(txid).toString('hex'), { nodeKey: p.input.nodeKey, key: candidateKey(to, via), sentAt: now, hardNat: { ep: to, via } });
    if (this.outstanding.size > MAX_OUTSTANDING) this.outstanding.delete(this.outstanding.keys().next().value!);
    out.push({ type: 'send-udp', to, bytes: this.seal(p, { type: 'ping', txid, nodeKey: this.nodeKeyBytes }), ...(via !== undefined && { via }) });
  }

  /** What the current hard-NAT attempt towards a peer is doing, for status and logs (undefined: none). */
  hardNatStatus(nodeKey: string): string | undefined {
    const a = this.peers.get(nodeKey)?.hardNat.current;
    return a && describeAttempt(a);
  }
}
