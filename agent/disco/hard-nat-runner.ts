/**
 * Hard-NAT attempts carried out. hard-nat.ts plans what to send and when; this
 * module, run by the disco core from a peer's timers, turns a peer's plan into
 * probes and openers (disco pings, ping-pong.ts) and keeps the extra sockets
 * the hard side opens: which peer each is for, which still carry a live path,
 * and when to give them back. docs/disco.md, "Hard NATs".
 */
import type { RandomBytes } from '../../shared/clock.js';
import { isLoopbackIp, isPrivateIp, parseEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import type { NatType } from '../../shared/wire/control.js';
import type { DiscoAction, DiscoCounters } from './events.js';
import {
  BIRTHDAY_SOCKETS, HARD_NAT_BACKOFF_BASE_MS, HARD_NAT_MAX_OPEN_SOCKETS, hardNatRole, predictPorts, probeTarget, resetHardNat, startAttempt, stopSending, takeSlice,
} from './hard-nat.js';
import type { Peer } from './peer.js';
import { PATH_DEAD_MS, startBurst } from './peer-path.js';
import type { PingPong } from './ping-pong.js';

export interface HardNatRunnerOptions {
  /** The shell can open extra UDP sockets (the hard side of birthday probing). */
  canOpenSockets?: boolean;
  random: RandomBytes;
  counters: DiscoCounters;
  pings: PingPong;
  /** Our own endpoints and NAT type as last reported: the plan depends on both sides. */
  selfEndpoints: () => string[];
  selfNatType: () => NatType;
  /** Whether the core's punching policy has this peer punched now (in a big mesh, only while wanted). */
  active: (p: Peer, now: number) => boolean;
}

export class HardNatRunner {
  /** Hard-NAT extra sockets: id → the peer it was opened for. */
  private readonly socketOwner = new Map<number, string>();
  private nextSocketId = 1;

  constructor(private readonly o: HardNatRunnerOptions) {}

  /** The node key of the peer an extra socket was opened for (undefined: no such socket). */
  ownerOf(socketId: number): string | undefined {
    return this.socketOwner.get(socketId);
  }

  /**
   * The hard-NAT side of a peer's timers: send the probes or openers the pacing allows, give back
   * an attempt's sockets when its hold ends (except one carrying the path), and start the next
   * attempt when it is due and the peer still has no path. See hard-nat.ts for the plan.
   */
  run(p: Peer, now: number, out: DiscoAction[]): void {
    const s = p.hardNat;
    const a = s.current;
    if (a) {
      if (p.path.best) stopSending(a); // found: the rest of the budget is saved
      for (let n = takeSlice(a, now); n > 0; n--, a.sent++) {
        if (a.role === 'easy') {
          this.o.pings.probe(p, probeTarget(a, a.sent), undefined, now, out);
          this.o.counters.hardNatProbes++;
        } else {
          const id = this.nextSocketId++;
          this.socketOwner.set(id, p.input.nodeKey);
          this.o.counters.hardNatSockets++;
          a.socketIds.push(id);
          this.o.pings.probe(p, a.target!, id, now, out);
          this.o.counters.hardNatOpeners++;
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
    const role = hardNatRole(this.o.selfNatType(), p.input.natType);
    if (!role || !p.discoPub || !this.o.active(p, now)) return resetHardNat(s);
    if (s.current) {
      s.nextAttemptAt = s.current.releaseAt; // one attempt at a time per peer
      return;
    }
    if (role === 'hard' && this.o.canOpenSockets && this.socketOwner.size + BIRTHDAY_SOCKETS > HARD_NAT_MAX_OPEN_SOCKETS) {
      s.nextAttemptAt = now + HARD_NAT_BACKOFF_BASE_MS / 4; // other peers' attempts hold the sockets: wait, this one isn't counted
      return;
    }
    const prediction = predictPorts(role === 'hard' ? this.o.selfEndpoints() : p.input.endpoints);
    const peerEndpoint = role === 'hard' ? publicEndpointOf(p) : undefined;
    if (!prediction || (role === 'hard' && !peerEndpoint)) return resetHardNat(s);
    startAttempt(s, { role, prediction, peerEndpoint, canOpenSockets: this.o.canOpenSockets === true, random: this.o.random }, now);
    this.o.counters.hardNatAttempts++;
    // The hard side pings the peer from the tunnel port too: that mapping is what a prediction aims at.
    if (role === 'hard') startBurst(p.path, now);
    this.run(p, now, out); // the first slice goes now
  }

  /** Closes every extra socket opened for a peer that has left the map. */
  releaseAll(p: Peer, out: DiscoAction[]): void {
    this.releaseSockets(p, [...this.socketOwner].filter(([, k]) => k === p.input.nodeKey).map(([id]) => id), out);
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
    this.o.counters.hardNatSockets -= mine.length;
    const gone = new Set(mine);
    for (const c of [...p.path.candidates.values()]) if (c.via !== undefined && gone.has(c.via) && c.key !== p.path.best?.key) p.path.candidates.delete(c.key);
    out.push({ type: 'release-sockets', ids: mine });
  }
}

/** A peer's public endpoint (the first one that isn't private or loopback), where the hard side's openers go. */
function publicEndpointOf(p: Peer): UdpEndpoint | undefined {
  for (const text of p.input.endpoints) {
    const ep = parseEndpoint(text);
    if (ep && !isPrivateIp(ep.address) && !isLoopbackIp(ep.address)) return ep;
  }
  return undefined;
}
