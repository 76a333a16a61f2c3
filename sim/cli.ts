/**
 * `knit sim`: the deterministic simulator from the command line.
 *
 *   knit sim grid [--json] [--seed N]        the NAT × NAT matrix of paths and times
 *   knit sim scenario NAME [--seed N]        one scenario (roaming, renumber, expiry, outage, outage-restart, lan, lan-outage, loss, storm)
 *   knit sim scale --agents N [--seed N]     N agents join at once
 */
import { intFlag, parseFlags } from '../shared/cli/args.js';
import { KnitError, isKnitError } from '../shared/errors.js';
import { formatGrid, runGrid } from './scenarios/grid.js';
import { runScenario, runStorm, SCENARIO_NAMES } from './scenarios/index.js';

const HELP = `usage: knit sim grid [--json] [--seed N]
       knit sim scenario NAME [--seed N]      (${SCENARIO_NAMES.join(', ')})
       knit sim scale --agents N [--seed N]`;

export async function runSimCli(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseFlags(argv.slice(1), { json: { type: 'boolean' }, seed: { type: 'string' }, agents: { type: 'string' } }, true);
    if (values.help) return console.log(HELP), 0;
    const seed = intFlag(values.seed, 'seed', 0, 2 ** 31, 1);
    const [sub, name] = positionals;
    if (sub === 'grid') {
      const t0 = performance.now();
      const cells = await runGrid(seed);
      const wallMs = Math.round(performance.now() - t0);
      if (values.json) console.log(JSON.stringify({ seed, wallMs, cells }, null, 2));
      else console.log(`${formatGrid(cells)}\n\n(seed ${seed}, ${wallMs} ms wall)`);
      return cells.every((c) => c.path === c.expected) ? 0 : 1;
    }
    if (sub === 'scenario') {
      if (!name || !SCENARIO_NAMES.includes(name)) throw new KnitError('KNIT_ERR_USAGE', `scenario must be one of ${SCENARIO_NAMES.join(', ')}`);
      const r = await runScenario(name, seed);
      console.log(JSON.stringify(r, null, 2));
      return r.ok ? 0 : 1;
    }
    if (sub === 'scale') {
      const r = await runStorm(intFlag(values.agents, 'agents', 2, 1000, 1000), seed);
      console.log(JSON.stringify(r, null, 2));
      return r.ok ? 0 : 1;
    }
    throw new KnitError('KNIT_ERR_USAGE', HELP);
  } catch (err) {
    if (!isKnitError(err)) throw err;
    console.error(`knit sim: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}
