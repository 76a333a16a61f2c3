/**
 * The process seams the real engines use: run a command (`ip`, `wg`) and
 * start a long-lived one (wireguard-go). Always argument arrays, never a shell
 * string, and never a secret in argv (any user can read argv in /proc). Seams,
 * so that the lab runs the very same engine code inside a network namespace
 * (`ip netns exec NS …`) and a test can watch what was run.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin (`ip -batch -` reads its commands there). */
  input?: string;
}

/** Runs a command to completion; rejects with ExecError on a non-zero exit. */
export type ExecFn = (argv: string[], options?: ExecOptions) => Promise<ExecResult>;

/** Starts a long-lived process with extra environment variables. */
export type SpawnFn = (argv: string[], env: Record<string, string>) => ChildProcess;

/** A command that failed. The message names the program and its stderr, never its stdin. */
export class ExecError extends Error {
  readonly program: string;
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(program: string, exitCode: number | undefined, stderr: string, options?: { cause?: unknown }) {
    super(`${program} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${stderr.trim().slice(0, 500) || 'no output'}`, options);
    this.name = 'ExecError';
    this.program = program;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** `ip` and `wg` finish in milliseconds; ten seconds means something is stuck. */
export const EXEC_TIMEOUT_MS = 10_000;
/** `wg show dump` of a large mesh is ~200 bytes per peer. */
export const EXEC_MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export const execCommand: ExecFn = (argv, options = {}) =>
  new Promise((resolve, reject) => {
    const [program, ...args] = argv;
    if (!program) throw new TypeError('argv is empty');
    const child = execFile(
      program,
      args,
      { timeout: EXEC_TIMEOUT_MS, maxBuffer: EXEC_MAX_OUTPUT_BYTES, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const code = typeof err.code === 'number' ? err.code : undefined;
        reject(new ExecError(program, code, stderr || String(err.code ?? err.message), { cause: err }));
      },
    );
    child.stdin?.on('error', () => {}); // a command that exits without reading stdin: EPIPE is not our failure
    child.stdin?.end(options.input ?? '');
  });

export const spawnCommand: SpawnFn = (argv, env) => {
  const [program, ...args] = argv;
  if (!program) throw new TypeError('argv is empty');
  return spawn(program, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
};
