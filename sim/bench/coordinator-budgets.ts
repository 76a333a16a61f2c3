/**
 * The coordinator benchmark's sizes and what its results are held to, as `knit bench`
 * reports them: the scale issue's timing and memory budgets for one coordinator, and
 * correctness only for replicas (their figures are reported beside, not judged).
 */
import { KnitError } from '../../shared/errors.js';
import { budget, type Budget } from './budget.js';
import type { CoordinatorBenchResult, ReplicaBenchResult } from './coordinator-results.js';

const MEMORY_BUDGET_MIN_AGENTS = 5000;

/** The coordinator's scale target (issue: 10,000 connected agents on a 2-core machine) and the sizes `all` runs. */
export const COORDINATOR_GOAL_AGENTS = 10_000;
const COORDINATOR_DEFAULT_SIZES = [1000, 10_000];

/**
 * The replica run `all` makes after the single-process ones: modest, about a minute on 2
 * cores, where every replica, PostgreSQL and the load generators share the machine.
 */
export const REPLICA_DEFAULT = { replicas: 2, agents: 1000 } as const;

/** `--agents` for the coordinator bench: one size or a comma-separated list (e.g. 1000,10000). */
export function coordinatorSizes(value: string | undefined, fallback: number[] = COORDINATOR_DEFAULT_SIZES): number[] {
  if (value === undefined) return fallback;
  const sizes = value.split(',').map((x) => x.trim());
  if (sizes.length > 4 || !sizes.every((x) => /^[0-9]+$/.test(x) && Number(x) >= 2 && Number(x) <= 20_000)) {
    throw new KnitError('KNIT_ERR_USAGE', '--agents must be a whole number from 2 to 20000, or a comma-separated list of up to four');
  }
  return sizes.map(Number);
}

export function coordinatorBudgets(runs: CoordinatorBenchResult[], goal: boolean): Budget[] {
  const out: Budget[] = [];
  for (const r of runs) {
    const n = r.agents;
    out.push(budget(`coordinator ${n}: agents that never held a map`, n - r.connected, 0));
    // Measured over the second half of the agents; below a few thousand that half is too small
    // against fixed costs that come with any load (V8 growing its young generation by ~30 MB).
    if (n >= MEMORY_BUDGET_MIN_AGENTS) out.push(budget(`coordinator ${n}: memory per agent (bytes)`, r.bytesPerAgent, 5 * 1024));
    // Fan-out: ≤ 100 ms p99 at 1,000 agents, ≤ 1 s at 10,000 (the two points).
    out.push(budget(`coordinator ${n}: fan-out p99 (ms)`, r.fanoutP99Ms, n <= 1000 ? 100 : 1000));
    out.push(budget(`coordinator ${n}: fan-out deliveries missed`, r.fanoutMissed, 0));
    out.push(budget(`coordinator ${n}: bytes of one endpoint change`, r.deltaBytesPerEndpointChange, 200));
    out.push(budget(`coordinator ${n}: agents not on the current map after the reconnect storm`, r.connected - r.reconnectStormHeld, 0));
  }
  // Proportionality: ten times the nodes may cost at most twelve times the coordinator's time per change.
  for (const small of runs) {
    const big = runs.find((r) => r.agents === small.agents * 10);
    if (big) out.push(budget(`coordinator: time per change at ${big.agents} ÷ at ${small.agents}`, Number((big.perChangeMs / small.perChangeMs).toFixed(2)), 12));
  }
  if (goal) out.push(budget(`coordinator: agents held at once, short of ${COORDINATOR_GOAL_AGENTS}`, COORDINATOR_GOAL_AGENTS - Math.max(0, ...runs.map((r) => r.connected)), 0));
  return out;
}

/**
 * What replica runs are held to: correctness only — every agent on the map, every change
 * at every agent on every replica, one version everywhere. The timing budgets are
 * for one coordinator; replica figures are reported next to them, not judged.
 */
export function replicaBudgets(runs: ReplicaBenchResult[]): Budget[] {
  const out: Budget[] = [];
  for (const r of runs) {
    const name = `coordinator ${r.replicas} replicas × ${r.agents}`;
    out.push(budget(`${name}: agents that never held a map`, r.agents - r.connected, 0));
    out.push(budget(`${name}: fan-out deliveries missed (all replicas)`, r.fanoutMissed, 0));
    out.push(budget(`${name}: bytes of one endpoint change`, r.deltaBytesPerEndpointChange, 200));
    out.push(budget(`${name}: agents not on the current map after the reconnect storm`, r.connected - r.reconnectStormHeld, 0));
    out.push(budget(`${name}: replicas at a version other than the first's, at the end`, r.versions.filter((v) => v !== r.versions[0]).length, 0));
  }
  return out;
}
