/**
 * The agent's side of the relay, sans-I/O: for every peer that has no direct
 * path (and is wanted), ask the relay for a port (alloc), tie it to the tunnel
 * port's NAT mapping (bind, sent from the tunnel port to that very port) and
 * keep it bound; hand the bound relay address to the engine as the peer's
 * endpoint while disco has nothing better. The shell (agent/agent.ts) feeds
 * events with `now` and performs the actions; one timer at `nextWakeup()`.
 *
 *   need ──alloc──► (retry .3, .7, 1.5, 3 s, then every 10 s) ──alloc-ok──► binding
 *   binding ──bind──► (same retries) ──bind-ok──► bound: `relay-endpoint` to the shell
 *   bound ──every REBIND_MS──► bind again (keeps the NAT mapping and the relay's binding fresh)
 *   bound ──3 refreshes unanswered──► lost: `relay-endpoint` undefined, start over
 *   not needed for KEEP_MS (a direct path held) ──► forgotten (the relay expires it too)
 *
 * What the engine gets is decided by `choosePath`: a confirmed lan/direct path
 * first, the bound relay otherwise. Only answers sealed by the relay's key, for
 * an outstanding request, are believed; a bind-ok must come from the port bound.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { openRelay, RELAY_TXID_LEN, relaySender, relaySharedKey, sealRelay, type RelayMessage } from '../../shared/wire/relay.js';
import type { PathKind } from '../status.js';

/** Retransmits of an unanswered alloc or bind, as offsets from the first try. */
export const RELAY_RETRY_MS = [300, 700, 1500, 3000];
/** After the retries, try again this often. */
export const RELAY_SLOW_RETRY_MS = 10_000;
/** A bound allocation is re-bound this often (the relay forgets a binding after 60 s). */
export const RELAY_REBIND_MS = 10_000;
/** Refreshes in a row without an answer before the relay path counts as lost. */
export const RELAY_LOST_AFTER = 3;
/** An allocation not needed for this long (a direct path held) is let go. */
export const RELAY_KEEP_MS = 120_000;
/**
 * While any peer is relayed, STUN is re-run this often: a NAT that became
 * friendlier (or a firewall that opened) shows as new endpoints, which makes both
 * sides punch at once — that is how a relayed pair upgrades within seconds.
 */
export const RELAYED_REPROBE_MS = 3000;

export interface RelayTarget {
  /** The relay's X25519 public key (base64). */
  key: string;
  /** Its UDP control endpoint. */
  endpoint: UdpEndpoint;
  /** Its WebSocket fallback URL, if any. */
  ws?: string;
}

export type RelayClientEvent =
  | { type: 'relays'; relays: RelayTarget[] }
  /** The peers in the map, and whether each needs the relay now (no direct path, online, wanted). */
  | { type: 'need'; nodeKey: string; needed: boolean }
  | { type: 'peers'; nodeKeys: string[] }
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'network-changed' }
  | { type: 'tick' };

export type RelayClientAction =
  | { type: 'send-udp'; to: UdpEndpoint; bytes: Uint8Array }
  /** The relay endpoint for a peer ("ip:port") now, or undefined when it is lost. */
  | { type: 'relay-endpoint'; nodeKey: string; endpoint?: string }
  /** Run a STUN round now (some peer is relayed: look for a way to go direct). */
  | { type: 'reprobe' }
  /** UDP to the relay gets no answer at all: the WebSocket fallback is worth opening. */
  | { type: 'udp-unanswered' };

export interface RelayClientCounters {
  allocsSent: number;
  bindsSent: number;
  bound: number;
  lost: number;
  errors: number;
  dropMalformed: number;
  dropUnexpected: number;
}

interface Alloc {
  nodeKey: string;
  peer: Uint8Array;
  state: 'allocating' | 'binding' | 'bound';
  port?: number;
  txid?: string;
  firstTryAt: number;
  tries: number;
  nextAt: number;
  unanswered: number;
  boundAt: number;
  needed: boolean;
  lastNeededAt: number;
}

export interface RelayClientOptions {
  nodePublicKey: Uint8Array;
  nodePrivateKey: Uint8Array;
  random: RandomBytes;
}

/** What the engine is given for a peer: a confirmed lan/direct path first, the bound relay otherwise. */
export function choosePath(disco: { kind: PathKind; endpoint?: string }, relayEndpoint: string | undefined): { kind: PathKind; endpoint?: string } {
  if (disco.kind === 'lan' || disco.kind === 'direct') return disco;
  if (relayEndpoint !== undefined) return { kind: 'relay', endpoint: relayEndpoint };
  return { kind: 'none' };
}

export class RelayClient {
  readonly counters: RelayClientCounters = { allocsSent: 0, bindsSent: 0, bound: 0, lost: 0, errors: 0, dropMalformed: 0, dropUnexpected: 0 };
  private relay?: RelayTarget & { keyBytes: Uint8Array; box: Uint8Array };
  private readonly allocs = new Map<string, Alloc>();
  private readonly byTxid = new Map<string, Alloc>();
  private lastCounter = 0;
  private nextReprobeAt?: number;
  private everAnswered = false;
  private unansweredSignalled = false;

  constructor(private readonly o: RelayClientOptions) {}

  /** The relay endpoint bound for a peer now, if any. */
  endpointFor(nodeKey: string): string | undefined {
    const a = this.allocs.get(nodeKey);
    return a?.state === 'bound' && this.relay ? formatEndpoint({ address: this.relay.endpoint.address, port: a.port! }) : undefined;
  }

  /** Whether `endpoint` ("ip:port") is one of our relay ports (WireGuard roams to those; they are no direct path). */
  isRelayEndpoint(endpoint: string | undefined): boolean {
    return endpoint !== undefined && this.relay !== undefined && endpoint.startsWith(this.relay.endpoint.address + ':') && [...this.allocs.values()].some((a) => a.port !== undefined && endpoint === formatEndpoint({ address: this.relay!.endpoint.address, port: a.port }));
  }

  get target(): RelayTarget | undefined {
    return this.relay;
  }

  handle(e: RelayClientEvent, now: number): RelayClientAction[] {
    const out: RelayClientAction[] = [];
    switch (e.type) {
      case 'relays': this.configure(e.relays[0], now, out); break;
      case 'need': this.need(e.nodeKey, e.needed, now, out); break;
      case 'peers': {
        const keep = new Set(e.nodeKeys);
        for (const [k, a] of this.allocs) if (!keep.has(k)) this.drop(a, out);
        break;
      }
      case 'udp': this.receive(e.from, e.bytes, now, out); break;
      case 'network-changed':
        // A new NAT mapping: re-bind everything at once (the relay moves the address on a newer bind).
        for (const a of this.allocs.values()) this.retryNow(a, now, out);
        break;
      case 'tick': break;
    }
    this.timers(now, out);
    return out;
  }

  nextWakeup(): number | undefined {
    let t = this.nextReprobeAt;
    for (const a of this.allocs.values()) if (t === undefined || a.nextAt < t) t = a.nextAt;
    return t;
  }

  private configure(r: RelayTarget | undefined, now: number, out: RelayClientAction[]): void {
    const keyBytes = r && decodeKey(r.key);
    const box = keyBytes && relaySharedKey(this.o.nodePrivateKey, keyBytes);
    const same = r && this.relay && this.relay.key === r.key && formatEndpoint(this.relay.endpoint) === formatEndpoint(r.endpoint);
    if (same) return;
    // A different relay: every allocation starts over there.
    for (const a of [...this.allocs.values()]) this.drop(a, out);
    this.relay = r && keyBytes && box ? { ...r, keyBytes, box } : undefined;
    this.everAnswered = false;
    this.unansweredSignalled = false;
    void now;
  }

  private need(nodeKey: string, needed: boolean, now: number, out: RelayClientAction[]): void {
    let a = this.allocs.get(nodeKey);
    if (needed) {
      if (!a) {
        const peer = decodeKey(nodeKey);
        if (!peer || !this.relay) return;
        a = { nodeKey, peer, state: 'allocating', firstTryAt: now, tries: 0, nextAt: now, unanswered: 0, boundAt: -Infinity, needed: true, lastNeededAt: now };
        this.allocs.set(nodeKey, a);
        this.send(a, now, out);
        return;
      }
      a.needed = true;
      a.lastNeededAt = now;
      return;
    }
    if (a && a.needed) {
      a.needed = false;
      a.lastNeededAt = now;
    }
  }

  private drop(a: Alloc, out: RelayClientAction[]): void {
    this.allocs.delete(a.nodeKey);
    if (a.txid) this.byTxid.delete(a.txid);
    if (a.state === 'bound') out.push({ type: 'relay-endpoint', nodeKey: a.nodeKey });
  }

  private retryNow(a: Alloc, now: number, out: RelayClientAction[]): void {
    a.firstTryAt = now;
    a.tries = 0;
    this.send(a, now, out);
  }

  /** Sends the alloc or bind this allocation is waiting on, and schedules the retry. */
  private send(a: Alloc, now: number, out: RelayClientAction[]): void {
    const r = this.relay;
    if (!r) return;
    if (a.txid) this.byTxid.delete(a.txid);
    const txid = this.o.random(RELAY_TXID_LEN);
    a.txid = Buffer.from(txid).toString('hex');
    this.byTxid.set(a.txid, a);
    let m: RelayMessage;
    let to: UdpEndpoint;
    if (a.state === 'allocating') {
      m = { type: 'alloc', txid, peer: a.peer };
      to = r.endpoint;
      this.counters.allocsSent++;
    } else {
      // The counter must grow across binds (the relay refuses an old one): our clock, made strictly increasing.
      this.lastCounter = Math.max(this.lastCounter + 1, Math.floor(now));
      m = { type: 'bind', txid, port: a.port!, counter: this.lastCounter };
      to = { address: r.endpoint.address, port: a.port! };
      this.counters.bindsSent++;
    }
    out.push({ type: 'send-udp', to, bytes: sealRelay(m, this.o.nodePublicKey, r.box, this.o.random(24)) });
    const offset = a.tries < RELAY_RETRY_MS.length ? RELAY_RETRY_MS[a.tries]! : undefined;
    a.tries++;
    a.nextAt = offset !== undefined ? a.firstTryAt + offset : now + RELAY_SLOW_RETRY_MS;
    if (a.state === 'bound') a.nextAt = Math.max(a.nextAt, now + 1);
  }

  private timers(now: number, out: RelayClientAction[]): void {
    for (const a of [...this.allocs.values()]) {
      if (!a.needed && now - a.lastNeededAt >= RELAY_KEEP_MS) {
        this.drop(a, out);
        continue;
      }
      if (now < a.nextAt) continue;
      if (a.state === 'bound') {
        // A refresh is due, or the last one went unanswered.
        if (a.txid && this.byTxid.has(a.txid) && a.tries > 0) a.unanswered++;
        if (a.unanswered >= RELAY_LOST_AFTER) {
          this.counters.lost++;
          a.state = 'allocating';
          a.port = undefined;
          a.unanswered = 0;
          out.push({ type: 'relay-endpoint', nodeKey: a.nodeKey });
          this.retryNow(a, now, out);
          continue;
        }
        this.send(a, now, out);
        a.nextAt = now + (a.unanswered > 0 ? RELAY_RETRY_MS[0]! * 3 : RELAY_REBIND_MS);
        continue;
      }
      if (!this.everAnswered && !this.unansweredSignalled && a.tries >= RELAY_RETRY_MS.length) {
        this.unansweredSignalled = true;
        out.push({ type: 'udp-unanswered' });
      }
      this.send(a, now, out);
    }
    const relayed = [...this.allocs.values()].some((a) => a.state === 'bound' && a.needed);
    if (!relayed) this.nextReprobeAt = undefined;
    else if (this.nextReprobeAt === undefined) this.nextReprobeAt = now + RELAYED_REPROBE_MS;
    else if (now >= this.nextReprobeAt) {
      this.nextReprobeAt = now + RELAYED_REPROBE_MS;
      out.push({ type: 'reprobe' });
    }
  }

  private receive(from: UdpEndpoint, bytes: Uint8Array, now: number, out: RelayClientAction[]): void {
    const r = this.relay;
    const sender = relaySender(bytes);
    if (!r || !sender || Buffer.compare(Buffer.from(sender), Buffer.from(r.keyBytes)) !== 0 || from.address !== r.endpoint.address) {
      this.counters.dropUnexpected++;
      return;
    }
    const m = openRelay(bytes, r.box);
    if (!m || !('txid' in m)) {
      this.counters.dropMalformed++;
      return;
    }
    const tx = Buffer.from(m.txid).toString('hex');
    const a = this.byTxid.get(tx);
    if (!a) {
      this.counters.dropUnexpected++;
      return;
    }
    this.everAnswered = true;
    this.byTxid.delete(tx);
    if (m.type === 'error') {
      this.counters.errors++;
      // stale: our counter was behind (another run of us bound later); not-your-port: start over.
      if (m.code === 5) this.lastCounter = Math.max(this.lastCounter, Math.floor(now)) + 1000;
      if (m.code === 4 || m.code === 5) {
        if (m.code === 4) { a.state = 'allocating'; a.port = undefined; }
        this.retryNow(a, now, out);
      } else {
        a.nextAt = now + RELAY_SLOW_RETRY_MS; // not a member / no capacity: try again later
      }
      return;
    }
    if (m.type === 'alloc-ok' && a.state === 'allocating' && from.port === r.endpoint.port) {
      a.state = 'binding';
      a.port = m.port;
      this.retryNow(a, now, out);
      return;
    }
    if (m.type === 'bind-ok' && a.state !== 'allocating' && from.port === a.port) {
      a.unanswered = 0;
      a.boundAt = now;
      a.tries = 0;
      a.nextAt = now + RELAY_REBIND_MS;
      if (a.state !== 'bound') {
        a.state = 'bound';
        this.counters.bound++;
        out.push({ type: 'relay-endpoint', nodeKey: a.nodeKey, endpoint: formatEndpoint({ address: r.endpoint.address, port: a.port! }) });
      }
      return;
    }
    this.counters.dropUnexpected++;
  }
}
