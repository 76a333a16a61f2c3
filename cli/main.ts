/**
 * The `knit` command line: dispatches a command to the part of Knit that owns
 * it and loads only that part (the coordinator never loads agent code and vice
 * versa). Exit codes are the same for every command: 0 success, 1 operational
 * failure (unreachable coordinator, bad token, engine error), 2 usage error.
 */
import { readFileSync } from 'node:fs';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

type Runner = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<Runner> }> = {
  coordinator: { summary: 'run the coordinator (HTTP + control WebSocket + STUN)', load: async () => (await import('../coordinator/cli.js')).runCoordinatorCli },
  token: { summary: 'create, list or revoke join tokens', load: async () => (await import('../coordinator/cli.js')).runCoordinatorCli },
  nodes: { summary: 'list or remove nodes', load: async () => (await import('../coordinator/cli.js')).runCoordinatorCli },
  relay: { summary: 'run a relay on its own (the coordinator runs one by default)', load: async () => (await import('../relay/cli.js')).runRelayCli },
  up: { summary: 'join the mesh and keep paths to every peer', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  down: { summary: 'leave the mesh cleanly (stops a running agent)', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  status: { summary: 'show this node, its peers and their paths', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  netcheck: { summary: 'report UDP reachability and NAT behaviour', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  doctor: { summary: 'check what makes this node fail silently (ok / warn / fail, and what to do)', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  ping: { summary: 'disco-ping a peer and show the path each reply took', load: async () => (await import('../agent/cli/main.js')).runAgentCli },
  sim: { summary: 'run the deterministic network simulator (grid, scenarios, scale)', load: async () => (await import('../sim/cli.js')).runSimCli },
  bench: { summary: 'run benchmarks (JSON with --json)', load: async () => (await import('../sim/bench/cli.js')).runBenchCli },
  'install-service': { summary: 'write a systemd unit for the coordinator or the agent', load: async () => (await import('./service.js')).runServiceCli },
};

/** Every command, for `knit --help`, docs/cli.md and the CLI contract test. */
export const COMMAND_NAMES = Object.keys(COMMANDS);

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return ['usage: knit <command> [flags]', '', 'commands:', ...rows, '', 'knit help <command> shows a command\'s flags; knit --version prints the version.'].join('\n');
}

export async function runCli(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h') {
    console.log(usage());
    return cmd === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (cmd === '--version' || cmd === 'version') {
    console.log(version());
    return EXIT_OK;
  }
  if (cmd === 'help') {
    const target = rest[0];
    if (!target) {
      console.log(usage());
      return EXIT_OK;
    }
    const c = COMMANDS[target];
    if (!c) {
      console.error(`knit: unknown command "${target}"`);
      return EXIT_USAGE;
    }
    return (await c.load())([target, '--help']);
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`knit: unknown command "${cmd}" (knit --help lists commands)`);
    return EXIT_USAGE;
  }
  return (await c.load())([cmd, ...rest]);
}
