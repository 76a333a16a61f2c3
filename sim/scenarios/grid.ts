/**
 * The NAT grid: for every pair of NAT types, two real agents behind them,
 * and the path they reach (lan / direct / relay / none) with the virtual time
 * until both sides first held that path. `expectedPath` is the theory the tests hold
 * the grid to.
 */
import type { PathKind, PathState } from '../../agent/status.js';
import { World, type SimAgent } from '../world.js';
import type { SimNat } from '../net.js';

export const GRID_TYPES = ['none', 'easy', 'easy-ad', 'hard', 'one-to-one', 'cgnat'] as const;
/** `hard-seq` (symmetric, sequential ports) is outside the matrix; the many-seed runner measures it. */
export type GridType = (typeof GRID_TYPES)[number] | 'same-lan' | 'hard-seq';

export interface GridCell {
  a: GridType;
  b: GridType;
  path: PathState;
  /** Virtual ms from both agents started to both having an authenticated path; undefined if none. */
  timeMs?: number;
  expected: PathKind;
  /** Why the expected path is `none` (what would fix it), for people reading the table. */
  note?: string;
  /** The direct path depends on hard-NAT port prediction / birthday probing (agent/disco/hard-nat.ts). */
  hardNat?: boolean;
  /** Virtual ms until both sides first held any path (the relay, while hard-NAT probing runs). */
  firstPathMs?: number;
  /** Hard-NAT packets both sides sent (probes + openers) and attempts both started. */
  hardNatProbes?: number;
  hardNatAttempts?: number;
}

/** Virtual time a cell gets; punching retries back off to 30 s, so this sees several rounds. */
export const GRID_CELL_BUDGET_MS = 45_000;

/** What Knit should reach today for a pair, from RFC 4787 reasoning. */
export function expectedPath(a: GridType, b: GridType): { path: PathKind; note?: string; hardNat?: boolean } {
  if (a === 'same-lan' || b === 'same-lan') return { path: 'lan' };
  const reachable = (t: GridType) => t === 'none' || t === 'one-to-one'; // public, no filtering
  if (reachable(a) || reachable(b)) return { path: 'direct' };
  const hard = (t: GridType) => t === 'hard' || t === 'hard-seq';
  if (!hard(a) && !hard(b)) return { path: 'direct' }; // both map endpoint-independently
  const other = hard(a) ? b : a;
  if (other === 'easy-ad') return { path: 'direct' }; // address-dependent filtering admits the hard side's new port
  if (hard(other)) return { path: 'relay', note: 'hard ↔ hard: no punch can meet; the relay carries it' };
  // Port-restricted (easy, cgnat): the easy side must guess the hard side's mapping.
  return { path: 'direct', hardNat: true, note: 'hard ↔ port-restricted: relayed at once, direct after port prediction / birthday probing' };
}

function place(w: World, t: GridType, tag: string, shared?: SimNat) {
  switch (t) {
    case 'none': return w.addHost(`h${tag}`);
    case 'cgnat': {
      const carrier = w.addNat(`cgnat${tag}`, 'easy');
      return w.addHost(`h${tag}`, w.addNat(`home${tag}`, 'easy', carrier));
    }
    case 'same-lan': return w.addHost(`h${tag}`, shared);
    default: return w.addHost(`h${tag}`, w.addNat(`nat${tag}`, t));
  }
}

export async function runGridCell(a: GridType, b: GridType, seed: number): Promise<GridCell> {
  const w = new World({ seed });
  try {
    const shared = a === 'same-lan' ? w.addNat('lan', 'easy') : undefined;
    const ha = place(w, a, 'a', shared);
    const hb = place(w, b, 'b', shared);
    const sa = await w.addAgent('a', ha);
    const sb = await w.addAgent('b', hb);
    // The relay answers first in most cells; run on until both sides hold a direct (or LAN) path,
    // or the budget ends — a relayed pair keeps punching in the background all along.
    const punched = (x: SimAgent, y: SimAgent) => ['lan', 'direct'].includes(w.path(x, y));
    await w.clock.runUntil(w.clock.now() + GRID_CELL_BUDGET_MS, () => punched(sa, sb) && punched(sb, sa));
    const exp = expectedPath(a, b);
    const path = w.path(sa, sb);
    const at = (x: SimAgent, y: SimAgent) => (path.endsWith('(handshaking)') ? undefined : x.pathAt.get(y.nodeKey)?.[path as PathKind]);
    const ta = at(sa, sb);
    const tb = at(sb, sa);
    const first = (x: SimAgent, y: SimAgent) => x.firstPath.get(y.nodeKey);
    const fa = first(sa, sb);
    const fb = first(sb, sa);
    const c = (x: SimAgent) => x.agent.status().counters;
    const probes = (x: SimAgent) => (c(x).hardNatProbes ?? 0) + (c(x).hardNatOpeners ?? 0);
    return {
      a, b, path, expected: exp.path, note: exp.note,
      timeMs: path !== 'none' && ta !== undefined && tb !== undefined ? Math.max(ta, tb) : undefined,
      ...(exp.hardNat && {
        hardNat: true, firstPathMs: fa !== undefined && fb !== undefined ? Math.max(fa, fb) : undefined,
        hardNatProbes: probes(sa) + probes(sb), hardNatAttempts: (c(sa).hardNatAttempts ?? 0) + (c(sb).hardNatAttempts ?? 0),
      }),
    };
  } finally {
    await w.stop();
  }
}

export async function runGrid(seed = 1): Promise<GridCell[]> {
  const cells: GridCell[] = [];
  for (let i = 0; i < GRID_TYPES.length; i++) {
    for (let j = i; j < GRID_TYPES.length; j++) cells.push(await runGridCell(GRID_TYPES[i]!, GRID_TYPES[j]!, seed * 1000 + i * 10 + j));
  }
  cells.push(await runGridCell('same-lan', 'same-lan', seed * 1000 + 99));
  return cells;
}

/** What the many-seed runner measured for one pair of NAT types. */
export interface HardNatSeedReport {
  a: GridType;
  b: GridType;
  seeds: number;
  direct: number;
  /** direct / seeds. */
  rate: number;
  /** Seeds that met in the first attempt (one attempt per side). */
  firstAttempt: number;
  /** Virtual ms to a direct path: median and 95th percentile of the seeds that got one. */
  timeP50Ms?: number;
  timeP95Ms?: number;
  /** Hard-NAT packets (both sides, all attempts) per seed: mean and max. Per attempt it is at most 1,024. */
  probesMean: number;
  probesMax: number;
  /** Seeds whose relay path was not up before probing ended (no user packet waits): should be 0. */
  relayLate: number;
  failedSeeds: number[];
}

/**
 * Runs one pair over many seeds and reports how often hard-NAT probing made it direct within
 * the cell budget, how fast, and with how many probes. Used by the grid test and `knit bench sim`.
 */
export async function runHardNatSeeds(a: GridType, b: GridType, seeds: readonly number[]): Promise<HardNatSeedReport> {
  const cells: GridCell[] = [];
  for (const seed of seeds) cells.push(await runGridCell(a, b, seed));
  const ok = cells.filter((c) => c.path === 'direct');
  const times = ok.map((c) => c.timeMs ?? Infinity).sort((x, y) => x - y);
  const pct = (q: number) => (times.length ? times[Math.min(times.length - 1, Math.floor(q * times.length))] : undefined);
  const probes = cells.map((c) => c.hardNatProbes ?? 0);
  return {
    a, b, seeds: cells.length, direct: ok.length, rate: cells.length ? ok.length / cells.length : 0,
    firstAttempt: ok.filter((c) => (c.hardNatAttempts ?? 0) <= 2).length,
    timeP50Ms: pct(0.5), timeP95Ms: pct(0.95),
    probesMean: Math.round(probes.reduce((x, y) => x + y, 0) / Math.max(1, probes.length)), probesMax: Math.max(0, ...probes),
    relayLate: cells.filter((c) => c.firstPathMs === undefined || (c.timeMs !== undefined && c.firstPathMs > c.timeMs)).length,
    failedSeeds: cells.flatMap((c, i) => (c.path === 'direct' ? [] : [seeds[i]!])),
  };
}

export function formatHardNatReport(r: HardNatSeedReport): string {
  return `${r.a} ↔ ${r.b}: direct in ${r.direct}/${r.seeds} seeds (${(r.rate * 100).toFixed(1)}%; ${r.firstAttempt} in the first attempt), ` +
    `p50 ${r.timeP50Ms ?? '-'} ms p95 ${r.timeP95Ms ?? '-'} ms, probes mean ${r.probesMean} max ${r.probesMax}` +
    (r.failedSeeds.length ? `; failed seeds ${r.failedSeeds.join(',')}` : '');
}

export function formatGrid(cells: GridCell[]): string {
  const types = [...GRID_TYPES];
  const cell = (a: string, b: string) => cells.find((c) => (c.a === a && c.b === b) || (c.a === b && c.b === a));
  const w = 18;
  const lines = [''.padEnd(12) + types.map((t) => t.padEnd(w)).join('')];
  for (const a of types) {
    lines.push(a.padEnd(12) + types.map((b) => {
      const c = cell(a, b)!;
      const mark = c.path === c.expected ? '' : '!';
      return `${c.path}${c.timeMs === undefined ? '' : ` ${c.timeMs}ms`}${mark}`.padEnd(w);
    }).join(''));
  }
  const lan = cell('same-lan', 'same-lan');
  if (lan) lines.push('', `same LAN: ${lan.path}${lan.timeMs === undefined ? '' : ` ${lan.timeMs}ms`}`);
  const none = cells.filter((c) => c.path === 'none');
  if (none.length) lines.push('', `${none.length} pair(s) without a path:`, ...none.map((c) => `  ${c.a} ↔ ${c.b}: ${c.note ?? 'unexpected'}`));
  const relayed = cells.filter((c) => c.path === 'relay');
  if (relayed.length) lines.push('', `${relayed.length} pair(s) relayed:`, ...relayed.map((c) => `  ${c.a} ↔ ${c.b}: ${c.note ?? 'unexpected'}`));
  const wrong = cells.filter((c) => c.path !== c.expected);
  if (wrong.length) lines.push('', `! ${wrong.length} cell(s) differ from the expected path`);
  return lines.join('\n');
}
