/**
 * The console's live feed: WebSocket GET /v1/admin/feed (docs/console.md).
 *
 *   console                                   coordinator
 *   auth {token}                          →                     (first frame, within 10 s)
 *                                         ←  state {version, nodes: [PeerInfo…], paths: [PathEdge…]}
 *                                         ←  delta {from, version, changes}   (the agents' delta, per window)
 *                                         ←  paths {node, edges}              (one node's new path report)
 *                                         ←  error {code, message}, then close
 *
 * The admin token travels in the first frame, never in the URL, so it never
 * lands in an access log or a proxy's history; it is checked and dropped, and
 * no frame, close reason or log line carries it. Close codes: 4401 bad token,
 * 4400 a frame that isn't `auth`, 4408 no auth in time, 4429 too many feeds,
 * 1013 a console that can't keep up (it reconnects and gets a fresh state),
 * 1001 shutdown.
 *
 * The feed costs the hub one listener call per coalescing window and per path
 * report, whatever the number of agents; each frame is encoded once for every
 * console. `AdminFeed` is transport-independent like the hub (tests drive it
 * with a fake transport); `handleUpgrade` is the thin ws shell.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { Clock, TimerHandle } from '../../shared/clock.js';
import { KnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { DeltaMsg } from '../../shared/wire/control.js';
import type { Registry } from '../registry/registry.js';
import type { ControlHub } from './hub.js';
import type { PathEdge } from './path-reports.js';

export const ADMIN_FEED_PATH = '/v1/admin/feed';
/** A console that hasn't sent its token within this long is closed (4408), as agents are for hello. */
export const ADMIN_FEED_AUTH_TIMEOUT_MS = 10_000;
/** The auth frame is tiny; anything bigger is refused by ws itself (1009) before we read it. */
export const ADMIN_FEED_MAX_FRAME_BYTES = 4096;
/** Consoles are few; a cap keeps a script that opens sockets in a loop from costing memory. */
export const ADMIN_FEED_MAX_CONNECTIONS = 64;
/** A console this far behind (a stalled tab) is closed with 1013 rather than buffered without end. */
export const ADMIN_FEED_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/** Liveness: a console that misses a ping is cut off; 30 s is cheap and spots dead tabs soon enough. */
export const ADMIN_FEED_PING_MS = 30_000;
/** How long shutdown waits for consoles to answer the 1001 close before cutting them off. */
export const ADMIN_FEED_CLOSE_GRACE_MS = 1000;

export const ADMIN_FEED_CLOSE = { badToken: 4401, protocol: 4400, authTimeout: 4408, tooMany: 4429, tooSlow: 1013, shutdown: 1001 } as const;

/** What the feed needs of one connection: a ws socket in production, a fake in tests. */
export interface FeedTransport {
  send(text: string): void;
  close(code: number, reason: string): void;
  /** Bytes queued but not yet written (ws `bufferedAmount`); 0 when unknown. */
  readonly buffered: number;
}

export interface FeedSession {
  receive(frame: string): void;
  closed(): void;
}

export interface AdminFeedOptions {
  registry: Pick<Registry, 'verifyAdmin' | 'peers'>;
  hub: Pick<ControlHub, 'log' | 'pathEdges' | 'onChanges' | 'onPathReport'>;
  clock: Clock;
  logger: Logger;
  authTimeoutMs?: number;
  maxConnections?: number;
  maxBufferedBytes?: number;
}

interface Conn {
  t: FeedTransport;
  state: 'await-auth' | 'checking' | 'live' | 'closed';
  timer?: TimerHandle;
}

/** The messages a console receives. */
export type FeedMessage =
  | { type: 'state'; version: number; nodes: unknown[]; paths: PathEdge[] }
  | DeltaMsg
  | { type: 'paths'; node: number; edges: PathEdge[] }
  | { type: 'error'; code: string; message: string };

export class AdminFeed {
  private readonly conns = new Set<Conn>();
  private readonly live = new Set<Conn>();
  private readonly unsubscribe: (() => void)[];
  private stopped = false;

  constructor(private readonly o: AdminFeedOptions) {
    this.unsubscribe = [
      o.hub.onChanges((delta) => this.broadcast(delta)),
      o.hub.onPathReport((node, edges) => this.broadcast({ type: 'paths', node, edges })),
    ];
  }

  /** Connections open now (authenticated or not). */
  get size(): number {
    return this.conns.size;
  }

  connect(t: FeedTransport): FeedSession {
    if (this.stopped) {
      t.close(ADMIN_FEED_CLOSE.shutdown, 'coordinator shutting down');
      return { receive() {}, closed() {} };
    }
    if (this.conns.size >= (this.o.maxConnections ?? ADMIN_FEED_MAX_CONNECTIONS)) {
      const e = new KnitError('KNIT_ERR_RATE_LIMITED', 'too many console connections');
      t.send(JSON.stringify({ type: 'error', code: e.code, message: e.message }));
      t.close(ADMIN_FEED_CLOSE.tooMany, e.message);
      return { receive() {}, closed() {} };
    }
    const c: Conn = { t, state: 'await-auth' };
    this.conns.add(c);
    c.timer = this.o.clock.setTimeout(() => {
      c.timer = undefined;
      this.close(c, ADMIN_FEED_CLOSE.authTimeout, 'no auth frame in time');
    }, this.o.authTimeoutMs ?? ADMIN_FEED_AUTH_TIMEOUT_MS);
    return { receive: (frame) => this.receive(c, frame), closed: () => this.closed(c) };
  }

  /** Closes every console (1001) and leaves the hub; idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const u of this.unsubscribe) u();
    for (const c of [...this.conns]) this.close(c, ADMIN_FEED_CLOSE.shutdown, 'coordinator shutting down');
  }

  private receive(c: Conn, frame: string): void {
    if (c.state !== 'await-auth') {
      if (c.state === 'live' || c.state === 'checking') this.fail(c, new KnitError('KNIT_ERR_PROTOCOL', 'the feed takes one auth frame only'), ADMIN_FEED_CLOSE.protocol);
      return;
    }
    let token: unknown;
    try {
      const m = JSON.parse(frame) as { type?: unknown; token?: unknown };
      if (m === null || typeof m !== 'object' || m.type !== 'auth') throw new Error();
      token = m.token;
    } catch {
      return this.fail(c, new KnitError('KNIT_ERR_PROTOCOL', 'the first frame must be {"type":"auth","token":"…"}'), ADMIN_FEED_CLOSE.protocol);
    }
    if (typeof token !== 'string') return this.fail(c, new KnitError('KNIT_ERR_ADMIN_UNAUTHORIZED'), ADMIN_FEED_CLOSE.badToken);
    c.state = 'checking';
    this.o.registry.verifyAdmin(token).then((ok) => this.authenticated(c, ok), (err: unknown) => {
      this.o.logger.error('admin feed: could not check the token', { err: (err as Error).message });
      this.fail(c, new KnitError('KNIT_ERR_INTERNAL'), ADMIN_FEED_CLOSE.protocol);
    });
  }

  private authenticated(c: Conn, ok: boolean): void {
    if (c.state !== 'checking') return; // closed while the store answered
    if (!ok) return this.fail(c, new KnitError('KNIT_ERR_ADMIN_UNAUTHORIZED'), ADMIN_FEED_CLOSE.badToken);
    if (c.timer !== undefined) this.o.clock.clearTimeout(c.timer);
    c.timer = undefined;
    c.state = 'live';
    this.live.add(c);
    // Built from memory, which may hold part of the next window: safe, every change is a "set".
    const state = { type: 'state', version: this.o.hub.log.version, nodes: [...this.o.registry.peers()], paths: this.o.hub.pathEdges() };
    this.send(c, JSON.stringify(state));
  }

  /** One encoding for every console; a console too far behind is dropped, not buffered forever. */
  private broadcast(msg: FeedMessage): void {
    if (this.live.size === 0) return;
    let text: string;
    try {
      text = JSON.stringify(msg);
    } catch (err) {
      this.o.logger.error('admin feed: could not encode a frame', { err: (err as Error).message });
      return;
    }
    for (const c of this.live) this.send(c, text);
  }

  private send(c: Conn, text: string): void {
    if (c.t.buffered > (this.o.maxBufferedBytes ?? ADMIN_FEED_MAX_BUFFERED_BYTES)) {
      this.close(c, ADMIN_FEED_CLOSE.tooSlow, 'the console is not keeping up; reconnect for a fresh state');
      return;
    }
    c.t.send(text);
  }

  private fail(c: Conn, err: KnitError, code: number): void {
    if (c.state === 'closed') return;
    c.t.send(JSON.stringify({ type: 'error', code: err.code, message: err.message }));
    this.close(c, code, err.message);
  }

  private close(c: Conn, code: number, reason: string): void {
    if (c.state === 'closed') return;
    c.t.close(code, reason.slice(0, 120));
    this.closed(c);
  }

  private closed(c: Conn): void {
    if (c.state === 'closed') return;
    c.state = 'closed';
    if (c.timer !== undefined) this.o.clock.clearTimeout(c.timer);
    c.timer = undefined;
    this.conns.delete(c);
    this.live.delete(c);
  }
}

/** A ws socket as a feed transport. */
class WsTransport implements FeedTransport {
  alive = true;
  session: FeedSession | undefined;
  constructor(readonly ws: WebSocket) {}
  get buffered(): number {
    return this.ws.bufferedAmount;
  }
  send(text: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }
  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

export interface AdminFeedServer {
  readonly feed: AdminFeed;
  /** The 'upgrade' handler for ADMIN_FEED_PATH (registered with ws-server's routeUpgrade). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * Closes every console with 1001 and stops pinging; resolves once they are gone, or after
   * ADMIN_FEED_CLOSE_GRACE_MS, when the rest are cut off (a dead tab must not hold up shutdown).
   * Idempotent.
   */
  close(): Promise<void>;
}

/** The feed plus its ws shell: upgrade, frames in and out, pings. */
export function createAdminFeed(options: AdminFeedOptions & { pingIntervalMs?: number }): AdminFeedServer {
  const feed = new AdminFeed(options);
  const wss = new WebSocketServer({ noServer: true, maxPayload: ADMIN_FEED_MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
  const sockets = new Map<WebSocket, WsTransport>();
  const clock = options.clock;
  let closed = false;
  let timer: TimerHandle | undefined;
  let closing: Promise<void> | undefined;
  let onEmpty: (() => void) | undefined; // set while shutdown waits for the last console to go

  const ping = (): void => {
    timer = undefined;
    if (closed) return;
    for (const [ws, t] of sockets) {
      if (!t.alive) {
        ws.terminate();
        continue;
      }
      t.alive = false;
      ws.ping();
    }
    if (sockets.size > 0) timer = clock.setTimeout(ping, options.pingIntervalMs ?? ADMIN_FEED_PING_MS);
  };

  const accept = (ws: WebSocket): void => {
    const t = new WsTransport(ws);
    sockets.set(ws, t);
    const gone = (): void => {
      if (!sockets.delete(ws)) return;
      t.session!.closed();
      if (sockets.size === 0) onEmpty?.();
    };
    ws.on('message', (data: RawData, isBinary: boolean) => {
      t.alive = true;
      t.session!.receive(isBinary ? '\u0000binary' : data.toString());
    });
    ws.on('pong', () => { t.alive = true; });
    ws.on('close', gone);
    ws.on('error', gone);
    t.session = feed.connect(t);
    if (timer === undefined && !closed) timer = clock.setTimeout(ping, options.pingIntervalMs ?? ADMIN_FEED_PING_MS);
  };

  return {
    feed,
    handleUpgrade(req, socket, head) {
      if (closed) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, accept);
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        if (timer !== undefined) clock.clearTimeout(timer);
        timer = undefined;
        feed.stop(); // a 1001 close frame to every console
        const finish = (): void => {
          for (const ws of sockets.keys()) ws.terminate();
          wss.close();
          resolve();
        };
        if (sockets.size === 0) return finish();
        const grace = clock.setTimeout(finish, ADMIN_FEED_CLOSE_GRACE_MS);
        onEmpty = () => {
          clock.clearTimeout(grace);
          finish();
        };
      });
      return closing;
    },
  };
}
