/**
 * LAN discovery over mDNS / DNS-SD, as a sans-I/O core: events (interfaces,
 * peers, packets, ticks) in, actions (packets to multicast, LAN candidates
 * for the disco layer) out. The shell (lan/discovery.ts) owns the sockets and
 * the timer; the simulator runs this same core on its multicast segments.
 *
 * Behaviour (RFC 6762 where it applies):
 *   - announce: on start and whenever the interface set changes, two
 *     unsolicited responses one second apart (§8.3); goodbye (TTL 0) on stop.
 *   - browse: a PTR query at once, then after 1 s, 2 s, 4 s … up to a minute
 *     (§5.2), listing the instances we hold as known answers (§7.1).
 *   - answer: a query for our service, instance or host, on the interface it
 *     came from, after 20–120 ms (§6, shared records), at most once a second
 *     per interface, unless the querier listed our record as a known answer.
 *   - learn: an instance of our mesh whose fingerprint is a peer's gives a
 *     `lan` candidate (its on-link addresses at its SRV port). Anything else
 *     — other meshes, strangers, ourselves, malformed records, addresses off
 *     the link the packet came in on — is dropped and counted.
 * Instances of our mesh that are not (yet) peers are remembered, so a peer
 * that joins later is reachable at once.
 */
import type { Packet } from 'dns-packet';
import type { RandomBytes } from '../../shared/clock.js';
import { parseIpv4Prefix, prefixContains, type Ipv4Prefix } from '../../shared/net/cidr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import {
  browseQuery, fingerprint, knownAnswerSuppresses, ourRecords, parseResponse, queryWantsUs, type Announcement, type LanSelf,
} from './records.js';

export interface LanInterface {
  name: string;
  address: string;
  prefixLen: number;
}

export type LanEvent =
  | { type: 'start' }
  | { type: 'stop' }
  | { type: 'interfaces'; interfaces: LanInterface[] }
  | { type: 'peers'; nodeKeys: string[] }
  /** A packet from `from`; undefined when it didn't decode as DNS. */
  | { type: 'packet'; from: string; packet: Packet | undefined }
  | { type: 'tick' };

export type LanAction =
  | { type: 'send'; iface: LanInterface; packet: Packet }
  | { type: 'candidate'; nodeKey: string; endpoint: UdpEndpoint; discoKey: string };

export interface LanCounters {
  received: number;
  sent: number;
  answered: number;
  suppressed: number;
  malformed: number;
  wrongVersion: number;
  otherMesh: number;
  notPeer: number;
  offLink: number;
  goodbyes: number;
  candidates: number;
}

/** Query intervals: 1 s, doubling, capped (RFC 6762 §5.2). */
export const FIRST_QUERY_INTERVAL_MS = 1000;
export const MAX_QUERY_INTERVAL_MS = 60_000;
/** Spacing of the two announcements (§8.3) and the floor between multicast answers (§6). */
export const ANNOUNCE_INTERVAL_MS = 1000;
export const MIN_ANSWER_INTERVAL_MS = 1000;
/** Instances remembered (a LAN with more Knit nodes than this still works; the oldest is re-learned). */
export const MAX_INSTANCES = 512;
/** Known answers listed in one query: enough for a busy LAN, and the query stays within one packet. */
export const MAX_KNOWN_ANSWERS = 20;

interface Known {
  nodeKey?: string;
  announcement: Announcement;
  /** The interface it was heard on: its addresses are on-link there. */
  iface: LanInterface;
  receivedAt: number;
  expiresAt: number;
}

interface IfaceState {
  iface: LanInterface;
  prefix: Ipv4Prefix | undefined;
  answerAt?: number;
  lastAnswerAt: number;
}

export class LanCore {
  readonly counters: LanCounters = {
    received: 0, sent: 0, answered: 0, suppressed: 0, malformed: 0, wrongVersion: 0, otherMesh: 0, notPeer: 0, offLink: 0, goodbyes: 0, candidates: 0,
  };
  private readonly selfFp: string;
  private ifaces: IfaceState[] = [];
  private readonly peersByFp = new Map<string, string>(); // fingerprint → node key
  private fpByKey = new Map<string, string>(); // node key → fingerprint, for the peers we have
  private readonly known = new Map<string, Known>(); // instance → what we heard
  private running = false;
  private announceAt: number[] = [];
  private queryAt?: number;
  private queryInterval = FIRST_QUERY_INTERVAL_MS;

  constructor(private readonly self: LanSelf, private readonly random: RandomBytes) {
    this.selfFp = fingerprint(self.nodeKey);
  }

  handle(e: LanEvent, now: number): LanAction[] {
    const out: LanAction[] = [];
    switch (e.type) {
      case 'start':
        this.running = true;
        this.restartAnnounceAndBrowse(now);
        break;
      case 'stop':
        if (!this.running) break;
        this.running = false;
        for (const s of this.ifaces) this.send(s.iface, { type: 'response', ...ourRecords(this.self, s.iface.address, 0) }, out);
        this.announceAt = [];
        this.queryAt = undefined;
        break;
      case 'interfaces': this.setInterfaces(e.interfaces, now); break;
      case 'peers': this.setPeers(e.nodeKeys, now, out); break;
      case 'packet': this.packet(e.from, e.packet, now, out); break;
      case 'tick': break;
    }
    if (this.running) this.runTimers(now, out);
    return out;
  }

  /** When the core next wants a tick; undefined when it doesn't. */
  nextWakeup(): number | undefined {
    if (!this.running) return undefined;
    let at = Math.min(this.queryAt ?? Infinity, this.announceAt[0] ?? Infinity);
    for (const s of this.ifaces) if (s.answerAt !== undefined) at = Math.min(at, s.answerAt);
    return at === Infinity ? undefined : at;
  }

  get interfaces(): readonly LanInterface[] {
    return this.ifaces.map((s) => s.iface);
  }

  private restartAnnounceAndBrowse(now: number): void {
    this.announceAt = [now, now + ANNOUNCE_INTERVAL_MS];
    this.queryAt = now;
    this.queryInterval = FIRST_QUERY_INTERVAL_MS;
  }

  private setInterfaces(list: LanInterface[], now: number): void {
    const key = (l: readonly LanInterface[]) => l.map((i) => `${i.name}|${i.address}/${i.prefixLen}`).sort().join(',');
    if (key(list) === key(this.interfaces)) return;
    const before = new Map(this.ifaces.map((s) => [s.iface.address, s]));
    this.ifaces = list.map((iface) => before.get(iface.address) ?? { iface, prefix: parseIpv4Prefix(`${iface.address}/${Math.max(8, Math.min(30, iface.prefixLen))}`), lastAnswerAt: -Infinity });
    // What we heard on a link we left says nothing about where peers are now.
    for (const [name, k] of this.known) if (!list.some((i) => i.address === k.iface.address)) this.known.delete(name);
    if (this.running) this.restartAnnounceAndBrowse(now);
  }

  private setPeers(nodeKeys: string[], now: number, out: LanAction[]): void {
    const before = new Set(this.peersByFp.values());
    this.peersByFp.clear();
    const fps = new Map<string, string>();
    for (const k of nodeKeys) {
      const fp = this.fpByKey.get(k) ?? fingerprint(k); // a SHA-256 per peer, once: maps change often
      fps.set(k, fp);
      this.peersByFp.set(fp, k);
    }
    this.fpByKey = fps;
    // A node we heard announce before it was our peer: usable now.
    for (const k of this.known.values()) {
      const nodeKey = this.peersByFp.get(k.announcement.fingerprint);
      k.nodeKey = nodeKey;
      if (nodeKey && !before.has(nodeKey) && k.expiresAt > now) this.emitCandidates(k, nodeKey, out);
    }
  }

  private packet(from: string, packet: Packet | undefined, now: number, out: LanAction[]): void {
    this.counters.received++;
    if (!this.running) return;
    if (!packet) { this.counters.malformed++; return; }
    // mDNS is link-local: a packet's source must be on one of our chosen links.
    const s = this.ifaces.find((x) => x.prefix !== undefined && prefixContains(x.prefix, from));
    if (!s) { this.counters.offLink++; return; }
    if (packet.type === 'query') return this.query(s, packet, now);
    if (packet.type === 'response') this.response(s, from, packet, now, out);
  }

  private query(s: IfaceState, packet: Packet, now: number): void {
    if (!queryWantsUs(packet, this.self)) return;
    if (knownAnswerSuppresses(packet, this.self)) { this.counters.suppressed++; return; }
    if (s.answerAt !== undefined) return; // one answer is already on its way
    const jitter = 20 + (this.random(1)[0]! % 101);
    s.answerAt = Math.max(now + jitter, s.lastAnswerAt + MIN_ANSWER_INTERVAL_MS);
  }

  private response(s: IfaceState, from: string, packet: Packet, now: number, out: LanAction[]): void {
    const { announcements, rejected } = parseResponse(packet);
    for (const r of rejected) {
      if (r.reason === 'version') this.counters.wrongVersion++;
      else this.counters.malformed++;
    }
    for (const a of announcements) {
      if (a.fingerprint === this.selfFp) continue; // our own, looped back
      if (a.meshId !== this.self.meshId) { this.counters.otherMesh++; continue; }
      if (a.ttlS === 0) {
        this.counters.goodbyes++;
        this.known.delete(a.instance);
        continue;
      }
      // An announcement without A records for its host: the packet's source is its address.
      if (a.addresses.length === 0) a.addresses.push(from);
      const nodeKey = this.peersByFp.get(a.fingerprint);
      const k: Known = { nodeKey, announcement: a, iface: s.iface, receivedAt: now, expiresAt: now + a.ttlS * 1000 };
      this.known.delete(a.instance); // re-insert: the map's order is age, oldest first
      this.known.set(a.instance, k);
      if (this.known.size > MAX_INSTANCES) this.known.delete(this.known.keys().next().value!);
      if (!nodeKey) { this.counters.notPeer++; continue; }
      this.emitCandidates(k, nodeKey, out, s);
    }
  }

  /** The announcement's addresses that lie on the link it was heard on, at its SRV port. */
  private emitCandidates(k: Known, nodeKey: string, out: LanAction[], s = this.ifaces.find((x) => x.iface.address === k.iface.address)): void {
    if (!s?.prefix) return;
    const onLink = k.announcement.addresses.filter((a) => prefixContains(s.prefix!, a));
    if (onLink.length < k.announcement.addresses.length) this.counters.offLink++;
    for (const address of onLink) {
      this.counters.candidates++;
      out.push({ type: 'candidate', nodeKey, endpoint: { address, port: k.announcement.port }, discoKey: k.announcement.discoKey });
    }
  }

  private runTimers(now: number, out: LanAction[]): void {
    while (this.announceAt.length > 0 && this.announceAt[0]! <= now) {
      this.announceAt.shift();
      for (const s of this.ifaces) {
        this.send(s.iface, { type: 'response', ...ourRecords(this.self, s.iface.address) }, out);
        s.lastAnswerAt = now;
        s.answerAt = undefined; // the announcement answers any query waiting
      }
    }
    for (const s of this.ifaces) {
      if (s.answerAt === undefined || s.answerAt > now) continue;
      s.answerAt = undefined;
      s.lastAnswerAt = now;
      this.counters.answered++;
      this.send(s.iface, { type: 'response', ...ourRecords(this.self, s.iface.address) }, out);
    }
    if (this.queryAt !== undefined && this.queryAt <= now) {
      for (const [name, k] of this.known) if (k.expiresAt <= now) this.known.delete(name);
      for (const s of this.ifaces) {
        const held = [...this.known.values()].filter((k) => k.iface.address === s.iface.address);
        // Known answers: only those with more than half their TTL left (RFC 6762 §7.1).
        const fresh = held.filter((k) => (k.expiresAt - now) / 1000 > k.announcement.ttlS / 2).slice(-MAX_KNOWN_ANSWERS);
        this.send(s.iface, browseQuery(fresh.map((k) => ({ instance: k.announcement.instance, ttlS: Math.floor((k.expiresAt - now) / 1000) }))), out);
      }
      this.queryAt = now + this.queryInterval;
      this.queryInterval = Math.min(this.queryInterval * 2, MAX_QUERY_INTERVAL_MS);
    }
  }

  private send(iface: LanInterface, packet: Packet, out: LanAction[]): void {
    this.counters.sent++;
    out.push({ type: 'send', iface, packet });
  }
}

