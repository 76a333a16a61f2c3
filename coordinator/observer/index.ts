/**
 * The STUN observer's UDP shell: binds one port (udp4, or udp6 when the host is
 * an IPv6 address — dual-stack, so IPv4 clients are answered too), feeds every
 * datagram to the pure core (core.ts) and sends what it answers. Any standard
 * STUN client can use it (`stunclient`, browsers' ICE). The coordinator starts
 * one per `--stun`/`--stun2` port.
 *
 * stats(): requests = datagrams received, responses = answers sent, dropped =
 * malformed or not a Binding request, rateLimited = refused by the
 * no-amplification budget. Nothing is logged per packet (a flood must not
 * become a log flood); socket errors are logged.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { systemClock, type Clock } from '../../shared/clock.js';
import { silentLogger, type Logger } from '../../shared/log.js';
import { normalizeIp } from '../../shared/net/addr.js';
import { createObserverCore } from './core.js';

export interface StunObserverStats { requests: number; responses: number; dropped: number; rateLimited: number }

export interface StunObserver {
  /** Binds the port (0 = any free one) and returns it. Idempotent. */
  start(): Promise<{ port: number }>;
  /** Closes the socket. Idempotent; start() may be called again after. */
  stop(): Promise<void>;
  stats(): StunObserverStats;
}

export function createStunObserver(options: { host: string; port: number; clock?: Clock; logger?: Logger; rateLimitPerSec?: number }): StunObserver {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger;
  const core = createObserverCore({ rateLimitPerSec: options.rateLimitPerSec });
  const stats: StunObserverStats = { requests: 0, responses: 0, dropped: 0, rateLimited: 0 };
  let starting: Promise<{ port: number }> | undefined;
  let sock: Socket | undefined;

  function onMessage(s: Socket, msg: Buffer, rinfo: { address: string; port: number }): void {
    stats.requests++;
    const from = { address: normalizeIp(rinfo.address), port: rinfo.port };
    const verdict = core.handle(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), from, clock.now());
    if ('answer' in verdict) {
      stats.responses++;
      // Back to the address exactly as the socket reported it (a udp6 socket needs the v4-mapped form),
      // at the port the request asked for with RESPONSE-PORT, if any.
      s.send(verdict.answer, verdict.port ?? rinfo.port, rinfo.address, (err) => {
        if (err) logger.debug('stun answer not sent', { err: err.message });
      });
    } else if (verdict.drop === 'rate-limited') stats.rateLimited++;
    else stats.dropped++;
  }

  async function bind(): Promise<{ port: number }> {
    const s = createSocket({ type: isIPv6(options.host) ? 'udp6' : 'udp4' });
    s.on('message', (msg, rinfo) => onMessage(s, msg, rinfo));
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(options.port, options.host, () => {
        s.off('error', reject);
        resolve();
      });
    }).catch((err: Error) => {
      s.close();
      throw err;
    });
    s.on('error', (err) => logger.warn('stun socket error', { err: err.message }));
    sock = s;
    const port = s.address().port;
    logger.debug('stun observer listening', { host: options.host, port });
    return { port };
  }

  return {
    start() {
      starting ??= bind().catch((err: unknown) => {
        starting = undefined; // a failed bind (port in use) may be retried
        throw err;
      });
      return starting;
    },
    async stop() {
      const pending = starting;
      starting = undefined;
      if (pending) await pending.catch(() => undefined);
      const s = sock;
      sock = undefined;
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    },
    stats: () => ({ ...stats }),
  };
}
