/**
 * The disco core: every peer's path machine plus the packet handling around
 * them, sans-I/O. The agent shell feeds it events (peer map updates, disco
 * packets from the tunnel port, call-me-maybe relayed by the coordinator,
 * network changes, WireGuard stats, timer ticks) with `now`, performs the
 * actions it returns, and arms one timer for `nextWakeup()`. The simulator
 * runs this very code.
 *
 * The core keeps the peer map, routes packets and timers to the right peer,
 * and decides whom to punch and when; its helpers keep the rest:
 *  - ping-pong.ts: pings out and pongs back, with their replay and rate rules;
 *  - announcements.ts: node-sealed disco-key announcements;
 *  - hard-nat-runner.ts: hard-NAT attempts and their extra sockets;
 *  - peer-status.ts: what is reported about a peer, and why it has no path;
 *  - path-mtu.ts: how big a packet the chosen path carries (padded probes).
 *
 * Safety rules, enforced by the core and those helpers:
 *  - only packets sealed by a known peer's disco key are looked at;
 *  - a ping must carry the node key the coordinator bound to that disco key;
 *  - a pong counts only for an outstanding ping: same txid, same address, in time;
 *  - pings per destination, pongs per source and call-me-maybes per peer are rate-limited;
 *  - a pong is never larger than its ping (see shared/wire/disco.ts).
 */
import { MinHeap } from '../../shared/min-heap.js';
import type { RandomBytes } from '../../shared/clock.js';
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint, parseEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import { discoPacketKind, discoSender, openDisco } from '../../shared/wire/disco.js';
import { DiscoKeyAnnouncer } from './announcements.js';
import type { DiscoAction, DiscoCounters, DiscoEvent, DiscoPeerInput } from './events.js';
import { hardNatNextWakeup, hardNatRole, noteBurstFailed, resetHardNat } from './hard-nat.js';
import { HardNatRunner } from './hard-nat-runner.js';
import { newPeer, type Peer } from './peer.js';
import {
  addCandidate, betterKind, candidateKey, due, expireCandidates, nextWakeup as peerNextWakeup, noteWireguardEvidence, notePong,
  pathKind, startBurst, withdrawCoordinatorCandidates, type Candidate,
} from './peer-path.js';
import { describePeer, type DiscoPeerStatus, type NoPathContext } from './peer-status.js';
import { PingPong } from './ping-pong.js';
import {
  isQuietTarget, QUIET_KEEP_TTL, quietActive, quietDue, quietEligible, quietHoldsBack, quietMayStart, quietNextWakeup, quietOpenerSignalled, startQuiet, stopQuiet,
} from './quiet-punch.js';
import { dueProbes, followPath, noteProbeAnswered, pathMtuNextWakeup, probePayloadBytes, tunnelMtuFor } from './path-mtu.js';
import { WG_DEFAULT_MTU } from '../engine/ip-link.js';

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

interface Wake { at: number; key: string; gen: number }

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
  /** The tunnel interface's MTU, the most a path's tunnel MTU can be (default WG_DEFAULT_MTU). */
  interfaceMtu?: number;
}

export class DiscoCore {
  private readonly peers = new Map<string, Peer>(); // by node key
  private readonly byDisco = new Map<string, string>(); // disco key (base64) → node key
  private selfEndpoints: string[] = [];
  /** Peers whose state an event touched: their wakeups are recomputed after it. */
  private readonly touched = new Set<Peer>();
  /** Min-heap of peer wakeups (lazy deletion by generation): timers cost O(log n), not O(peers). */
  private readonly wakes = new MinHeap<Wake>((a, b) => a.at < b.at);
  private selfNatType: NatType = 'unknown';
  readonly counters: DiscoCounters = {
    pingsSent: 0, pongsSent: 0, pongsAccepted: 0, dropMalformed: 0, dropUnknownSender: 0, dropBadNodeKey: 0,
    dropUnexpectedPong: 0, dropRateLimited: 0, dropReplay: 0, callMeMaybeSent: 0, callMeMaybeReceived: 0, discoKeysAdopted: 0, discoKeysAnnounced: 0,
    quietRounds: 0, quietDirect: 0, hardNatAttempts: 0, hardNatProbes: 0, hardNatOpeners: 0, hardNatSockets: 0, hardNatDirect: 0, dropWrongSocket: 0,
    mtuProbesSent: 0, dropShortMtuPong: 0,
  };
  private readonly pings: PingPong;
  private readonly announcements: DiscoKeyAnnouncer;
  private readonly hardNat: HardNatRunner;

  private readonly eagerLimit: number;
  private lastNow = 0;

  constructor(private readonly o: DiscoCoreOptions) {
    this.eagerLimit = o.eagerLimit ?? EAGER_PEER_LIMIT;
    const nodeKey = decodeKey(o.nodeKey);
    if (!nodeKey) throw new TypeError('nodeKey must be a base64 X25519 key');
    const { discoPrivateKey, discoPublicKey, random } = o;
    this.pings = new PingPong({ nodeKey, discoPrivateKey, discoPublicKey, random, counters: this.counters });
    this.announcements = new DiscoKeyAnnouncer({ nodeKey, nodePrivateKey: o.nodePrivateKey, discoPublicKey, random, counters: this.counters });
    this.hardNat = new HardNatRunner({
      canOpenSockets: o.hardNatSockets, random, counters: this.counters, pings: this.pings,
      selfEndpoints: () => this.selfEndpoints, selfNatType: () => this.selfNatType, active: (p, now) => this.active(p, now),
    });
  }

  handle(e: DiscoEvent, now: number): DiscoAction[] {
    this.lastNow = now;
    this.announcements.fixEpoch(now);
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
        if (!p.discoPub) this.announcements.announceOnce(p, e.endpoint, out);
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
        // During a quiet round the peer calls only when it opens; new candidates in the call
        // (a port its new flows get, say) are simply targets of the round's next steps.
        quietOpenerSignalled(p.quiet, now);
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
          stopQuiet(p.quiet, now, false);
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
    const m = p.discoPub ? pathMtuNextWakeup(p.mtu) : undefined;
    const q = p.discoPub ? quietNextWakeup(p.quiet) : undefined;
    const at = [a, h, m, q].reduce<number | undefined>((t, x) => (x === undefined ? t : t === undefined ? x : Math.min(t, x)), undefined);
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
    const context: NoPathContext = {
      selfNatType: this.selfNatType, peerCount: this.peers.size, lastNow: this.lastNow, active: (p) => this.active(p, this.lastNow),
    };
    return [...this.peers.values()].map((p) => describePeer(p, now, context));
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
        p = newPeer(input);
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
      this.hardNat.releaseAll(p, out);
    }
    for (const { p, fresh, added } of changed) {
      if (!p.discoPub || !this.active(p, now)) continue;
      if (fresh) {
        // A new peer, or the same peer restarted (new disco key): punch and ask it to call back.
        if (p.path.best) p.path.best.suspect = true;
        startBurst(p.path, now);
        resetHardNat(p.hardNat);
        stopQuiet(p.quiet, now, false);
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

  /**
   * A node-sealed disco-key announcement: the peer (proven by its node key) has a new disco
   * key, typically after a restart while the coordinator is away. Adopt it, re-punch, and
   * announce ours back once, so that two restarted agents both learn.
   */
  private receiveAnnouncement(sender: Uint8Array, bytes: Uint8Array, from: UdpEndpoint, now: number, out: DiscoAction[]): void {
    const p = this.touch(Buffer.from(sender).toString('base64'));
    const discoPub = this.announcements.newDiscoKey(p, bytes, from, now);
    if (!p || !discoPub) return;
    const discoKey = Buffer.from(discoPub).toString('base64');
    if (p.input.discoKey) this.byDisco.delete(p.input.discoKey);
    p.input = { ...p.input, discoKey };
    p.discoPub = discoPub;
    p.sharedKey = undefined;
    this.byDisco.set(discoKey, p.input.nodeKey);
    this.counters.discoKeysAdopted++;
    if (p.path.best) p.path.best.suspect = true;
    p.wantedUntil = now + WANT_TTL_MS;
    startBurst(p.path, now);
    addCandidate(p.path, from, 'ping', now);
    this.announcements.announce(p, from, out);
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
    if (!force && quietActive(p.quiet)) return; // a quiet round's one call is its opener's signal
    if (!force && now - p.lastCallMeMaybeAt < CALL_ME_MAYBE_INTERVAL_MS) return;
    p.lastCallMeMaybeAt = now;
    this.counters.callMeMaybeSent++;
    out.push({ type: 'send-call-me-maybe', toNodeKey: p.input.nodeKey, endpoints: this.selfEndpoints });
  }

  private runTimers(now: number, out: DiscoAction[]): void {
    this.pings.expire(now);
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
      this.quietPunch(p, d.burstEnded, now, out);
      this.hardNat.run(p, now, out);
      this.probeMtu(p, now, out);
      if (d.died || d.burstEnded) {
        expireCandidates(p.path, now);
        // A peer nobody wants any more is left alone until traffic or the peer asks again.
        if (this.active(p, now)) this.callMeMaybe(p, now, out, false);
        else p.path.repunchAt = undefined;
      }
      this.notePathKind(p, now, out);
    }
  }

  /**
   * Quiet punching (quiet-punch.ts): a round starts when an ordinary burst between two
   * endpoint-independent NATs found nothing; its steps go out on schedule.
   */
  private quietPunch(p: Peer, burstEnded: boolean, now: number, out: DiscoAction[]): void {
    const q = p.quiet;
    if (burstEnded && !p.path.best && quietMayStart(q, now) && quietEligible(this.selfNatType, p.input.natType)) {
      if ([...p.path.candidates.values()].some(isQuietTarget)) {
        startQuiet(q, this.o.nodeKey < p.input.nodeKey ? 'opener' : 'waiter', now);
        this.counters.quietRounds++;
      }
    }
    const { steps } = quietDue(q, now);
    if (steps.length === 0) return;
    const targets = [...p.path.candidates.values()].filter(isQuietTarget);
    for (const step of steps) {
      for (const c of targets) {
        const at = out.length;
        // Past the hold-back (explicit: a scheduled step, not a burst's).
        if (!this.pings.ping(p, c, now, out, true)) continue;
        const sent = out[at];
        if (step === 'keep' && sent?.type === 'send-udp') sent.ttl = QUIET_KEEP_TTL;
      }
      // The waiter re-anchors its tries on this (through the coordinator: nothing else crosses yet).
      if (step === 'open') this.callMeMaybe(p, now, out, true);
    }
  }

  /** Follows the chosen path with path MTU probing (path-mtu.ts) and sends a round when one is due. */
  private probeMtu(p: Peer, now: number, out: DiscoAction[]): void {
    this.followMtu(p, now, out);
    const due = dueProbes(p.mtu, now);
    if (due.changed) this.notePathMtu(p, out);
    const c = p.mtu.key !== undefined ? p.path.candidates.get(p.mtu.key) : undefined;
    if (!c) return;
    for (const size of due.sizes) this.pings.probeMtu(p, c, size, probePayloadBytes(size, p.mtu.ipv6), now, out);
  }

  /** A new chosen path (or none) forgets what the last one carried. */
  private followMtu(p: Peer, now: number, out: DiscoAction[]): void {
    const c = pathKind(p.path, now) !== 'none' && p.path.best ? p.path.candidates.get(p.path.best.key) : undefined;
    if (followPath(p.mtu, c?.key, c?.ep.address.includes(':') ?? false, now)) this.notePathMtu(p, out);
  }

  private notePathMtu(p: Peer, out: DiscoAction[]): void {
    const pathMtu = p.mtu.provenBytes;
    const tunnelMtu = pathMtu === undefined ? undefined : tunnelMtuFor(pathMtu, p.mtu.ipv6, this.o.interfaceMtu ?? WG_DEFAULT_MTU);
    out.push({ type: 'path-mtu', nodeKey: p.input.nodeKey, endpoint: p.mtu.key, pathMtu, tunnelMtu });
  }

  private notePathKind(p: Peer, now: number, out: DiscoAction[]): void {
    this.followMtu(p, now, out);
    const kind = pathKind(p.path, now);
    if (kind === p.lastKind) return;
    const best = p.path.best && p.path.candidates.get(p.path.best.key);
    out.push({ type: 'path-changed', nodeKey: p.input.nodeKey, from: p.lastKind, to: kind, endpoint: kind !== 'none' ? best?.key : undefined, rttMs: best?.rttMs });
    p.lastKind = kind;
  }

  private ping(p: Peer, c: Candidate, now: number, out: DiscoAction[], explicit: boolean): void {
    if (quietHoldsBack(p.quiet, c)) return; // a quiet round sends on its own schedule
    if (!this.pings.ping(p, c, now, out, explicit)) return;
    // Until the peer has answered us once since we started, it may hold an old disco key of
    // ours (we restarted and the coordinator couldn't tell it): say which key is current.
    if (c.via === undefined && p.path.pongsReceived === 0) this.announcements.announceOnce(p, c.ep, out);
  }

  private receive(from: UdpEndpoint, bytes: Uint8Array, now: number, out: DiscoAction[], via?: number): void {
    const sender = discoSender(bytes);
    if (!sender) {
      this.counters.dropMalformed++;
      return;
    }
    if (discoPacketKind(bytes) === 'node') {
      if (via !== undefined) return void this.counters.dropWrongSocket++; // announcements belong on the tunnel port
      return this.receiveAnnouncement(sender, bytes, from, now, out);
    }
    const nodeKey = this.byDisco.get(Buffer.from(sender).toString('base64'));
    const p = nodeKey ? this.peers.get(nodeKey) : undefined;
    const key = p && this.pings.boxKey(p);
    if (!p || !key) {
      this.counters.dropUnknownSender++;
      return;
    }
    // An extra socket serves only the peer it was opened for.
    if (via !== undefined && this.hardNat.ownerOf(via) !== p.input.nodeKey) {
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
      if (!this.pings.answerPing(p, m, bytes.length, from, via, now, out)) return;
      p.wantedUntil = now + WANT_TTL_MS;
      stopQuiet(p.quiet, now, false); // packets cross: ordinary punching finishes the job
      // The ping's source is where the peer's packets come from: a candidate worth pinging back
      // at once — that return ping is what opens our side of a NAT for the crossing.
      const isNew = addCandidate(p.path, from, 'ping', now, via);
      const c = p.path.candidates.get(fromKey);
      // Also when it comes from a better kind of path than ours (the LAN while we went direct,
      // say through a hairpinning router): the burst that would have tried it ended at our
      // first pong, and the next upgrade round is half a minute away.
      if (c && (isNew || !p.path.best || p.path.best.suspect || betterKind(c.kind, p.path.best.kind))) this.ping(p, c, now, out, false);
      return;
    }
    if (m.type === 'pong') {
      const o = this.pings.takePong(p, m.txid, fromKey, now);
      if (!o) return;
      if (o.mtuProbe) {
        // Proof only at full length: a shorter pong (a peer that doesn't pad) says nothing of the size.
        if (bytes.length !== o.mtuProbe.wireBytes) return void this.counters.dropShortMtuPong++;
        if (noteProbeAnswered(p.mtu, fromKey, o.mtuProbe.pathBytes)) this.notePathMtu(p, out);
        return;
      }
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
    if (quietActive(p.quiet) && c.kind === 'direct') this.counters.quietDirect++;
    stopQuiet(p.quiet, now, false);
    out.push({
      type: 'set-peer-endpoint', nodeKey: p.input.nodeKey, endpoint: formatEndpoint(c.ep), path: c.kind, initiator: this.o.nodeKey < p.input.nodeKey,
      ...(c.via !== undefined && { via: c.via }),
    });
    this.notePathKind(p, now, out);
  }
}
