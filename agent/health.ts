/**
 * Health: what makes a node fail silently, as a list of checks a person can act
 * on. The agent computes the checks it knows from inside (engine applies, the
 * address families the host offers, the local firewall, the relay, port mapping,
 * path MTU); `knit status` shows a one-line summary when one is not ok, and
 * `knit doctor` prints them all beside the checks it runs itself (coordinator,
 * STUN, clock, prefix overlap). Pure: it only reads what it is handed.
 */

/** ok: works; warn: works in a degraded way (IPv4 only, relayed); fail: something the user must fix. */
export type HealthLevel = 'ok' | 'warn' | 'fail';

export interface HealthCheck {
  /** A stable short name: `engine`, `ipv6`, `firewall`, `relay`, `portmap`, `mtu`, … */
  check: string;
  level: HealthLevel;
  /** What is true now, in one sentence. */
  detail: string;
  /** What to do about it, when there is something to do. */
  fix?: string;
}

const LEVEL_ORDER: Record<HealthLevel, number> = { ok: 0, warn: 1, fail: 2 };

/** The worst level among the checks (ok for none). */
export function worstLevel(checks: readonly HealthCheck[]): HealthLevel {
  let worst: HealthLevel = 'ok';
  for (const c of checks) if (LEVEL_ORDER[c.level] > LEVEL_ORDER[worst]) worst = c.level;
  return worst;
}

/** One line for `knit status` when something is not ok, else undefined. */
export function healthSummary(checks: readonly HealthCheck[]): string | undefined {
  const bad = checks.filter((c) => c.level !== 'ok');
  if (bad.length === 0) return undefined;
  return `health ${worstLevel(bad)}: ${bad.map((c) => `${c.check}: ${c.detail}`).join('; ')} (knit doctor says more)`;
}
