/**
 * The agent's control-channel client: connects to the coordinator, proves it
 * holds the node key, checks that the server holds the pinned coordinator key,
 * keeps the peer map current from snapshots and deltas, and reconnects with
 * jittered exponential backoff, resuming from the last version it holds.
 *
 * Transport-independent: production passes a WebSocket transport
 * (ws-transport.ts), the simulator an in-process one. Time comes from the
 * Clock, randomness from `random`, so the same client runs in sim/.
 */
import type { Clock, RandomBytes } from '../../shared/clock.js';
import type { Logger } from '../../shared/log.js';
import {
  CONTROL_PROTOCOL_VERSION, NONCE_BYTES, controlAuthKey, decodeServerMessage, helloProof, proofsEqual, welcomeProof,
  type NatType, type PathReport, type ServerMessage, type WelcomeMsg,
} from '../../shared/wire/control.js';
import { applyDelta, applySnapshot, emptyNetmap, type Netmap } from './netmap.js';

export interface ControlConnection {
  send(text: string): void;
  close(code?: number, reason?: string): void;
}

export interface ControlTransportHandlers {
  onOpen(): void;
  onMessage(text: string): void;
  onClose(code: number, reason: string): void;
}

export interface ControlTransport {
  open(url: string, handlers: ControlTransportHandlers): ControlConnection;
}

export type ControlStatus = 'connecting' | 'connected' | 'disconnected' | 'removed' | 'stopped';

export interface ControlClientEvents {
  onNetmap(map: Netmap): void;
  onCallMeMaybe(fromNodeKey: string, endpoints: string[]): void;
  onWelcome(welcome: WelcomeMsg): void;
  onStatus(status: ControlStatus, detail?: string): void;
}

export interface ControlClientOptions {
  url: string; // coordinator base URL (http[s]://…); the client derives the ws URL
  coordinatorKey: string; // pinned, from the join token
  nodePrivateKey: Uint8Array;
  nodeKey: string;
  discoKey: string;
  initialMap?: Netmap; // resume point (e.g. the cached map from the state dir)
}

/** Reconnect backoff: full jitter between 0 and min(cap, base·2^attempt). */
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_CAP_MS = 15_000;
/** A server that accepts the socket but never finishes the handshake is given this long. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A call-me-maybe held while disconnected is still worth sending this long after it was asked for. */
export const CALL_ME_MAYBE_HOLD_MS = 5_000;

export function backoffDelayMs(attempt: number, random01: number): number {
  const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 20));
  return Math.max(100, Math.floor(ceiling * random01));
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

export function controlUrl(base: string): string {
  return base.replace(/^http/, 'ws').replace(/\/$/, '') + '/v1/control';
}

export class ControlClient {
  private map: Netmap;
  private conn: ControlConnection | undefined;
  private phase: 'idle' | 'await-challenge' | 'await-welcome' | 'ready' = 'idle';
  private serverNonce = '';
  private clientNonce = '';
  private attempt = 0;
  private timer: ReturnType<Clock['setTimeout']> | undefined;
  private stopped = true;
  private lastEndpoints: { endpoints: string[]; natType: NatType } | undefined;
  private status: ControlStatus = 'disconnected';
  private readonly authKey: Uint8Array;
  private readonly heldCallMeMaybe = new Map<string, { endpoints: string[]; at: number }>();

  constructor(
    private readonly options: ControlClientOptions,
    private readonly deps: { transport: ControlTransport; clock: Clock; random: RandomBytes; logger: Logger; events: ControlClientEvents },
  ) {
    const k = controlAuthKey(options.nodePrivateKey, options.coordinatorKey);
    if (!k) throw new RangeError('pinned coordinator key is not a usable X25519 key');
    this.authKey = k;
    this.map = options.initialMap ?? emptyNetmap();
  }

  get netmap(): Netmap { return this.map; }
  get connectionStatus(): ControlStatus { return this.status; }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimer();
    this.conn?.close(1000, 'agent stopping');
    this.conn = undefined;
    this.setStatus('stopped');
  }

  /**
   * Drops the connection and reconnects at once: after a roam the old TCP connection is
   * usually dead without knowing it (no RST ever comes from an address we no longer have).
   */
  reconnectNow(): void {
    if (this.stopped) return;
    const c = this.conn;
    this.conn = undefined;
    c?.close(1000, 'network changed');
    this.phase = 'idle';
    this.clearTimer();
    this.attempt = 0;
    this.connect();
  }

  /** Reports our endpoint candidates; remembered and re-sent after every reconnect. */
  reportEndpoints(endpoints: string[], natType: NatType): void {
    this.lastEndpoints = { endpoints, natType };
    if (this.phase === 'ready') this.conn?.send(JSON.stringify({ type: 'endpoints', endpoints, natType }));
  }

  /** Reports our sampled paths (soft state for the console): dropped while not connected, the next sample follows. */
  reportPaths(paths: PathReport[]): void {
    if (this.phase === 'ready') this.conn?.send(JSON.stringify({ type: 'paths', paths }));
  }

  /**
   * Asks a peer (by node key) to ping us back. While (re)connecting — typically right after a
   * roam, exactly when it matters — the latest request per peer is kept and sent after the
   * welcome, unless it is older than CALL_ME_MAYBE_HOLD_MS by then.
   */
  callMeMaybe(toNodeKey: string, endpoints: string[]): void {
    if (this.phase === 'ready') {
      this.conn?.send(JSON.stringify({ type: 'call-me-maybe', to: toNodeKey, endpoints }));
      return;
    }
    this.heldCallMeMaybe.set(toNodeKey, { endpoints, at: this.deps.clock.now() });
  }

  private flushHeldCallMeMaybe(): void {
    const now = this.deps.clock.now();
    for (const [to, held] of this.heldCallMeMaybe) {
      if (now - held.at <= CALL_ME_MAYBE_HOLD_MS) this.conn?.send(JSON.stringify({ type: 'call-me-maybe', to, endpoints: held.endpoints }));
    }
    this.heldCallMeMaybe.clear();
  }

  private setStatus(s: ControlStatus, detail?: string): void {
    if (s === this.status && detail === undefined) return;
    this.status = s;
    this.deps.events.onStatus(s, detail);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private connect(): void {
    if (this.stopped) return;
    this.phase = 'await-challenge';
    this.setStatus('connecting');
    this.clearTimer();
    this.timer = this.deps.clock.setTimeout(() => this.fail('handshake timed out'), HANDSHAKE_TIMEOUT_MS);
    const conn = this.deps.transport.open(controlUrl(this.options.url), {
      onOpen: () => {},
      onMessage: (text) => { if (this.conn === conn) this.receive(text); },
      onClose: (code, reason) => { if (this.conn === conn) this.closed(code, reason); },
    });
    this.conn = conn;
  }

  private fail(why: string, code = 4400): void {
    this.deps.logger.warn('control connection failed', { why });
    const c = this.conn;
    this.conn = undefined;
    c?.close(code, why.slice(0, 100));
    this.closed(code, why);
  }

  private closed(code: number, reason: string): void {
    this.conn = undefined;
    this.phase = 'idle';
    this.clearTimer();
    if (this.stopped) return;
    if (code === 4404) {
      // The coordinator no longer knows this node (removed by an admin): retrying can't help.
      this.stopped = true;
      this.setStatus('removed', reason || 'this node was removed from the mesh');
      return;
    }
    this.setStatus('disconnected', reason || `closed (${code})`);
    const r = this.deps.random(2);
    const delay = backoffDelayMs(this.attempt++, ((r[0]! << 8) | r[1]!) / 65536);
    this.timer = this.deps.clock.setTimeout(() => this.connect(), delay);
  }

  private receive(text: string): void {
    const d = decodeServerMessage(text);
    if (!d.ok) return this.fail(`malformed message from coordinator: ${d.error}`);
    this.handle(d.value);
  }

  private handle(m: ServerMessage): void {
    switch (m.type) {
      case 'challenge': {
        if (this.phase !== 'await-challenge') return this.fail('unexpected challenge');
        if (m.coordinatorKey !== this.options.coordinatorKey) {
          return this.fail('the coordinator does not hold the key pinned in the join token', 4403);
        }
        this.serverNonce = m.serverNonce;
        this.clientNonce = b64(this.deps.random(NONCE_BYTES));
        this.phase = 'await-welcome';
        this.conn?.send(JSON.stringify({
          type: 'hello', v: CONTROL_PROTOCOL_VERSION, nodeKey: this.options.nodeKey, discoKey: this.options.discoKey,
          clientNonce: this.clientNonce,
          proof: helloProof(this.authKey, this.serverNonce, this.clientNonce, this.options.nodeKey, this.options.discoKey),
          lastVersion: this.map.version,
        }));
        return;
      }
      case 'welcome': {
        if (this.phase !== 'await-welcome') return this.fail('unexpected welcome');
        if (!proofsEqual(m.serverProof, welcomeProof(this.authKey, this.clientNonce, this.serverNonce))) {
          return this.fail('the coordinator failed to prove the pinned key', 4403);
        }
        this.phase = 'ready';
        this.attempt = 0;
        this.clearTimer();
        if (this.map.selfId !== m.node.id) this.map = { ...emptyNetmap(m.node.id), version: 0 };
        this.setStatus('connected');
        this.deps.events.onWelcome(m);
        if (this.lastEndpoints) this.reportEndpoints(this.lastEndpoints.endpoints, this.lastEndpoints.natType);
        this.flushHeldCallMeMaybe();
        return;
      }
      case 'snapshot':
        if (this.phase !== 'ready') return this.fail('peer map before authentication');
        this.map = applySnapshot(this.map, m);
        this.deps.events.onNetmap(this.map);
        return;
      case 'delta': {
        if (this.phase !== 'ready') return this.fail('peer map before authentication');
        const next = applyDelta(this.map, m);
        // A gap means we missed something: reconnect and resume from what we hold.
        if (!next) return this.fail(`delta from version ${m.from} does not follow ${this.map.version}`, 4000);
        this.map = next;
        this.deps.events.onNetmap(this.map);
        return;
      }
      case 'call-me-maybe':
        if (this.phase === 'ready') this.deps.events.onCallMeMaybe(m.from, m.endpoints);
        return;
      case 'error':
        this.deps.logger.warn('coordinator reported an error', { code: m.code, message: m.message });
        return;
    }
  }
}
