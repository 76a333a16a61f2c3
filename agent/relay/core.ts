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
 * WebSocket fallback (docs/relay.md): UDP to the relay counts as failed when
 * requests go unanswered for RELAY_UDP_FAIL_MS (at least 3 of them, nothing
 * answered meanwhile). Then, if the relay announced a `ws` URL, the client asks
 * the shell to open it, answers the relay's challenge with a sealed ws-hello,
 * and once ws-ok arrives every allocation that has no working UDP binding is
 * reported at RELAY_WS_ENDPOINT (the shell bridges it through a loopback
 * stand-in) and claimed on the relay (`ws-claim`, so the relay sends the peer's
 * packets down this socket before we send any). The allocations keep retrying
 * over UDP on their slow schedule (every RELAY_SLOW_RETRY_MS): the first answer
 * moves them back to UDP one by one, and the WebSocket is closed when none is
 * left on it. A socket that closes or doesn't authenticate within
 * RELAY_WS_READY_MS is reopened after RELAY_WS_BACKOFF_MS (1 s doubling to 30 s,
 * reset once one authenticates).
 *
 * What the engine gets is decided by `choosePath`: a confirmed lan/direct path
 * first, the bound relay otherwise. Only answers sealed by the relay's key, for
 * an outstanding request, are believed; a bind-ok must come from the port bound.
 */
import type { RandomBytes } from '../../shared/clock.js';
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { openRelay, RELAY_TXID_LEN, RELAY_WS_CHALLENGE_LEN, relaySender, relaySharedKey, sealRelay, type RelayMessage } from '../../shared/wire/relay.js';
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
/** UDP to the relay counts as failed after requests went unanswered this long (the alloc retries' span)… */
export const RELAY_UDP_FAIL_MS = 3000;
/** …and at least this many of them. */
export const RELAY_UDP_FAIL_SENDS = 3;
/** A WebSocket must be authenticated (ws-ok) this soon after it was asked for, or it is closed and retried. */
export const RELAY_WS_READY_MS = 10_000;
/** Reconnect back-off for the WebSocket: the delay doubles from the first to the last, reset by a ws-ok. */
export const RELAY_WS_BACKOFF_MS = [1000, 2000, 4000, 8000, 16_000, 30_000];
/** What a peer's relay endpoint reads while it is carried over the WebSocket (the shell maps it to a loopback stand-in). */
export const RELAY_WS_ENDPOINT = 'relay-ws';

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
  | { type: 'tick' }
  /** The WebSocket asked for by `ws-connect` is open (the relay's challenge comes next). */
  | { type: 'ws-open' }
  /** A frame on the WebSocket before it is authenticated: the challenge, then ws-ok. */
  | { type: 'ws-frame'; bytes: Uint8Array }
  /** The WebSocket closed (or failed to open). */
  | { type: 'ws-closed' };

export type RelayClientAction =
  | { type: 'send-udp'; to: UdpEndpoint; bytes: Uint8Array }
  /** The relay endpoint for a peer ("ip:port") now, or undefined when it is lost. */
  | { type: 'relay-endpoint'; nodeKey: string; endpoint?: string }
  /** Run a STUN round now (some peer is relayed: look for a way to go direct). */
  | { type: 'reprobe' }
  /** The relay saw our bind come from this port: the NAT port our new flows get (wire/relay.ts). */
  | { type: 'observed-port'; port: number }
  /** UDP to the relay gets no answer: the WebSocket fallback follows (`ws-connect`) if the relay has one. */
  | { type: 'udp-unanswered' }
  /** Open a WebSocket to the relay (closing any other); report `ws-open`, frames, `ws-closed`. */
  | { type: 'ws-connect'; url: string }
  /** Send this frame on the WebSocket (the sealed ws-hello). */
  | { type: 'ws-send'; bytes: Uint8Array }
  /** The WebSocket is authenticated: from now on its frames are data (peer key | WireGuard packet). */
  | { type: 'ws-ready' }
  /** Close the WebSocket (no `ws-closed` needs to follow). */
  | { type: 'ws-close' }
  /** Tell the relay this peer's packets go down our WebSocket (a claim frame for the peer). */
  | { type: 'ws-claim'; nodeKey: string; peer: Uint8Array };

export interface RelayClientCounters {
  allocsSent: number;
  bindsSent: number;
  bound: number;
  lost: number;
  errors: number;
  dropMalformed: number;
  dropUnexpected: number;
  /** Times UDP to the relay was found failing, WebSockets asked for, and authenticated. */
  udpFailures: number;
  wsConnects: number;
  wsReady: number;
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
  /** The endpoint last reported to the shell for this peer. */
  reported?: string;
}

export interface RelayClientOptions {
  nodePublicKey: Uint8Array;
  nodePrivateKey: Uint8Array;
  random: RandomBytes;
}

export type RelayWsState = 'closed' | 'connecting' | 'authenticating' | 'ready';

/** What the engine is given for a peer: a confirmed lan/direct path first, the bound relay otherwise. */
export function choosePath(disco: { kind: PathKind; endpoint?: string }, relayEndpoint: string | undefined): { kind: PathKind; endpoint?: string } {
  if (disco.kind === 'lan' || disco.kind === 'direct') return disco;
  if (relayEndpoint !== undefined) return { kind: 'relay', endpoint: relayEndpoint };
  return { kind: 'none' };
}

export class RelayClient {
  readonly counters: RelayClientCounters = {
    allocsSent: 0, bindsSent: 0, bound: 0, lost: 0, errors: 0, dropMalformed: 0, dropUnexpected: 0, udpFailures: 0, wsConnects: 0, wsReady: 0,
  };
  private relay?: RelayTarget & { keyBytes: Uint8Array; box: Uint8Array };
  private readonly allocs = new Map<string, Alloc>();
  private readonly byTxid = new Map<string, Alloc>();
  private lastCounter = 0;
  private nextReprobeAt?: number;
  /** UDP health: the first request sent since the last answer, and how many went out since. */
  private udpPendingSince?: number;
  private udpUnansweredSends = 0;
  private udpFailed = false;
  private wsState: RelayWsState = 'closed';
  /** When the socket being opened must be ready by (connecting/authenticating), or when to reopen one (closed). */
  private wsDeadline?: number;
  private wsFailures = 0;

  constructor(private readonly o: RelayClientOptions) {}

  /** The relay endpoint for a peer now, if any: relay:port (UDP) or RELAY_WS_ENDPOINT. */
  endpointFor(nodeKey: string): string | undefined {
    const a = this.allocs.get(nodeKey);
    return a && this.endpointOf(a);
  }

  /** How relayed traffic travels now: over UDP, or over the WebSocket (which may still be opening). */
  get transport(): 'udp' | 'ws' {
    return this.udpFailed && this.relay?.ws !== undefined ? 'ws' : 'udp';
  }

  get webSocketState(): RelayWsState {
    return this.wsState;
  }

  private endpointOf(a: Alloc): string | undefined {
    if (!this.relay) return undefined;
    const ws = this.wsState === 'ready';
    // A UDP binding that is silent while UDP counts as failed is not trusted over a working WebSocket.
    if (a.state === 'bound' && !(ws && this.udpFailed)) return formatEndpoint({ address: this.relay.endpoint.address, port: a.port! });
    return ws ? RELAY_WS_ENDPOINT : undefined;
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
        // The WebSocket's TCP connection went through the old mapping too: open a new one at once.
        if (this.wsState !== 'closed') {
          this.wsClose(out);
          this.wsFailures = 0;
          this.wsDeadline = now;
        }
        break;
      case 'tick': break;
      case 'ws-open':
        if (this.wsState === 'connecting') this.wsState = 'authenticating';
        break;
      case 'ws-frame': this.wsFrame(e.bytes, now, out); break;
      case 'ws-closed':
        if (this.wsState !== 'closed') this.wsLost(now);
        break;
    }
    this.timers(now, out);
    this.webSocket(now, out);
    this.report(out);
    return out;
  }

  nextWakeup(): number | undefined {
    let t = this.nextReprobeAt;
    for (const a of this.allocs.values()) if (t === undefined || a.nextAt < t) t = a.nextAt;
    // (UDP failing is checked at the allocations' own wakeups: their retries are what goes unanswered.)
    if (this.wsDeadline !== undefined && (t === undefined || this.wsDeadline < t)) t = this.wsDeadline;
    return t;
  }

  /** Reports every allocation whose endpoint changed; a peer newly on the WebSocket is claimed there. */
  private report(out: RelayClientAction[]): void {
    for (const a of this.allocs.values()) {
      const ep = this.endpointOf(a);
      if (ep === a.reported) continue;
      a.reported = ep;
      if (ep === RELAY_WS_ENDPOINT) out.push({ type: 'ws-claim', nodeKey: a.nodeKey, peer: a.peer });
      out.push({ type: 'relay-endpoint', nodeKey: a.nodeKey, endpoint: ep });
    }
  }

  /** Whether a WebSocket is worth having: UDP failed, or some allocation still relies on the one open. */
  private wsWanted(): boolean {
    if (!this.relay?.ws || this.allocs.size === 0) return false;
    if (this.udpFailed) return true;
    return this.wsState !== 'closed' && [...this.allocs.values()].some((a) => a.state !== 'bound');
  }

  /** Opens, times out, reopens (with back-off) or closes the WebSocket as wanted. */
  private webSocket(now: number, out: RelayClientAction[]): void {
    const wanted = this.wsWanted();
    if (!wanted) {
      if (this.wsState !== 'closed') this.wsClose(out);
      this.wsDeadline = undefined;
      return;
    }
    if (this.wsState === 'closed') {
      if (this.wsDeadline !== undefined && now < this.wsDeadline) return;
      this.wsState = 'connecting';
      this.wsDeadline = now + RELAY_WS_READY_MS;
      this.counters.wsConnects++;
      out.push({ type: 'ws-connect', url: this.relay!.ws! });
      return;
    }
    if (this.wsState !== 'ready' && this.wsDeadline !== undefined && now >= this.wsDeadline) {
      out.push({ type: 'ws-close' });
      this.wsLost(now);
      this.webSocket(now, out); // (closed with a future deadline: returns at once)
    }
  }

  private wsClose(out: RelayClientAction[]): void {
    out.push({ type: 'ws-close' });
    this.wsState = 'closed';
  }

  /** The socket is gone: try again after the back-off. */
  private wsLost(now: number): void {
    this.wsState = 'closed';
    const delay = RELAY_WS_BACKOFF_MS[Math.min(this.wsFailures, RELAY_WS_BACKOFF_MS.length - 1)]!;
    this.wsFailures++;
    this.wsDeadline = now + delay;
  }

  private wsFrame(bytes: Uint8Array, now: number, out: RelayClientAction[]): void {
    const r = this.relay;
    if (!r) return;
    if (this.wsState === 'authenticating' && bytes.length === RELAY_WS_CHALLENGE_LEN) {
      // The relay's challenge: echo it in a hello sealed with our node key.
      out.push({ type: 'ws-send', bytes: sealRelay({ type: 'ws-hello', challenge: bytes.slice() }, this.o.nodePublicKey, r.box, this.o.random(24)) });
      return;
    }
    const sender = relaySender(bytes);
    const m = sender && Buffer.compare(Buffer.from(sender), Buffer.from(r.keyBytes)) === 0 ? openRelay(bytes, r.box) : undefined;
    if (this.wsState === 'authenticating' && m?.type === 'ws-ok') {
      this.wsState = 'ready';
      this.wsDeadline = undefined;
      this.wsFailures = 0;
      this.counters.wsReady++;
      out.push({ type: 'ws-ready' });
      void now;
      return;
    }
    this.counters.dropUnexpected++;
  }

  private configure(r: RelayTarget | undefined, now: number, out: RelayClientAction[]): void {
    const keyBytes = r && decodeKey(r.key);
    const box = keyBytes && relaySharedKey(this.o.nodePrivateKey, keyBytes);
    const same = r && this.relay && this.relay.key === r.key && formatEndpoint(this.relay.endpoint) === formatEndpoint(r.endpoint);
    if (same) return;
    // A different relay: every allocation starts over there.
    for (const a of [...this.allocs.values()]) this.drop(a, out);
    this.relay = r && keyBytes && box ? { ...r, keyBytes, box } : undefined;
    this.udpPendingSince = undefined;
    this.udpUnansweredSends = 0;
    this.udpFailed = false;
    if (this.wsState !== 'closed') this.wsClose(out);
    this.wsDeadline = undefined;
    this.wsFailures = 0;
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
    if (a.reported !== undefined) out.push({ type: 'relay-endpoint', nodeKey: a.nodeKey });
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
    this.udpPendingSince ??= now;
    this.udpUnansweredSends++;
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
          this.retryNow(a, now, out);
          continue;
        }
        this.send(a, now, out);
        a.nextAt = now + (a.unanswered > 0 ? RELAY_RETRY_MS[0]! * 3 : RELAY_REBIND_MS);
        continue;
      }
      this.send(a, now, out);
    }
    if (!this.udpFailed && this.udpPendingSince !== undefined && now - this.udpPendingSince >= RELAY_UDP_FAIL_MS && this.udpUnansweredSends >= RELAY_UDP_FAIL_SENDS) {
      this.udpFailed = true;
      this.counters.udpFailures++;
      out.push({ type: 'udp-unanswered' });
    }
    const relayed = [...this.allocs.values()].some((a) => a.needed && this.endpointOf(a) !== undefined);
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
    // An authenticated answer over UDP (even a late one, to a retried request): UDP works (again).
    // Allocations move back to it as they bind.
    this.udpPendingSince = undefined;
    this.udpUnansweredSends = 0;
    this.udpFailed = false;
    const tx = Buffer.from(m.txid).toString('hex');
    const a = this.byTxid.get(tx);
    if (!a) {
      this.counters.dropUnexpected++;
      return;
    }
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
      if (m.observedPort !== undefined) out.push({ type: 'observed-port', port: m.observedPort });
      a.unanswered = 0;
      a.boundAt = now;
      a.tries = 0;
      a.nextAt = now + RELAY_REBIND_MS;
      if (a.state !== 'bound') {
        a.state = 'bound';
        this.counters.bound++;
      }
      return;
    }
    this.counters.dropUnexpected++;
  }
}
