/**
 * The disco-sealed ping and pong of the disco core, with the rules that make
 * them safe to send and to believe: pings to one destination are spaced; a
 * ping is answered only if it carries the peer's own node key, was never
 * answered before (replays get nothing) and its source is within its pong
 * budget; a pong counts only for an outstanding ping — same txid, same
 * address, in time. A padded ping (a path MTU probe, path-mtu.ts) gets a pong
 * padded to its own length. Which candidates to ping and what a pong means for the
 * path are the core's (core.ts) and peer-path.ts's; docs/disco.md, "Packet".
 */
import { BoundedMap } from '../../shared/bounded-map.js';
import { SourceBudget } from '../../shared/source-budget.js';
import type { RandomBytes } from '../../shared/clock.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { DISCO_TXID_LEN, discoPingPadding, discoPongPadding, discoSharedKey, sealDisco, type DiscoMessage } from '../../shared/wire/disco.js';
import type { DiscoAction, DiscoCounters } from './events.js';
import type { Peer } from './peer.js';
import { candidateKey, PING_TIMEOUT_MS, type Candidate } from './peer-path.js';

/** Minimum spacing of pings to one destination (all peers together). */
export const MIN_PING_INTERVAL_MS = 200;
/** Pongs answered per source address per second. Pongs are small, but a flood of replayed pings shouldn't be echoed. */
export const PONGS_PER_SOURCE_PER_S = 20;
/** Answered pings remembered against replays: minutes of pings from the peers we talk to. */
const SEEN_PINGS_MAX = 16_384;
/** Outstanding pings kept at most (the oldest is forgotten first). */
const MAX_OUTSTANDING = 8192;

/** A ping sent and not answered yet. */
export interface OutstandingPing {
  nodeKey: string;
  key: string;
  sentAt: number;
  /** A hard-NAT probe or opener: not a candidate yet; its pong makes one. */
  hardNat?: { ep: UdpEndpoint; via?: number };
  /** A path MTU probe: the path MTU it tests and its length on the wire, which its pong must match. */
  mtuProbe?: { pathBytes: number; wireBytes: number };
}

export interface PingPongOptions {
  /** Our node key, which every ping carries. */
  nodeKey: Uint8Array;
  discoPrivateKey: Uint8Array;
  discoPublicKey: Uint8Array;
  random: RandomBytes;
  counters: DiscoCounters;
}

export class PingPong {
  private readonly outstanding = new Map<string, OutstandingPing>(); // txid hex → ping
  // Bounded because packet sources are the attacker's to choose; grown as used (see BoundedMap).
  private readonly destLastPing = new BoundedMap<string, number>(4096);
  private readonly pongBudget = new SourceBudget(PONGS_PER_SOURCE_PER_S);
  /** Pings answered (peer|txid): a replay gets nothing. */
  private readonly seenPings = new BoundedMap<string, true>(SEEN_PINGS_MAX);

  constructor(private readonly o: PingPongOptions) {}

  /**
   * Pings a candidate, unless its destination was pinged less than MIN_PING_INTERVAL_MS ago and
   * the ping isn't `explicit` (asked for by a person). Returns whether the ping went.
   */
  ping(p: Peer, c: Candidate, now: number, out: DiscoAction[], explicit: boolean): boolean {
    const last = this.destLastPing.get(c.key);
    if (last !== undefined && now - last < MIN_PING_INTERVAL_MS && !explicit) {
      this.o.counters.dropRateLimited++;
      return false;
    }
    this.destLastPing.set(c.key, now);
    const txid = this.o.random(DISCO_TXID_LEN);
    this.expect(txid, { nodeKey: p.input.nodeKey, key: c.key, sentAt: now });
    c.lastPingAt = now;
    p.path.pingsSent++;
    this.o.counters.pingsSent++;
    out.push({ type: 'send-udp', to: c.ep, bytes: this.seal(p, { type: 'ping', txid, nodeKey: this.o.nodeKey }), ...(c.via !== undefined && { via: c.via }) });
    return true;
  }

  /** A hard-NAT probe (easy side, `via` undefined) or opener (hard side, from extra socket `via`): a ping with no candidate behind it. */
  probe(p: Peer, to: UdpEndpoint, via: number | undefined, now: number, out: DiscoAction[]): void {
    const txid = this.o.random(DISCO_TXID_LEN);
    this.expect(txid, { nodeKey: p.input.nodeKey, key: candidateKey(to, via), sentAt: now, hardNat: { ep: to, via } });
    out.push({ type: 'send-udp', to, bytes: this.seal(p, { type: 'ping', txid, nodeKey: this.o.nodeKey }), ...(via !== undefined && { via }) });
  }

  /**
   * A path MTU probe on candidate `c`: a ping padded to `wireBytes`. Not spaced like other pings
   * (a round is a handful of sizes at once) and not a heartbeat: its pong only proves the size.
   */
  probeMtu(p: Peer, c: Candidate, pathBytes: number, wireBytes: number, now: number, out: DiscoAction[]): void {
    const txid = this.o.random(DISCO_TXID_LEN);
    this.expect(txid, { nodeKey: p.input.nodeKey, key: c.key, sentAt: now, mtuProbe: { pathBytes, wireBytes } });
    this.o.counters.mtuProbesSent++;
    const bytes = this.seal(p, { type: 'ping', txid, nodeKey: this.o.nodeKey, padding: discoPingPadding(wireBytes) });
    out.push({ type: 'send-udp', to: c.ep, bytes, ...(c.via !== undefined && { via: c.via }) });
  }

  private expect(txid: Uint8Array, ping: OutstandingPing): void {
    this.outstanding.set(Buffer.from(txid).toString('hex'), ping);
    if (this.outstanding.size > MAX_OUTSTANDING) this.outstanding.delete(this.outstanding.keys().next().value!);
  }

  /** Forgets the pings whose pong would come too late to count. */
  expire(now: number): void {
    for (const [txid, o] of this.outstanding) {
      if (now - o.sentAt <= PING_TIMEOUT_MS) break; // insertion order = send order
      this.outstanding.delete(txid);
    }
  }

  /**
   * Answers a ping from a known peer, `pingBytes` long on the wire, arrived from `from` (on extra
   * socket `via`), with a pong — unless it is forged, replayed or over its source's budget
   * (counted). Returns whether it answered.
   */
  answerPing(p: Peer, m: Extract<DiscoMessage, { type: 'ping' }>, pingBytes: number, from: UdpEndpoint, via: number | undefined, now: number, out: DiscoAction[]): boolean {
    if (Buffer.from(m.nodeKey).toString('base64') !== p.input.nodeKey) {
      this.o.counters.dropBadNodeKey++;
      return false;
    }
    // Every genuine ping has a fresh txid: one seen before is a replay (someone on the path
    // resending a captured ping from spoofed sources to draw pongs and pings at them).
    const replayKey = `${p.input.nodeKey}|${Buffer.from(m.txid).toString('hex')}`;
    if (this.seenPings.has(replayKey)) {
      this.o.counters.dropReplay++;
      return false;
    }
    this.seenPings.set(replayKey, true);
    if (!this.pongBudget.allow(from.address, now)) {
      this.o.counters.dropRateLimited++;
      return false;
    }
    this.o.counters.pongsSent++;
    out.push({ type: 'send-udp', to: from, bytes: this.seal(p, { type: 'pong', txid: m.txid, src: from, padding: discoPongPadding(pingBytes) }), ...(via !== undefined && { via }) });
    return true;
  }


  /**
   * The outstanding ping a pong from a peer answers, arrived from candidate `fromKey`; taken off
   * the list, as a ping is answered once. Undefined (counted) when no ping of ours matches.
   */
  takePong(p: Peer, txid: Uint8Array, fromKey: string, now: number): OutstandingPing | undefined {
    const txHex = Buffer.from(txid).toString('hex');
    const o = this.outstanding.get(txHex);
    if (!o || o.nodeKey !== p.input.nodeKey || o.key !== fromKey || now - o.sentAt > PING_TIMEOUT_MS) {
      this.o.counters.dropUnexpectedPong++;
      return undefined;
    }
    this.outstanding.delete(txHex);
    this.o.counters.pongsAccepted++;
    return o;
  }

  /** The disco box key shared with a peer (undefined until its disco key is known), derived on first use. */
  boxKey(p: Peer): Uint8Array | undefined {
    if (!p.sharedKey && p.discoPub) p.sharedKey = discoSharedKey(this.o.discoPrivateKey, p.discoPub);
    return p.sharedKey;
  }

  private seal(p: Peer, m: DiscoMessage): Uint8Array {
    return sealDisco(m, this.o.discoPublicKey, this.boxKey(p)!, this.o.random(24));
  }
}
