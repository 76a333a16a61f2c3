#!/usr/bin/env node
// The `knit` command: a thin dispatcher that loads only the part a command
// needs (the coordinator, the agent, or the simulator) from the compiled tree.
import { runCli } from '../dist/cli/main.js';

runCli(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    console.error(`knit: ${err && err.message ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
