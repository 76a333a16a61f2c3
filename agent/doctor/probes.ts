/**
 * `knit doctor`'s I/O: the few things it asks the world itself, each bounded
 * in time and returning a value (never throwing) for the pure checks in
 * checks.ts — the coordinator's /healthz with its Date header, one STUN
 * Binding per offered port from an ephemeral socket of this host, and the
 * host's routes. The agent's own view (status, health) comes from its local
 * API, not from here.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP, isIPv6 } from 'node:net';
import { normalizeIp } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { encodeBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN, STUN_TXID_LEN } from '../../shared/wire/stun.js';
import type { ExecFn } from '../engine/exec.js';
import type { CoordinatorProbe, HostRoute } from './checks.js';

/** How long doctor waits for the coordinator's HTTP answer and for each STUN answer: well past any real RTT, short enough to wait for. */
export const DOCTOR_PROBE_TIMEOUT_MS = 3000;
/** STUN Binding retransmits within that time (RFC 8489 §6.2.1 retransmits too; one lost datagram must not read as "blocked"). */
const STUN_TRIES = 3;

/** GET /healthz: reachable or not, the STUN ports it offers, and its clock (the Date header) against ours at the midpoint. */
export async function probeCoordinator(url: string, timeoutMs = DOCTOR_PROBE_TIMEOUT_MS): Promise<CoordinatorProbe> {
  const sentAt = Date.now();
  try {
    const res = await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(timeoutMs) });
    const doneAt = Date.now();
    const body = (await res.json().catch(() => ({}))) as { stun?: unknown };
    if (!res.ok) return { reachable: false, error: `GET /healthz answered ${res.status}` };
    const date = Date.parse(res.headers.get('date') ?? '');
    const stun = Array.isArray(body.stun) && body.stun.every((p) => Number.isInteger(p)) ? (body.stun as number[]) : undefined;
    return {
      reachable: true, rttMs: doneAt - sentAt, stunPorts: stun,
      ...(Number.isFinite(date) ? { clockSkewMs: localSkew(date, sentAt, doneAt) } : {}),
    };
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    return { reachable: false, error: e.name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : (e.cause?.code ?? e.message) };
  }
}

/**
 * Our clock minus the coordinator's. The Date header has one-second resolution and is
 * truncated, so the server's time at the midpoint lies in [date, date + 1 s): compare
 * against the middle of that second.
 */
export function localSkew(dateMs: number, sentAt: number, doneAt: number): number {
  return Math.round((sentAt + doneAt) / 2 - (dateMs + 500));
}

/** The coordinator's host as an IP (the STUN observer listens there, as the agent assumes too). */
export async function coordinatorAddress(url: string): Promise<string | undefined> {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    return isIP(host) ? host : (await lookup(host)).address;
  } catch {
    return undefined;
  }
}

/** One STUN Binding from an ephemeral port; the mapped address, or undefined without an answer in time. */
export async function stunBinding(server: UdpEndpoint, timeoutMs = DOCTOR_PROBE_TIMEOUT_MS): Promise<UdpEndpoint | undefined> {
  const sock = createSocket({ type: isIPv6(server.address) ? 'udp6' : 'udp4' });
  const txid = randomBytes(STUN_TXID_LEN);
  const request = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN });
  try {
    return await new Promise<UdpEndpoint | undefined>((resolve) => {
      const timers: NodeJS.Timeout[] = [];
      const done = (v: UdpEndpoint | undefined) => { timers.forEach(clearTimeout); resolve(v); };
      sock.on('error', () => done(undefined));
      sock.on('message', (msg) => {
        const r = parseBindingResponse(msg);
        if (r && Buffer.from(r.txid).equals(txid)) done({ address: normalizeIp(r.mapped.address), port: r.mapped.port });
      });
      for (let i = 0; i < STUN_TRIES; i++) {
        timers.push(setTimeout(() => sock.send(request, server.port, server.address, () => {}), (i * timeoutMs) / STUN_TRIES));
      }
      timers.push(setTimeout(() => done(undefined), timeoutMs));
    });
  } finally {
    sock.close();
  }
}

interface IpRouteJson { dst?: string; dev?: string; type?: string }

/** The host's unicast routes of both families in the main table (`ip -j route`); undefined where `ip` can't be run. */
export async function readHostRoutes(exec: ExecFn): Promise<HostRoute[] | undefined> {
  const out: HostRoute[] = [];
  try {
    for (const family of ['-4', '-6']) {
      const { stdout } = await exec(['ip', '-j', family, 'route', 'show']);
      for (const r of JSON.parse(stdout || '[]') as IpRouteJson[]) {
        if (r.dst === undefined || r.dev === undefined || (r.type !== undefined && r.type !== 'unicast')) continue;
        out.push({ dst: r.dst, dev: r.dev });
      }
    }
  } catch {
    return out.length > 0 ? out : undefined; // IPv6 switched off: the IPv4 routes still count
  }
  return out;
}
