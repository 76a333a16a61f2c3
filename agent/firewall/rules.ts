/**
 * The host's own input firewall, as Knit sees it (docs/firewall.md). Pure: the
 * shell hands in `nft -j list ruleset` output and gets back the nft commands to
 * run and the health check to report.
 *
 * Many servers drop unsolicited input (policy drop, established/related
 * accepted). That drops a peer's traffic arriving on the tunnel interface and
 * the peers' punches, WireGuard and disco on the tunnel port. An `accept` in a
 * table of our own would not help: every base chain at the input hook runs, and
 * a drop in any of them is final. So, like Tailscale, Knit inserts two narrow
 * accept rules at the top of each input base chain that can drop (families ip,
 * ip6, inet; iptables-nft's `ip filter INPUT` included), each carrying the
 * comment `knit:<iface>` so it is recognised, removed by handle at stop, and
 * cleaned up at the next start after a crash. This module does not see
 * iptables-legacy rules (they live outside nftables); the shell reports them.
 */
import type { HealthCheck } from '../health.js';

export type ChainFamily = 'ip' | 'ip6' | 'inet';

/** A chain of the ruleset, with its rules in order. `hook` and `policy` only for base chains. */
export interface NftChain {
  family: string;
  table: string;
  name: string;
  hook?: string;
  type?: string;
  policy?: string;
  rules: NftRule[];
}

export interface NftRule {
  handle: number;
  comment?: string;
  expr: unknown[];
}

/** An input base chain that can drop what the tunnel needs, and what it already admits. */
export interface InputChain {
  family: ChainFamily;
  table: string;
  chain: string;
  /** Before any drop: a rule accepting the tunnel interface / UDP to the tunnel port (ours or the admin's). */
  admitsIface: boolean;
  admitsPort: boolean;
}

export interface FirewallWant {
  iface: string;
  tunnelPort: number;
}

/** What to change so each blocking input chain admits the tunnel, and nothing of ours lingers elsewhere. */
export interface FirewallPlan {
  /** Rules of ours to delete: stale ones (another port, a chain that no longer blocks). */
  remove: { family: string; table: string; chain: string; handle: number }[];
  /** Rules to insert at the top of a chain. */
  insert: { family: ChainFamily; table: string; chain: string; rule: string }[];
}

const FAMILIES: readonly string[] = ['ip', 'ip6', 'inet'];
// nft 1.0 takes table and chain names only unquoted, as its scanner's plain strings.
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_.-]{0,255}$/;

/** The comment that marks our rules for one tunnel interface. */
export function ruleMarker(iface: string): string {
  return `knit:${iface}`;
}

function checkWant(w: FirewallWant): void {
  if (!/^[A-Za-z0-9_-]{1,15}$/.test(w.iface)) throw new RangeError(`bad interface name ${w.iface}`);
  if (!Number.isInteger(w.tunnelPort) || w.tunnelPort < 1 || w.tunnelPort > 65535) throw new RangeError('tunnelPort must be in 1..65535');
}

/** The two accept rules, in nft syntax, without the comment (also what `--firewall off` users are told to add). */
export function acceptRules(w: FirewallWant): string[] {
  checkWant(w);
  return [`iifname "${w.iface}" accept`, `udp dport ${w.tunnelPort} accept`];
}

const obj = (v: unknown): Record<string, unknown> | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : undefined);

/** Decodes `nft -j list ruleset` into chains; undefined for anything that isn't that document. */
export function parseRuleset(json: string): NftChain[] | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return undefined;
  }
  const items = obj(doc)?.nftables;
  if (!Array.isArray(items)) return undefined;
  const chains = new Map<string, NftChain>();
  const key = (family: unknown, table: unknown, name: unknown) => `${String(family)}\0${String(table)}\0${String(name)}`;
  for (const item of items) {
    const c = obj(obj(item)?.chain);
    if (c && typeof c.family === 'string' && typeof c.table === 'string' && typeof c.name === 'string') {
      chains.set(key(c.family, c.table, c.name), {
        family: c.family, table: c.table, name: c.name, rules: [],
        hook: typeof c.hook === 'string' ? c.hook : undefined,
        type: typeof c.type === 'string' ? c.type : undefined,
        policy: typeof c.policy === 'string' ? c.policy : undefined,
      });
    }
    const r = obj(obj(item)?.rule);
    if (r && typeof r.handle === 'number' && Array.isArray(r.expr)) {
      chains.get(key(r.family, r.table, r.chain))?.rules.push({ handle: r.handle, comment: typeof r.comment === 'string' ? r.comment : undefined, expr: r.expr });
    }
  }
  return [...chains.values()];
}

type Verdict = 'accept' | 'stop' | 'jump' | undefined;

/** The rule's verdict: accept; stop (drop, reject); jump/goto (into a chain that may drop); none. */
function verdictOf(rule: NftRule): { verdict: Verdict; target?: string } {
  for (const e of rule.expr) {
    const o = obj(e);
    if (!o) continue;
    if ('accept' in o) return { verdict: 'accept' };
    if ('drop' in o || 'reject' in o) return { verdict: 'stop' };
    for (const k of ['jump', 'goto']) {
      const t = obj(o[k])?.target;
      if (typeof t === 'string') return { verdict: 'jump', target: t };
    }
  }
  return { verdict: undefined };
}

/** The rule's matches, without counters and the verdict. */
function matchesOf(rule: NftRule): Record<string, unknown>[] {
  return rule.expr.map(obj).filter((o): o is Record<string, unknown> => o !== undefined && 'match' in o).map((o) => obj(o.match)!).filter(Boolean);
}

function isEq(m: Record<string, unknown>): boolean {
  return m.op === '==' || m.op === undefined;
}

/** An accept rule whose only match is the tunnel interface (iifname or iif). */
function acceptsIface(rule: NftRule, iface: string): boolean {
  const ms = matchesOf(rule);
  if (verdictOf(rule).verdict !== 'accept' || ms.length !== 1) return false;
  const key = obj(obj(ms[0]!.left)?.meta)?.key;
  return isEq(ms[0]!) && (key === 'iifname' || key === 'iif') && ms[0]!.right === iface;
}

/** An accept rule matching UDP to the tunnel port and nothing else (a `meta l4proto udp` beside it is fine). */
function acceptsPort(rule: NftRule, port: number): boolean {
  if (verdictOf(rule).verdict !== 'accept') return false;
  let port_ = false;
  for (const m of matchesOf(rule)) {
    const payload = obj(obj(m.left)?.payload);
    const meta = obj(obj(m.left)?.meta);
    if (isEq(m) && payload?.protocol === 'udp' && payload.field === 'dport' && m.right === port) port_ = true;
    else if (!(isEq(m) && meta?.key === 'l4proto' && m.right === 'udp')) return false;
  }
  return port_;
}

/** Whether the chain, or any chain it jumps or goes to (same table), can drop or reject. */
function canDrop(chain: NftChain, byName: Map<string, NftChain>, seen = new Set<string>()): boolean {
  if (seen.has(chain.name)) return false;
  seen.add(chain.name);
  if (chain.policy === 'drop') return true;
  for (const r of chain.rules) {
    const v = verdictOf(r);
    if (v.verdict === 'stop') return true;
    if (v.verdict === 'jump' && v.target) {
      const next = byName.get(v.target);
      if (next && canDrop(next, byName, seen)) return true;
    }
  }
  return false;
}

/** The input base chains (filter type; families ip, ip6, inet) that can drop the tunnel's traffic. */
export function blockingInputChains(chains: readonly NftChain[], w: FirewallWant): InputChain[] {
  checkWant(w);
  const out: InputChain[] = [];
  for (const c of chains) {
    if (c.hook !== 'input' || c.type !== 'filter' || !FAMILIES.includes(c.family)) continue;
    const byName = new Map(chains.filter((x) => x.family === c.family && x.table === c.table).map((x) => [x.name, x]));
    if (!canDrop(c, byName)) continue;
    let admitsIface = false;
    let admitsPort = false;
    // Only rules before the first one that can stop or divert the packet count.
    for (const r of c.rules) {
      const v = verdictOf(r).verdict;
      if (v === 'stop' || v === 'jump') break;
      admitsIface ||= acceptsIface(r, w.iface);
      admitsPort ||= acceptsPort(r, w.tunnelPort);
    }
    out.push({ family: c.family as ChainFamily, table: c.table, chain: c.name, admitsIface, admitsPort });
  }
  return out;
}

/**
 * The changes that leave exactly our two rules at the top of every blocking input chain:
 * stale rules of ours (another port, a chain that no longer blocks, a duplicate) go, and
 * missing ones are inserted. An admin's own rule that already admits the tunnel counts.
 * Chains whose names nft can't take as written are left alone (the health check names them).
 */
export function planFirewall(chains: readonly NftChain[], w: FirewallWant): FirewallPlan {
  const marker = ruleMarker(w.iface);
  const ours = chains.flatMap((c) => c.rules.filter((r) => r.comment === marker).map((r) => ({ c, r })));
  const keep = new Set<NftRule>();
  const found = new Map<NftChain, { iface: boolean; port: boolean }>();
  const blockingOnly = blockingInputChains(
    chains.map((c) => ({ ...c, rules: c.rules.filter((r) => r.comment !== marker) })), w,
  );
  const isBlocking = (c: NftChain) => blockingOnly.some((b) => b.family === c.family && b.table === c.table && b.chain === c.name);
  for (const { c, r } of ours) {
    if (!isBlocking(c)) continue;
    const f = found.get(c) ?? { iface: false, port: false };
    if (!f.iface && acceptsIface(r, w.iface)) { f.iface = true; keep.add(r); }
    else if (!f.port && acceptsPort(r, w.tunnelPort)) { f.port = true; keep.add(r); }
    found.set(c, f);
  }
  const remove = ours.filter(({ r }) => !keep.has(r)).map(({ c, r }) => ({ family: c.family, table: c.table, chain: c.name, handle: r.handle }));
  const [ifaceRule, portRule] = acceptRules(w);
  const insert: FirewallPlan['insert'] = [];
  for (const b of blockingOnly) {
    const chain = chains.find((c) => c.family === b.family && c.table === b.table && c.name === b.chain)!;
    const f = found.get(chain) ?? { iface: false, port: false };
    const ok = IDENTIFIER.test(b.table) && IDENTIFIER.test(b.chain);
    if (ok && !f.iface && !b.admitsIface) insert.push({ family: b.family, table: b.table, chain: b.chain, rule: ifaceRule! });
    if (ok && !f.port && !b.admitsPort) insert.push({ family: b.family, table: b.table, chain: b.chain, rule: portRule! });
  }
  return { remove, insert };
}

/** The plan as one `nft -f -` script (applied atomically); empty when nothing changes. */
export function planScript(plan: FirewallPlan, w: FirewallWant): string {
  const marker = ruleMarker(w.iface);
  return [
    ...plan.remove.map((r) => `delete rule ${r.family} ${r.table} ${r.chain} handle ${r.handle}`),
    // counter: the admin sees what the rule admits (as iptables-nft rules do); insert puts it first.
    ...plan.insert.map((i) => `insert rule ${i.family} ${i.table} ${i.chain} ${i.rule.replace(/ accept$/, ' counter accept')} comment "${marker}"`),
  ].map((l) => l + '\n').join('');
}

/** Deletes every rule of ours for this interface (stop, `knit down`). */
export function removalScript(chains: readonly NftChain[], iface: string): string {
  const marker = ruleMarker(iface);
  return chains.filter((c) => IDENTIFIER.test(c.table) && IDENTIFIER.test(c.name)).flatMap((c) => c.rules.filter((r) => r.comment === marker)
    .map((r) => `delete rule ${c.family} ${c.table} ${c.name} handle ${r.handle}\n`)).join('');
}

const chainName = (c: { family: string; table: string; chain: string }) => `${c.family} ${c.table} ${c.chain}`;

/** What a person runs to open the tunnel in the chains that block it. */
export function fixCommands(chains: readonly InputChain[], w: FirewallWant): string {
  const [ifaceRule, portRule] = acceptRules(w);
  return chains.flatMap((c) => [
    ...(c.admitsIface ? [] : [`nft insert rule ${chainName(c)} ${ifaceRule}`]),
    ...(c.admitsPort ? [] : [`nft insert rule ${chainName(c)} ${portRule}`]),
  ]).join('; ');
}

/** What the shell learned, for the health check. */
export interface FirewallFacts {
  mode: 'on' | 'off';
  /** The ruleset could not be read (no nft, not root): the error. */
  readError?: string;
  /** The blocking chains as they stand now (after our rules, when on). */
  blocking: InputChain[];
  /** Our script failed: nft's error. */
  applyError?: string;
  /** iptables-legacy tables present in this network namespace (/proc/net/ip{,6}_tables_names). */
  legacyTables: string[];
}

/**
 * The `firewall` health check: ok when nothing blocks or the tunnel is admitted (saying where);
 * fail when a chain drops the tunnel's traffic and nothing admits it (off, or our rules failed),
 * with the exact commands; warn when Knit can't see (unreadable ruleset, iptables-legacy).
 */
export function firewallHealth(f: FirewallFacts, w: FirewallWant): HealthCheck {
  const [ifaceRule, portRule] = acceptRules(w);
  const open = f.blocking.filter((c) => !c.admitsIface || !c.admitsPort);
  if (open.length > 0) {
    const why = f.mode === 'off'
      ? '--firewall off'
      : f.applyError ? `Knit could not add its accept rules: ${f.applyError}` : 'Knit could not add its accept rules (chain name)';
    return {
      check: 'firewall', level: 'fail',
      detail: `input chain ${open.map(chainName).join(', ')} drops the mesh's traffic on ${w.iface} or UDP port ${w.tunnelPort} (${why})`,
      fix: fixCommands(open, w),
    };
  }
  if (f.readError) {
    return {
      check: 'firewall', level: 'warn', detail: `cannot read the host firewall (${f.readError})`,
      fix: `make sure the input firewall accepts: ${ifaceRule}; ${portRule}`,
    };
  }
  if (f.legacyTables.length > 0) {
    return {
      check: 'firewall', level: 'warn',
      detail: `iptables-legacy tables (${f.legacyTables.join(', ')}) are present and Knit cannot read them`,
      fix: `if their INPUT chain drops, add: iptables -I INPUT -i ${w.iface} -j ACCEPT; iptables -I INPUT -p udp --dport ${w.tunnelPort} -j ACCEPT (and the same with ip6tables)`,
    };
  }
  if (f.blocking.length === 0) return { check: 'firewall', level: 'ok', detail: 'no input firewall chain drops the tunnel\'s traffic' };
  return {
    check: 'firewall', level: 'ok',
    detail: `${f.mode === 'on' ? 'Knit\'s scoped accept rules' : 'the admin\'s rules'} admit ${w.iface} and UDP port ${w.tunnelPort} in ${f.blocking.map(chainName).join(', ')}`,
  };
}
