/**
 * The engine's health checks, from the engine's own report (Engine.health()):
 * `engine` — did the last apply go in? — and `ipv6` — does the host let the
 * tunnel carry IPv6? Also when the agent should apply again so that a family
 * the host had switched off is picked up once it is back. Pure: the agent
 * hands in the report and the time. docs/engines.md, "Address families".
 */
import type { EngineHealth, EngineKind } from './engine/types.js';
import type { HealthCheck } from './health.js';

/**
 * While a family is switched off, the agent applies again this often, so it is picked up
 * within about this long of being switched back on: `disable_ipv6` changes raise no event
 * the agent watches (the interface monitor ignores link-local addresses), and one `ip` run
 * every 10 s costs nothing.
 */
export const FAMILY_RECHECK_MS = 10_000;

/** What to do about an apply failure, by what the failure says; the last row always matches. */
const APPLY_FIXES: Array<[RegExp, string]> = [
  [/cannot run wireguard-go: ENOENT/, 'install wireguard-go (Debian: apt install wireguard-go), or use --engine kernel where the wireguard module exists'],
  [/Operation not permitted|EPERM|EACCES/, 'run `knit up` as root: it creates a network interface, its addresses and routes'],
  [/\/dev\/net\/tun|TUN/i, 'the host needs /dev/net/tun (in a container: --device /dev/net/tun and CAP_NET_ADMIN)'],
  [/./, 'Knit retries at every change; the agent\'s log names the command that failed. `knit down` then `knit up` starts the engine afresh'],
];

function secondsAgo(atMs: number, wallNowMs: number): string {
  return `${Math.max(0, Math.round((wallNowMs - atMs) / 1000))} s ago`;
}

/** ok once an apply went in; fail, with the error and what to do, while the last apply failed. */
export function engineCheck(h: EngineHealth, kind: EngineKind, wallNowMs: number): HealthCheck {
  if (h.lastError) {
    const fix = APPLY_FIXES.find(([re]) => re.test(h.lastError!.message))![1];
    return { check: 'engine', level: 'fail', detail: `the last ${kind} engine apply failed (${secondsAgo(h.lastError.atMs, wallNowMs)}): ${h.lastError.message}`, fix };
  }
  if (h.lastSuccessMs === 0) return { check: 'engine', level: 'ok', detail: `the ${kind} engine has not been configured yet` };
  return { check: 'engine', level: 'ok', detail: `the ${kind} engine holds the configuration (applied ${secondsAgo(h.lastSuccessMs, wallNowMs)})` };
}

/** warn while the host has IPv6 switched off (the tunnel carries IPv4 only); nothing before the first apply says either way. */
export function ipv6Check(h: EngineHealth): HealthCheck | undefined {
  const off = h.unavailableFamilies.find((u) => u.family === 6);
  if (off) {
    const noKernelIpv6 = /not supported/i.test(off.reason);
    return {
      check: 'ipv6', level: 'warn', detail: 'IPv6 is disabled on this host; the tunnel carries IPv4 only',
      fix: noKernelIpv6
        ? 'the kernel runs without IPv6 (ipv6.disable=1 on its command line); remove that and reboot if the tunnel should carry IPv6'
        : `if the tunnel should carry IPv6: sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 (Knit adds its IPv6 address within ${FAMILY_RECHECK_MS / 1000} s)`,
    };
  }
  if (h.lastSuccessMs === 0) return undefined;
  return { check: 'ipv6', level: 'ok', detail: 'the tunnel carries IPv4 and IPv6' };
}

export function engineHealthChecks(h: EngineHealth, kind: EngineKind, wallNowMs: number): HealthCheck[] {
  const ipv6 = ipv6Check(h);
  return [engineCheck(h, kind, wallNowMs), ...(ipv6 ? [ipv6] : [])];
}

/** Whether to apply again now so a switched-off family is picked up once it is back. */
export function familyRecheckDue(h: EngineHealth, lastRecheckMs: number, nowMs: number): boolean {
  return h.unavailableFamilies.length > 0 && nowMs - lastRecheckMs >= FAMILY_RECHECK_MS;
}
