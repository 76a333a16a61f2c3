/**
 * A light control-protocol client for the coordinator benchmark: everything
 * the coordinator sees from a real agent — a join with a real token, a real
 * WebSocket, the hello with proof of node-key possession, the check of the
 * coordinator's welcome proof, endpoint reports, resumes with `lastVersion` —
 * and as little as possible on the client side, so one load generator can
 * hold thousands of them.
 *
 * It is not the agent: it keeps the peer-map *version chain* (every delta must
 * start at the version held, or the client counts a gap), not the map. Peer
 * maps are frames of up to megabytes, and decoding 10,000 of them would
 * measure the load generator, not the coordinator. So a light client reads a
 * snapshot's or delta's version from the frame's head and decodes in full only
 * small frames and the deltas that carry a watched change; a `full` client
 * (one per load generator) decodes and validates every frame with the shared
 * decoder and keeps a real map with the agent's own reducer.
 */
import WebSocket from 'ws';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import type { ParsedToken } from '../../shared/token.js';
import {
  CONTROL_PROTOCOL_VERSION, MAX_SERVER_FRAME_BYTES, NONCE_BYTES, controlAuthKey, decodeServerMessage, helloProof, proofsEqual, welcomeProof,
  type NatType, type ServerMessage,
} from '../../shared/wire/control.js';
import { fetchJoinHttp, joinMesh, type JoinHttp } from '../../agent/control/join.js';
import { backoffDelayMs, controlUrl } from '../../agent/control/client.js';
import { applyDelta, applySnapshot, emptyNetmap, type Netmap } from '../../agent/control/netmap.js';

/** Milliseconds on CLOCK_MONOTONIC, which every process on the machine shares: timestamps compare across processes. */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Frames up to this size are decoded in full by every client (hello-sized and single-change deltas). */
const FULL_DECODE_MAX_BYTES = 4096;
/** How the coordinator encodes the head of a map frame (key order as in shared/wire/control.ts). */
const MAP_HEAD = /^\{"type":"(snapshot|delta)",(?:"version":(\d+)|"from":(\d+),"version":(\d+)),/;

/** A change the load generator is waiting for: an endpoint report of `id` containing `marker`. */
export interface Watch {
  id: number;
  marker: string;
  markerBytes: Buffer;
}

/** What every client of one load generator shares: the coordinator, the watch, and where results go. */
export interface LightClientContext {
  /** The coordinator every client uses unless it was given its own (a replica's) URL. */
  url: string; // http://127.0.0.1:PORT
  token: ParsedToken;
  rawToken: string;
  watch: Watch | undefined;
  /** A client received the delta carrying the watched change, at `at` (monoMs), in a frame of `bytes`. */
  onWatched(client: LightClient, at: number, bytes: number): void;
  /** A client holds a map (first snapshot or resume delta after a welcome). */
  onMapped(client: LightClient): void;
  /**
   * A protocol violation or socket error; `code` is a short kind (EMFILE, gap, malformed, closed …).
   * `retrying`: a transport failure the client answers as an agent would, reconnecting after a
   * jittered backoff (only while `retry` is on); otherwise the client has given up.
   */
  onProblem(client: LightClient, code: string, detail: string, retrying: boolean): void;
  /** Reconnect after transport failures (agent-style backoff), as during the connect and storm phases. */
  retry: boolean;
}

/** Failures that say something about the coordinator's protocol, never retried: they are bugs. */
const PROTOCOL_PROBLEMS = new Set(['gap', 'malformed', 'protocol', 'refused']);

export class LightClient {
  readonly nodeKey: string;
  readonly discoKey: string;
  id = -1;
  /** Peer-map version held, and when it was reached (monoMs). */
  version = 0;
  versionAt = 0;
  snapshotBytes = 0;
  /** The real map, kept only by a `full` client. */
  netmap: Netmap | undefined;
  phase: 'idle' | 'challenge' | 'welcome' | 'ready' | 'mapped' = 'idle';
  private readonly privateKey: Uint8Array;
  private authKey: Uint8Array | undefined;
  private ws: WebSocket | undefined;
  private serverNonce = '';
  private clientNonce = '';
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  /**
   * `url`: the coordinator this client joins at and connects to (default `ctx.url`); with
   * replicas, each client has its replica's, whatever URL the shared token names.
   */
  constructor(
    readonly ctx: LightClientContext, readonly hostname: string, readonly localAddress: string, readonly full: boolean,
    readonly url: string = ctx.url,
  ) {
    const kp = generateKeyPair();
    this.privateKey = kp.privateKey;
    this.nodeKey = encodeKey(kp.publicKey);
    // Nobody punches in this benchmark: any 32 bytes make a well-formed disco key, and joining
    // with it means a connect changes only `online` (a restarted real agent would also send `disco`).
    this.discoKey = encodeKey(defaultRandomBytes(32));
  }

  /** POST /v1/join with the token, at this client's coordinator; checks the coordinator's proof (the agent's own join code). */
  async join(): Promise<void> {
    const at: JoinHttp = (_url, body) => fetchJoinHttp(`${this.url}/v1/join`, body);
    const res = await joinMesh(this.ctx.token, this.ctx.rawToken, {
      privateKey: this.privateKey, publicKey: this.nodeKey, discoKey: this.discoKey, hostname: this.hostname,
    }, at);
    this.id = res.node.id;
    if (this.full) this.netmap = emptyNetmap(this.id);
  }

  /** Opens the control WebSocket; hello carries the version held (0 the first time: a snapshot). */
  connect(): void {
    this.authKey ??= controlAuthKey(this.privateKey, this.ctx.token.coordinatorKey);
    this.phase = 'challenge';
    const ws = new WebSocket(controlUrl(this.url), {
      perMessageDeflate: false, maxPayload: MAX_SERVER_FRAME_BYTES, handshakeTimeout: 30_000, localAddress: this.localAddress,
      skipUTF8Validation: !this.full, // light clients never read most bytes; the full client checks everything
    });
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary) => {
      if (this.ws !== ws) return;
      if (isBinary) return this.problem('malformed', 'binary frame');
      this.receive(data, monoMs()); // arrival time, before any decoding of ours
    });
    ws.on('error', (err: NodeJS.ErrnoException) => { if (this.ws === ws) this.problem(err.code ?? 'socket', err.message); });
    ws.on('close', (code, reason) => {
      if (this.ws === ws) this.problem('closed', `closed ${code} ${reason.toString()}`);
    });
  }

  /** Drops the socket and connects again at once, resuming from the version held. */
  reconnect(): void {
    this.close();
    this.connect();
  }

  reportEndpoints(endpoints: string[], natType: NatType): void {
    this.ws?.send(JSON.stringify({ type: 'endpoints', endpoints, natType }));
  }

  close(): void {
    const ws = this.ws;
    this.ws = undefined;
    ws?.terminate();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.phase = 'idle';
  }

  private problem(code: string, detail: string): void {
    const ws = this.ws;
    this.ws = undefined;
    ws?.terminate();
    this.phase = 'idle';
    const retrying = this.ctx.retry && !PROTOCOL_PROBLEMS.has(code);
    this.ctx.onProblem(this, code, detail, retrying);
    if (!retrying) return;
    // As the agent does: full jitter, 0.5 s doubling to 15 s.
    const r = defaultRandomBytes(2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.ctx.retry) this.connect();
    }, backoffDelayMs(this.attempt++, ((r[0]! << 8) | r[1]!) / 65536));
  }

  private receive(data: Buffer, at: number): void {
    if ((this.phase === 'ready' || this.phase === 'mapped') && !this.full && data.length > FULL_DECODE_MAX_BYTES) {
      const head = MAP_HEAD.exec(data.toString('latin1', 0, 96));
      if (head) return this.mapFrameHead(data, head, at);
    }
    const d = decodeServerMessage(data.toString());
    if (!d.ok) return this.problem('malformed', d.error);
    this.handle(d.value, data, at);
  }

  /** A big snapshot or delta, read by its head: only the version chain is checked. */
  private mapFrameHead(data: Buffer, head: RegExpExecArray, at: number): void {
    if (head[1] === 'snapshot') {
      this.snapshotBytes = data.length;
      return this.reached(Number(head[2]), at);
    }
    if (Number(head[3]) !== this.version) return this.problem('gap', `delta from ${head[3]} at version ${this.version}`);
    const w = this.ctx.watch;
    if (w && data.includes(w.markerBytes)) {
      // The delta carrying the watched change: decode it in full after all.
      const d = decodeServerMessage(data.toString());
      if (!d.ok) return this.problem('malformed', d.error);
      return this.handle(d.value, data, at);
    }
    this.reached(Number(head[4]), at);
  }

  private reached(version: number, at: number): void {
    this.version = version;
    this.versionAt = at;
    if (this.phase === 'ready') {
      this.phase = 'mapped';
      this.attempt = 0;
      this.ctx.onMapped(this);
    }
  }

  private handle(m: ServerMessage, data: Buffer, at: number): void {
    switch (m.type) {
      case 'challenge': {
        if (this.phase !== 'challenge') return this.problem('protocol', 'unexpected challenge');
        if (m.coordinatorKey !== this.ctx.token.coordinatorKey) return this.problem('protocol', 'coordinator key is not the pinned one');
        this.serverNonce = m.serverNonce;
        this.clientNonce = Buffer.from(defaultRandomBytes(NONCE_BYTES)).toString('base64');
        this.phase = 'welcome';
        this.ws?.send(JSON.stringify({
          type: 'hello', v: CONTROL_PROTOCOL_VERSION, nodeKey: this.nodeKey, discoKey: this.discoKey, clientNonce: this.clientNonce,
          proof: helloProof(this.authKey!, this.serverNonce, this.clientNonce, this.nodeKey, this.discoKey), lastVersion: this.version,
        }));
        return;
      }
      case 'welcome':
        if (this.phase !== 'welcome') return this.problem('protocol', 'unexpected welcome');
        if (!proofsEqual(m.serverProof, welcomeProof(this.authKey!, this.clientNonce, this.serverNonce))) return this.problem('protocol', 'welcome proof failed');
        this.phase = 'ready';
        return;
      case 'snapshot':
        if (this.phase !== 'ready' && this.phase !== 'mapped') return this.problem('protocol', 'map before welcome');
        this.snapshotBytes = data.length;
        if (this.netmap) this.netmap = applySnapshot(this.netmap, m);
        return this.reached(m.version, at);
      case 'delta': {
        if (this.phase !== 'ready' && this.phase !== 'mapped') return this.problem('protocol', 'map before welcome');
        if (m.from !== this.version) return this.problem('gap', `delta from ${m.from} at version ${this.version}`);
        if (this.netmap) this.netmap = applyDelta(this.netmap, m);
        const w = this.ctx.watch;
        // The reporting node's own copy of the change doesn't count: fan-out is about its peers.
        if (w && w.id !== this.id && m.changes.some((c) => c.op === 'endpoints' && c.id === w.id && c.endpoints.includes(w.marker))) {
          this.ctx.onWatched(this, at, data.length);
        }
        return this.reached(m.version, at);
      }
      case 'error':
        return this.problem('refused', `${m.code}: ${m.message}`);
      case 'call-me-maybe':
        return;
    }
  }
}
