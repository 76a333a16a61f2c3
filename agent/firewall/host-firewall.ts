/**
 * The shell around firewall/rules.ts: reads the host's ruleset with `nft -j`,
 * applies the plan with `nft -f -` (one atomic transaction), keeps it applied,
 * and removes our rules at close. With `--firewall off` it only removes rules a
 * crashed run of ours left and reports what to open. Never throws: a host
 * whose firewall Knit can't read or change gets a health check saying so.
 */
import { readFileSync } from 'node:fs';
import type { Clock, TimerHandle } from '../../shared/clock.js';
import type { Logger } from '../../shared/log.js';
import type { HealthCheck } from '../health.js';
import { runNft, type NftRunner } from '../net/nft.js';
import {
  blockingInputChains, firewallHealth, parseRuleset, planFirewall, planScript, removalScript, type FirewallFacts, type FirewallWant, type NftChain,
} from './rules.js';

/**
 * How often the rules are checked again: a firewall reload (`systemctl reload nftables`,
 * `firewall-cmd --reload`, `iptables-restore`) replaces the chains and drops our rules, and
 * nothing tells us; 30 s bounds how long the tunnel stays closed after one.
 */
export const FIREWALL_RECHECK_MS = 30_000;

export type FirewallMode = 'on' | 'off';

export interface HostFirewall {
  /** The `firewall` health check as of the last look. */
  health(): HealthCheck;
  /** Removes our rules (stop, `knit down`); idempotent. */
  close(): Promise<void>;
}

/** iptables-legacy tables in this network namespace: rules nft can't show us. */
function readLegacyTables(): string[] {
  const names = new Set<string>();
  for (const f of ['/proc/net/ip_tables_names', '/proc/net/ip6_tables_names']) {
    try {
      for (const n of readFileSync(f, 'utf8').split('\n')) if (n.trim()) names.add(n.trim());
    } catch { /* the module isn't loaded: no legacy tables */ }
  }
  return [...names].sort();
}

const firstLine = (s: string) => s.trim().split('\n')[0] ?? '';

export async function startHostFirewall(
  o: FirewallWant & { mode: FirewallMode },
  d: { clock: Clock; logger: Logger; nft?: NftRunner; legacyTables?: () => string[] },
): Promise<HostFirewall> {
  const nft = d.nft ?? runNft;
  const legacyTables = d.legacyTables ?? readLegacyTables;
  let facts: FirewallFacts = { mode: o.mode, blocking: [], legacyTables: [] };
  let lastLevel: HealthCheck['level'] = 'ok';
  let timer: TimerHandle | undefined;
  let closed = false;
  // A check in flight when close() comes must finish first, or it could put back what close removes.
  let inflight: Promise<void> = Promise.resolve();

  async function list(): Promise<NftChain[] | string> {
    const r = await nft(['-j', 'list', 'ruleset']);
    if (r.code !== 0) return firstLine(r.stderr) || `nft exited ${r.code}`;
    return parseRuleset(r.stdout) ?? 'nft -j printed something that is not a ruleset';
  }

  async function refresh(): Promise<void> {
    let chains = await list();
    let applyError: string | undefined;
    if (typeof chains !== 'string') {
      const script = o.mode === 'on' ? planScript(planFirewall(chains, o), o) : removalScript(chains, o.iface);
      if (script) {
        const r = await nft(['-f', '-'], script);
        if (r.code !== 0) applyError = firstLine(r.stderr);
        else d.logger.info('host firewall rules updated', { script: script.trim().split('\n') });
        chains = await list();
      }
    }
    facts = {
      mode: o.mode, applyError, legacyTables: legacyTables(),
      readError: typeof chains === 'string' ? chains : undefined,
      blocking: typeof chains === 'string' ? [] : blockingInputChains(chains, o),
    };
    const check = firewallHealth(facts, o);
    if (check.level !== 'ok' && check.level !== lastLevel) d.logger.warn('host firewall', { detail: check.detail, fix: check.fix });
    lastLevel = check.level;
  }

  const schedule = () => {
    timer = d.clock.setTimeout(() => {
      inflight = refresh().catch((err: unknown) => d.logger.warn('host firewall check failed', { err: (err as Error).message })).finally(() => {
        if (!closed) schedule();
      });
    }, FIREWALL_RECHECK_MS);
  };

  await refresh();
  schedule();
  return {
    health: () => firewallHealth(facts, o),
    async close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) d.clock.clearTimeout(timer);
      await inflight;
      const chains = await list();
      if (typeof chains === 'string') return;
      const script = removalScript(chains, o.iface);
      if (script) await nft(['-f', '-'], script);
    },
  };
}
