/**
 * Port mapping (PCP → NAT-PMP → UPnP-IGD), the shell: one UDP socket (PCP and
 * NAT-PMP to the gateway's port 5351, SSDP multicast out of the LAN interface
 * only, the verification STUN request), HTTP for UPnP, the timer, and the
 * default-gateway lookup. Every decision is the core's (core.ts); this file
 * feeds it events and performs its actions. The agent hands it the STUN
 * packets that arrive on the tunnel port (the verification echo) and gets the
 * verified mapping back through `onCandidate`. docs/port-mapping.md.
 */
import { createSocket, type Socket } from 'node:dgram';
import { request } from 'node:http';
import type { Clock, RandomBytes } from '../../shared/clock.js';
import { WakeupTimer } from '../../shared/wakeup.js';
import type { Logger } from '../../shared/log.js';
import type { PortMappingStatus } from '../status.js';
import { normalizeIp } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { createPortMapper } from './core.js';
import { findDefaultGateway, type DefaultGateway } from './gateway.js';
import {
  PORTMAP_HTTP_TIMEOUT_MS, PORTMAP_STOP_TIMEOUT_MS, type PortMapAction, type PortMapCounters, type PortMapEvent, type PortMapping,
  type PortMapProtocol, type PortMapStatus,
} from './types.js';
import { SSDP_PORT, UPNP_MAX_DESCRIPTION_BYTES } from './upnp.js';

export { createPortMapper, PORTMAP_LIFETIME_S } from './core.js';
export {
  PORTMAP_PROTOCOLS, type PortMapAction, type PortMapEvent, type PortMapper, type PortMapping, type PortMapProtocol, type PortMapStatus,
} from './types.js';
export { findDefaultGateway, parseProcNetRoute, pickLocalAddress, type DefaultGateway } from './gateway.js';

export interface HttpExchange { method: 'GET' | 'POST'; url: string; headers: Record<string, string>; body?: string; localAddress?: string }

export interface PortMapServiceOptions {
  /** Protocols to try, in order (default PCP, NAT-PMP, UPnP). */
  protocols?: readonly PortMapProtocol[];
  /** Requested lifetime, seconds (default 120). */
  lifetimeS?: number;
  /** The agent's --interfaces: a default route through another interface is not used. */
  interfaces?: readonly string[];
}

export interface PortMapServiceDeps {
  clock: Clock;
  random: RandomBytes;
  logger: Logger;
  /** Finds the default gateway (default: /proc/net/route). Tests inject one. */
  findGateway?: () => Promise<DefaultGateway | undefined>;
  /** Performs an HTTP exchange for UPnP (default: node:http, bounded in time and size). */
  http?: (x: HttpExchange) => Promise<{ status: number; body: string }>;
}

export interface PortMapService {
  /** Looks up the gateway and starts mapping `internalPort` (the tunnel port). */
  start(internalPort: number): Promise<void>;
  /** Deletes the mapping (waits at most about a second) and closes the socket. Idempotent. */
  stop(): Promise<void>;
  /** The host's network changed: look up the gateway again and re-probe. */
  networkChanged(): void;
  /** The STUN observers that verify a mapping (from the coordinator's welcome). */
  setObservers(servers: readonly UdpEndpoint[]): void;
  /** A STUN packet that arrived on the tunnel port. */
  tunnelStun(bytes: Uint8Array, from: UdpEndpoint): void;
  status(): PortMapStatus;
  readonly counters: PortMapCounters;
  /** The verified mapping appeared, changed or went away. */
  onCandidate?: (mapping: PortMapping | undefined) => void;
}

/** HTTP answers from the IGD larger than this are cut off (and then fail to parse). */
const HTTP_MAX_BODY_BYTES = UPNP_MAX_DESCRIPTION_BYTES;

/** node:http, bounded: the core's deadline minus a second, and at most HTTP_MAX_BODY_BYTES of body. */
export function boundedHttp(x: HttpExchange): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(x.url, {
      method: x.method, headers: { ...x.headers, ...(x.body ? { 'Content-Length': String(Buffer.byteLength(x.body)) } : {}), Connection: 'close' },
      timeout: PORTMAP_HTTP_TIMEOUT_MS - 1000, localAddress: x.localAddress,
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > HTTP_MAX_BODY_BYTES) {
          req.destroy(new Error('answer too large'));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(x.body);
  });
}

export function createPortMapService(options: PortMapServiceOptions, deps: PortMapServiceDeps): PortMapService {
  const core = createPortMapper({ random: deps.random, protocols: options.protocols, lifetimeS: options.lifetimeS });
  const log = deps.logger.child({ component: 'portmap' });
  const findGateway = deps.findGateway ?? findDefaultGateway;
  const http = deps.http ?? boundedHttp;
  let sock: Socket | undefined;
  const timer = new WakeupTimer(deps.clock, () => feed({ type: 'tick' }));
  let running = false;
  let stopped = false;
  let localAddress: string | undefined;
  let onStopped: (() => void) | undefined;
  let lookups: Promise<void> = Promise.resolve();

  async function gatewayNow(): Promise<DefaultGateway | undefined> {
    const g = await findGateway().catch((err: Error) => {
      log.debug('default gateway lookup failed', { err: err.message });
      return undefined;
    });
    if (g && options.interfaces && !options.interfaces.includes(g.iface)) {
      log.debug('the default route is not on a selected interface; no port mapping', { iface: g.iface });
      return undefined;
    }
    localAddress = g?.localAddress;
    return g;
  }

  function feed(e: PortMapEvent): void {
    if (stopped) return;
    perform(core.handle(e, deps.clock.now()));
  }

  function perform(actions: PortMapAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send':
          sock?.send(a.bytes, a.to.port, a.to.address, () => {});
          break;
        case 'ssdp-send':
          // Out of the interface that reaches the gateway, and no further than the LAN.
          if (sock && localAddress) {
            try { sock.setMulticastInterface(localAddress); } catch { /* the address just went away: the core times out */ }
            sock.send(a.bytes, a.to.port, a.to.address, () => {});
          }
          break;
        case 'http': {
          const id = a.id;
          http({ method: a.method, url: a.url, headers: a.headers, body: a.body, localAddress }).then(
            (r) => feed({ type: 'http-response', id, status: r.status, body: r.body }),
            (err: Error) => feed({ type: 'http-error', id, error: err.message }),
          );
          break;
        }
        case 'candidate':
          service.onCandidate?.(a.mapping);
          break;
        case 'log':
          log[a.level](a.msg, a.fields);
          break;
        case 'stopped':
          onStopped?.();
          break;
      }
    }
    arm();
  }

  function arm(): void {
    timer.arm(stopped ? undefined : core.nextWakeup());
  }

  async function openSocket(): Promise<Socket> {
    const s = createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('error', () => {}); // ICMP errors after a roam: the core's timeouts deal with silence
    s.setMulticastTTL(2); // SSDP stays on the LAN (UDA 1.1 recommends a TTL of 2)
    s.setMulticastLoopback(false);
    s.on('message', (msg, rinfo) => {
      const from = { address: normalizeIp(rinfo.address), port: rinfo.port };
      const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
      feed(from.port === SSDP_PORT ? { type: 'ssdp', from, bytes } : { type: 'udp', from, bytes });
    });
    return s;
  }

  const service: PortMapService = {
    counters: core.counters,
    async start(internalPort) {
      if (running || stopped) return;
      running = true;
      sock = await openSocket();
      const g = await gatewayNow();
      feed({ type: 'start', gateway: g?.gateway, localAddress: g?.localAddress, internalPort });
    },
    async stop() {
      if (stopped) return;
      if (running) {
        const done = new Promise<void>((resolve) => {
          onStopped = resolve;
          deps.clock.setTimeout(resolve, PORTMAP_STOP_TIMEOUT_MS + 500); // the core gives up at PORTMAP_STOP_TIMEOUT_MS
        });
        feed({ type: 'stop' });
        await done;
      }
      stopped = true;
      timer.cancel();
      try { sock?.close(); } catch { /* closed */ }
      sock = undefined;
    },
    networkChanged() {
      if (!running || stopped) return;
      lookups = lookups.then(async () => {
        const g = await gatewayNow();
        feed({ type: 'network-changed', gateway: g?.gateway, localAddress: g?.localAddress });
      });
    },
    setObservers(servers) {
      feed({ type: 'observers', servers });
    },
    tunnelStun(bytes, from) {
      feed({ type: 'tunnel-stun', from, bytes });
    },
    status: () => core.status(),
  };
  return service;
}

/** The mapper's status as `knit status` shows it: expiry in wall-clock time. */
export function describePortMapping(s: PortMapStatus, now: number, wallNow: number): PortMappingStatus {
  const m = s.mapping;
  return {
    state: s.phase, verified: s.verified,
    ...(s.gateway ? { gateway: s.gateway } : {}), ...(s.protocol ? { protocol: s.protocol } : {}),
    ...(m ? { external: m.external, expiresAt: Math.round(wallNow + (m.expiresAt - now)) } : {}),
    ...(s.detail ? { detail: s.detail } : {}),
  };
}
