/**
 * Node-sealed disco-key announcements (docs/disco.md, "When the coordinator
 * can't tell peers a new disco key"): an agent that restarted while the
 * coordinator was away tells its peers its new disco key itself, sealed under
 * the two node keys so that only it could have sent it. This module seals ours
 * and opens theirs with the guards that make one safe to believe: a budget per
 * source address (opening the first costs an X25519) and epochs against
 * replays. Adopting a key — re-keying the peer, re-punching — is the core's.
 */
import { BoundedMap } from '../../shared/bounded-map.js';
import { SourceBudget } from '../../shared/source-budget.js';
import type { RandomBytes } from '../../shared/clock.js';
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { DISCO_MAGIC_NODE, discoNodeKey, openDisco, sealDisco } from '../../shared/wire/disco.js';
import type { DiscoAction, DiscoCounters } from './events.js';
import type { Peer } from './peer.js';

/** Node-sealed announcements we try to open, per source address per second (the first costs an X25519). */
export const UNKNOWN_SENDER_TRIES_PER_S = 5;

export interface DiscoKeyAnnouncerOptions {
  /** Our node key, the sender of node-sealed packets. */
  nodeKey: Uint8Array;
  /** Without it we can't seal or open announcements: peers learn our disco key from the coordinator only. */
  nodePrivateKey?: Uint8Array;
  discoPublicKey: Uint8Array;
  random: RandomBytes;
  counters: DiscoCounters;
}

export class DiscoKeyAnnouncer {
  /** Peer|destination pairs we announced our disco key to (once each per run). */
  private readonly announcedTo = new BoundedMap<string, true>(8192);
  // Bounded because packet sources are the attacker's to choose; grown as used (see BoundedMap).
  private readonly unknownBudget = new SourceBudget(UNKNOWN_SENDER_TRIES_PER_S);
  private keyEpoch: number | undefined;

  constructor(private readonly o: DiscoKeyAnnouncerOptions) {}

  /**
   * Our key's epoch: the clock at our first event. The clock is epoch-anchored (and virtual time
   * runs on across sim restarts), so a restarted agent's announcements carry a later epoch.
   */
  fixEpoch(now: number): void {
    this.keyEpoch ??= Math.max(0, Math.floor(now));
  }

  /** Our disco key, node-sealed for this peer: how a restarted agent is believed without the coordinator. */
  announce(p: Peer, to: UdpEndpoint, out: DiscoAction[]): void {
    const key = this.nodeBoxKey(p);
    if (!key) return;
    this.o.counters.discoKeysAnnounced++;
    out.push({ type: 'send-udp', to, bytes: sealDisco({ type: 'disco-key', discoKey: this.o.discoPublicKey, epoch: this.keyEpoch ?? 0 }, this.o.nodeKey, key, this.o.random(24), DISCO_MAGIC_NODE) });
  }

  /** Announces to this peer at this destination unless we already did in this run. */
  announceOnce(p: Peer, to: UdpEndpoint, out: DiscoAction[]): void {
    const key = `${p.input.nodeKey}|${formatEndpoint(to)}`;
    if (this.announcedTo.has(key)) return;
    this.announcedTo.set(key, true);
    this.announce(p, to, out);
  }

  /**
   * Opens a node-sealed packet from `p` (undefined: no peer of ours) and returns the disco key it
   * announces when that key is new to us. Anything else is counted and dropped; an unchanged key
   * gets nothing either, so that announcements never ping-pong.
   */
  newDiscoKey(p: Peer | undefined, bytes: Uint8Array, from: UdpEndpoint, now: number): Uint8Array | undefined {
    if (!p || !this.unknownBudget.allow(from.address, now)) {
      this.o.counters.dropUnknownSender++;
      return undefined;
    }
    const key = this.nodeBoxKey(p);
    const m = key && openDisco(bytes, key);
    if (!m || m.type !== 'disco-key') {
      this.o.counters.dropMalformed++;
      return undefined;
    }
    // A captured older announcement, replayed, would make us adopt a stale key: only newer epochs count.
    if (p.announcedEpoch !== undefined && m.epoch < p.announcedEpoch) {
      this.o.counters.dropReplay++;
      return undefined;
    }
    p.announcedEpoch = Math.max(p.announcedEpoch ?? 0, m.epoch);
    return Buffer.from(m.discoKey).toString('base64') === p.input.discoKey ? undefined : m.discoKey;
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
}
