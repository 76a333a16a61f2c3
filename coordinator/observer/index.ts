/**
 * The STUN observer's UDP shell: binds the port(s), feeds datagrams to the
 * pure core and sends its answers. Any standard STUN client can use it.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { systemClock, type Clock } from '../../shared/clock.js';
import { silentLogger, type Logger } from '../../shared/log.js';
import { normalizeIp } from '../../shared/net/addr.js';
import { createObserverCore } from './core.js';

export interface StunObserverStats { requests: number; responses: number; dropped: number; rateLimited: number }

export interface StunObserver {
  start(): Promise<{ port: number }>;
  stop(): Promise<void>;
  stats(): StunObserverStats;
}

export function createStunObserver(options: { host: string; port: number; clock?: Clock; logger?: Logger; rateLimitPerSec?: number }): StunObserver {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger;
  const core = createObserverCore({ rateLimitPerSec: options.rateLimitPerSec });
  const stats: StunObserverStats = { requests: 0, responses: 0, dropped: 0, rateLimited: 0 };
  let sock: Socket | undefined;
  let bound: { port: number } | undefined;

  return {
    async start() {
      if (bound) return bound;
      const s = createSocket({ type: isIPv6(options.host) ? 'udp6' : 'udp4' });
      s.on('message', (msg, rinfo) => {
        stats.requests++;
        const v = core.handle(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), { address: normalizeIp(rinfo.address), port: rinfo.port }, clock.now());
        if ('answer' in v) {
          stats.responses++;
          s.send(v.answer, rinfo.port, rinfo.address);
        } else if (v.drop === 'rate-limited') stats.rateLimited++;
        else stats.dropped++;
      });
      s.on('error', (err) => logger.warn('stun socket error', { err: err.message }));
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(options.port, options.host, () => { s.off('error', reject); resolve(); });
      });
      sock = s;
      bound = { port: s.address().port };
      return bound;
    },
    async stop() {
      const s = sock;
      sock = undefined;
      bound = undefined;
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    },
    stats: () => ({ ...stats }),
  };
}
