/**
 * `knit bench [all|agent|coordinator|…] [--json]`: Knit's benchmarks. Speed and scale are
 * measured here, never with timed assertions in tests; budgets from the issues
 * are checked and reported loudly (a `budgets` section with pass/fail), not
 * turned into exit codes, because these machines are shared and noisy.
 *
 * The coordinator runs single-process (SQLite) by default; `--replicas R` runs R
 * replicas on a throwaway PostgreSQL server instead, and `all` does both, the
 * replica run at a modest size after the single-process ones
 * (`coordinator.runs` and `coordinator.replicated` side by side in the JSON).
 */
import { intFlag, parseFlags } from '../../shared/cli/args.js';
import { KnitError, isKnitError } from '../../shared/errors.js';
import { benchAgents } from './agent-bench.js';
import { budget, type Budget } from './budget.js';
import { benchCoordinator, benchReplicas } from './coordinator-bench.js';
import { benchConnect, connectBudgets, CONNECT_PAIRS, type ConnectPairName } from './connect-bench.js';
import { coordinatorBudgets, coordinatorSizes, replicaBudgets, COORDINATOR_GOAL_AGENTS, REPLICA_DEFAULT } from './coordinator-budgets.js';
import type { CoordinatorBenchResult, ReplicaBenchResult } from './coordinator-results.js';
import { benchLan } from './lan-bench.js';
import { benchTunnel } from './tunnel-bench.js';
import { benchRelay } from './relay-bench.js';
import { formatHardNatReport, runGrid, runHardNatSeeds } from '../scenarios/grid.js';
import { runScenario, runStorm, SCENARIO_NAMES } from '../scenarios/index.js';

/**
 * Replica runs, one per size; `{skipped}` when PostgreSQL can't be started here (said on
 * stderr), so a machine without it still gets every other figure. A size that fails is
 * reported as a missed budget, as single-process sizes are.
 */
async function replicated(replicas: number, sizes: number[], budgets: Budget[]): Promise<{ runs: ReplicaBenchResult[] } | { skipped: string }> {
  const runs: ReplicaBenchResult[] = [];
  for (const agents of sizes) {
    try {
      const r = await benchReplicas({ replicas, agents });
      if ('skipped' in r) {
        console.error(`knit bench: coordinator replica benchmark skipped: ${r.skipped}`);
        return r;
      }
      runs.push(r);
    } catch (err) {
      console.error(`knit bench: coordinator with ${replicas} replicas at ${agents} agents failed: ${(err as Error).message}`);
      budgets.push(budget(`coordinator ${replicas} replicas × ${agents}: run failed`, 1, 0));
    }
  }
  budgets.push(...replicaBudgets(runs));
  return { runs };
}

export async function runBenchCli(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseFlags(argv.slice(1), {
      json: { type: 'boolean' }, agents: { type: 'string' }, replicas: { type: 'string' }, runs: { type: 'string' }, pairs: { type: 'string' },
    }, true);
    if (values.help) {
      console.log('usage: knit bench [all|agent|coordinator|lan|tunnel|connect|sim|relay] [--agents N[,N…]] [--replicas R] [--runs N] [--pairs P,…] [--json]');
      console.log('  --agents: agents for `agent` (2-32, default 8) or `coordinator` (2-20000 each, default 1000,10000; with --replicas 1000)');
      console.log('  --replicas: `coordinator` as R replicas (2-8) on a throwaway PostgreSQL server, agents spread over them');
      console.log(`  --runs: fresh starts per NAT pair for \`connect\` (1-50, default 10); --pairs: which (${CONNECT_PAIRS.join(',')})`);
      console.log('          rounds of transfers for `tunnel` (1-20, default 5)');
      return 0;
    }
    const which = positionals[0] ?? 'all';
    if (!['all', 'agent', 'coordinator', 'lan', 'tunnel', 'connect', 'sim', 'relay'].includes(which)) throw new KnitError('KNIT_ERR_USAGE', `unknown benchmark "${which}" (all, agent, coordinator, lan, tunnel, connect, sim, relay)`);
    if (values.runs !== undefined && which !== 'connect' && which !== 'tunnel') throw new KnitError('KNIT_ERR_USAGE', '--runs goes with `knit bench connect` or `knit bench tunnel`');
    if (values.pairs !== undefined && which !== 'connect') throw new KnitError('KNIT_ERR_USAGE', '--pairs goes with `knit bench connect`');
    const pairs = values.pairs?.split(',');
    const unknownPair = pairs?.find((p) => !(CONNECT_PAIRS as readonly string[]).includes(p));
    if (unknownPair !== undefined) throw new KnitError('KNIT_ERR_USAGE', `unknown pair "${unknownPair}" (${CONNECT_PAIRS.join(', ')})`);
    if (values.replicas !== undefined && which !== 'coordinator') throw new KnitError('KNIT_ERR_USAGE', '--replicas goes with `knit bench coordinator`');
    const replicas = values.replicas === undefined ? undefined : intFlag(values.replicas, 'replicas', 2, 8, REPLICA_DEFAULT.replicas);
    const sizes = coordinatorSizes(which === 'coordinator' ? values.agents : undefined, replicas === undefined ? undefined : [REPLICA_DEFAULT.agents]);
    const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };
    const budgets: Budget[] = [];
    if (which === 'all' || which === 'coordinator') {
      const coordinator: { runs?: CoordinatorBenchResult[]; replicated?: unknown } = {};
      if (replicas === undefined) {
        const runs: CoordinatorBenchResult[] = [];
        for (const agents of sizes) {
          try {
            runs.push(await benchCoordinator({ agents }));
          } catch (err) {
            // One size failing (EMFILE, a crash) must not lose the other figures: report it as a miss.
            console.error(`knit bench: coordinator at ${agents} agents failed: ${(err as Error).message}`);
            budgets.push(budget(`coordinator ${agents}: run failed`, 1, 0));
          }
        }
        coordinator.runs = runs;
        budgets.push(...coordinatorBudgets(runs, sizes.includes(COORDINATOR_GOAL_AGENTS)));
      }
      if (replicas !== undefined) coordinator.replicated = await replicated(replicas, sizes, budgets);
      else if (which === 'all') coordinator.replicated = await replicated(REPLICA_DEFAULT.replicas, [REPLICA_DEFAULT.agents], budgets);
      report.coordinator = coordinator;
    }
    if (which === 'all' || which === 'agent') {
      const agent = await benchAgents(intFlag(which === 'agent' ? values.agents : undefined, 'agents', 2, 32, 8));
      report.agent = agent;
      budgets.push(budget('agent: peer appears → authenticated pong, p50 (ms)', agent.appearToPongP50Ms, 1000));
      budgets.push(budget('agent: peer appears → authenticated pong, p95 (ms)', agent.appearToPongP95Ms, 3000));
      budgets.push(budget('agent: pairs not connected', agent.pairs - agent.pairsConnected, 0));
    }
    if (which === 'all' || which === 'lan') {
      const lan = await benchLan(10);
      report.lan = lan;
      budgets.push(budget('lan: same-LAN peer found by mDNS and used (lan path both ways), p95 (ms)', lan.foundAndUsedP95Ms, 2000));
      budgets.push(budget('lan: rounds not connected', lan.rounds - lan.roundsConnected, 0));
    }
    if (which === 'all' || which === 'sim') {
      const t0 = performance.now();
      const cells = await runGrid(1);
      const scenarios = [];
      for (const name of SCENARIO_NAMES.filter((n) => n !== 'storm')) scenarios.push(await runScenario(name, 1));
      const gridAndScenariosMs = Math.round(performance.now() - t0);
      const storm = await runStorm(1000, 1);
      // Hard-NAT probing (agent/disco/hard-nat.ts) over many seeds: how often, how fast, how many probes.
      const hardEasy = await runHardNatSeeds('hard', 'easy', Array.from({ length: 100 }, (_, i) => 7000 + i));
      const hardSeqEasy = await runHardNatSeeds('hard-seq', 'easy', Array.from({ length: 50 }, (_, i) => 8000 + i));
      if (!values.json) for (const r of [hardEasy, hardSeqEasy]) console.log(formatHardNatReport(r));
      report.sim = {
        hardNat: { hardEasy, hardSeqEasy },
        gridAndScenariosWallMs: gridAndScenariosMs, gridCellsAsExpected: cells.filter((c) => c.path === c.expected).length, gridCells: cells.length,
        scenariosOk: scenarios.filter((x) => x.ok).length, scenarios: scenarios.length, storm1000: { wallMs: storm.wallMs, ok: storm.ok, convergedVirtualMs: storm.timeMs, ...storm.details },
      };
      budgets.push(budget('sim: grid + scenarios wall time (ms)', gridAndScenariosMs, 120_000));
      budgets.push(budget('sim: 1,000-agent storm wall time (ms)', storm.wallMs, 60_000));
      budgets.push(budget('sim: hard ↔ easy seeds not direct (%, goal ≤ 2)', Number(((1 - hardEasy.rate) * 100).toFixed(1)), 2));
      budgets.push(budget('sim: hard-seq ↔ easy seeds not direct (%, goal ≤ 2)', Number(((1 - hardSeqEasy.rate) * 100).toFixed(1)), 2));
      budgets.push(budget('sim: grid cells off their expected path', cells.length - cells.filter((c) => c.path === c.expected).length, 0));
    }
    if (which === 'all' || which === 'relay') {
      const relay = await benchRelay();
      report.relay = relay;
      budgets.push(budget('relay: peer appears → first relayed packet, p50 (ms)', relay.firstPacket.p50Ms, 300));
      budgets.push(budget('relay: pairs without a relayed packet', relay.firstPacket.pairs - relay.firstPacket.delivered, 0));
      budgets.push(budget('relay: direct possible → path direct (virtual ms)', relay.upgrade.upgradeMs ?? Infinity, 5000));
    }
    if (which === 'all' || which === 'tunnel') {
      const tunnel = await benchTunnel({ rounds: intFlag(which === 'tunnel' ? values.runs : undefined, 'runs', 1, 20, 5) });
      report.tunnel = tunnel;
      if (tunnel.skipped) console.error(`knit bench: tunnel benchmark skipped: ${tunnel.skipped}`);
      else {
        // Goal: shared ≥ 95% of bare wireguard-go; expressed as a shortfall so every budget reads "value ≤ limit".
        budgets.push(budget('tunnel: shared-mode shortfall vs bare wireguard-go (1 - ratio)', Number((1 - tunnel.sharedVsBare!).toFixed(3)), 0.05));
      }
    }
    if (which === 'all' || which === 'connect') {
      const connect = await benchConnect({
        runs: intFlag(values.runs, 'runs', 1, 50, 10), pairs: pairs as ConnectPairName[] | undefined,
        progress: values.json ? undefined : (line) => console.error(line),
      });
      report.connect = connect;
      if (connect.skipped) console.error(`knit bench: connect benchmark skipped: ${connect.skipped}`);
      else {
        if (connect.nebulaSkipped) console.error(`knit bench: connect: Nebula not run: ${connect.nebulaSkipped}`);
        budgets.push(...connectBudgets(connect));
      }
    }
    report.budgets = budgets;
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else for (const b of budgets) console.log(`${b.ok ? 'ok  ' : 'MISS'} ${b.name}: ${b.value} (budget ${b.limit})`);
    for (const b of budgets) if (!b.ok) console.error(`BUDGET MISSED: ${b.name}: ${b.value} > ${b.limit}`);
    return 0;
  } catch (err) {
    if (!isKnitError(err)) throw err;
    console.error(`knit bench: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}
