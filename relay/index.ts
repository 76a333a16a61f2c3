/**
 * The relay's shell: a UDP control port, two UDP ports per pair of nodes
 * (opened when the core asks), and optionally a WebSocket listener (plain
 * HTTP, or HTTPS with a certificate) for nodes whose UDP doesn't get through.
 * Every decision is made by the pure core (core.ts); this file only moves
 * datagrams and frames and runs one sweep timer. The coordinator starts one
 * (`knit coordinator --relay`); `knit relay` runs one on its own.
 *
 * Nothing is logged per packet (a flood must not become a log flood).
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIPv4, isIPv6 } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { systemClock, type Clock, type RandomBytes } from '../shared/clock.js';
import { defaultRandomBytes } from '../shared/crypto/seal.js';
import { silentLogger, type Logger } from '../shared/log.js';
import { normalizeIp } from '../shared/net/addr.js';
import type { UdpEndpoint } from '../shared/udp.js';
import { isRelayPacket } from '../shared/wire/relay.js';
import { CONTROL, RelayCore, type RelayAction, type RelayCoreOptions, type RelayCounters, type RelayPort } from './core.js';

export { RelayCore, type RelayCounters } from './core.js';

/** The WebSocket path of the fallback. */
export const RELAY_WS_PATH = '/v1/relay';
/** A WebSocket whose send buffer is above this drops packets instead of queueing (UDP semantics). */
const WS_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Ports kept bound ahead of need (two per new pair): an alloc is answered without waiting for binds. */
const SPARE_PORTS = 8;
/** Largest WebSocket frame: a node key and the largest UDP payload. */
const WS_MAX_FRAME = 32 + 65_535;

export interface RelayServerOptions extends Omit<RelayCoreOptions, 'random'> {
  /** The UDP control port's address; allocation ports bind on the same address. */
  host: string;
  port: number;
  /** The WebSocket fallback's listener; undefined = none. */
  ws?: { host: string; port: number; tls?: { cert: string | Buffer; key: string | Buffer } };
  clock?: Clock;
  logger?: Logger;
  random?: RandomBytes;
}

export interface RelayServer {
  readonly core: RelayCore;
  /** Binds the control port (and the WebSocket listener); resolves to the bound ports. Idempotent. */
  start(): Promise<{ port: number; wsPort?: number }>;
  /** Closes every socket and the timer. Idempotent. */
  stop(): Promise<void>;
  stats(): RelayCounters & { wsDropBackpressure: number };
}

function bindUdp(host: string, port: number): Promise<Socket> {
  const s = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4' });
  return new Promise<Socket>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, host, () => {
      s.off('error', reject);
      resolve(s);
    });
  }).catch((err: unknown) => {
    s.close();
    throw err;
  });
}

export function createRelayServer(o: RelayServerOptions): RelayServer {
  const clock = o.clock ?? systemClock;
  const logger = o.logger ?? silentLogger;
  const core = new RelayCore({ ...o, random: o.random ?? defaultRandomBytes });
  const v6 = isIPv6(o.host);
  const ports = new Map<number, Socket>();
  const sessions = new Map<number, WebSocket>();
  let control: Socket | undefined;
  let http: Server | undefined;
  let wss: WebSocketServer | undefined;
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let nextSession = 1;
  let wsDropBackpressure = 0;
  let starting: Promise<{ port: number; wsPort?: number }> | undefined;
  let stopped = false;

  // A udp6 socket speaks to IPv4 peers through v4-mapped addresses.
  const wireAddress = (a: string) => (v6 && isIPv4(a) ? `::ffff:${a}` : a);

  const send = (port: RelayPort, to: UdpEndpoint, bytes: Uint8Array) => {
    const s = port === CONTROL ? control : ports.get(port);
    s?.send(bytes, to.port, wireAddress(to.address));
  };

  const perform = (a: RelayAction) => {
    switch (a.type) {
      case 'send': send(a.port, a.to, a.bytes); break;
      case 'open-ports': void openPorts(a.pair); break;
      case 'close-port': {
        const s = ports.get(a.port);
        ports.delete(a.port);
        try { s?.close(); } catch { /* closed */ }
        break;
      }
      case 'ws-send': {
        const ws = sessions.get(a.session);
        if (!ws || ws.readyState !== WebSocket.OPEN) break;
        if (ws.bufferedAmount > WS_MAX_BUFFERED_BYTES) wsDropBackpressure++;
        else ws.send(a.bytes, { binary: true });
        break;
      }
      case 'ws-close': sessions.get(a.session)?.close(4403, a.reason); break;
    }
  };

  const run = (actions: RelayAction[]) => {
    for (const a of actions) perform(a);
    arm();
  };

  const arm = () => {
    if (stopped || timer !== undefined) return;
    timer = clock.setTimeout(() => {
      timer = undefined;
      run(core.handle({ type: 'tick' }, clock.now()));
    }, Math.max(0, core.nextWakeup() - clock.now()));
  };

  const onDatagram = (port: RelayPort) => (msg: Buffer, rinfo: { address: string; port: number }) => {
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    const from = { address: normalizeIp(rinfo.address), port: rinfo.port };
    const now = clock.now();
    if (port !== CONTROL && !isRelayPacket(bytes)) {
      // The hot path: one lookup, one send, nothing allocated by the core.
      const a = core.forward(port, from, bytes, now);
      if (a) perform(a);
      return;
    }
    run(core.handle({ type: 'udp', port, from, bytes }, now));
  };

  // A few ports are kept bound ahead of need, so an alloc is answered at once, not after two binds.
  const spare: Socket[] = [];
  let refilling = false;
  const refill = async () => {
    if (refilling || stopped) return;
    refilling = true;
    try {
      while (!stopped && spare.length < SPARE_PORTS) spare.push(await bindUdp(o.host, 0));
    } catch (err) {
      logger.warn('relay cannot open spare ports', { err: (err as Error).message });
    } finally {
      refilling = false;
    }
    if (stopped) for (const s of spare.splice(0)) s.close();
  };

  async function openPorts(pair: number): Promise<void> {
    const opened: Socket[] = spare.length >= 2 ? spare.splice(0, 2) : [];
    void refill();
    try {
      if (opened.length === 0) opened.push(...await Promise.all([bindUdp(o.host, 0), bindUdp(o.host, 0)]));
    } catch (err) {
      for (const s of opened) s.close();
      logger.warn('relay cannot open ports', { err: (err as Error).message });
      run(core.handle({ type: 'ports-failed', pair }, clock.now()));
      return;
    }
    if (stopped) {
      for (const s of opened) s.close();
      return;
    }
    const nums = opened.map((s) => s.address().port) as [number, number];
    opened.forEach((s, i) => {
      ports.set(nums[i]!, s);
      s.on('message', onDatagram(nums[i]!));
      s.on('error', (err) => logger.debug('relay port error', { err: err.message }));
    });
    run(core.handle({ type: 'ports-opened', pair, ports: nums }, clock.now()));
  }

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if ((req.url ?? '').split('?')[0] !== RELAY_WS_PATH || stopped) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    wss!.handleUpgrade(req, socket, head, (ws) => {
      const id = nextSession++;
      sessions.set(id, ws);
      ws.on('message', (data: RawData, isBinary: boolean) => {
        if (!isBinary || !Buffer.isBuffer(data)) {
          ws.close(4400, 'binary frames only');
          return;
        }
        run(core.handle({ type: 'ws-message', session: id, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, clock.now()));
      });
      const gone = () => {
        if (!sessions.delete(id)) return;
        run(core.handle({ type: 'ws-close', session: id }, clock.now()));
      };
      ws.on('close', gone);
      ws.on('error', gone);
      run(core.handle({ type: 'ws-open', session: id }, clock.now()));
    });
  };

  async function listen(): Promise<{ port: number; wsPort?: number }> {
    control = await bindUdp(o.host, o.port);
    control.on('message', onDatagram(CONTROL));
    control.on('error', (err) => logger.warn('relay socket error', { err: err.message }));
    let wsPort: number | undefined;
    if (o.ws) {
      http = o.ws.tls ? createHttpsServer({ cert: o.ws.tls.cert, key: o.ws.tls.key }) : createHttpServer();
      http.on('request', (_req, res) => { res.writeHead(404).end(); });
      wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_FRAME, perMessageDeflate: false, clientTracking: false });
      http.on('upgrade', onUpgrade);
      const h = http;
      await new Promise<void>((resolve, reject) => {
        h.once('error', reject);
        h.listen(o.ws!.port, o.ws!.host, () => {
          h.off('error', reject);
          resolve();
        });
      });
      const addr = http.address();
      wsPort = typeof addr === 'object' && addr ? addr.port : o.ws.port;
    }
    await refill();
    arm();
    const port = control.address().port;
    logger.info('relay listening', { udp: `${o.host}:${port}`, ws: wsPort, key: core.publicKey });
    return { port, wsPort };
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    await starting?.catch(() => undefined);
    await cleanup();
  }

  async function cleanup(): Promise<void> {
    stopped = true;
    if (timer !== undefined) clock.clearTimeout(timer);
    for (const s of ports.values()) try { s.close(); } catch { /* closed */ }
    ports.clear();
    for (const s of spare.splice(0)) try { s.close(); } catch { /* closed */ }
    try { control?.close(); } catch { /* closed */ }
    for (const ws of sessions.values()) ws.terminate();
    sessions.clear();
    wss?.close();
    const h = http;
    if (h) await new Promise<void>((resolve) => h.close(() => resolve()));
  }

  return {
    core,
    start() {
      if (stopped) return Promise.reject(new Error('the relay was stopped'));
      starting ??= listen().catch(async (err: unknown) => {
        await cleanup();
        throw err;
      });
      return starting;
    },
    stop,
    stats: () => ({ ...core.counters, wsDropBackpressure }),
  };
}
