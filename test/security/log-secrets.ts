/**
 * What tests tell the secrets scan (scripts/scan-secrets.mjs, run by
 * scripts/run-tests.mjs after every `npm test`): the secrets they minted, and the
 * logs of the processes they ran. Outside run-tests (no KNIT_TEST_* variables)
 * both are no-ops, so a test file still runs on its own with `node --test`.
 * Any test may use these; the scan fails the run when a registered secret, or
 * anything shaped like a token or private key, shows up in a saved log.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Lists secrets (tokens, base64 or hex keys) the scan must never find in a log. */
export function registerSecret(...values: (string | undefined | null)[]): void {
  const file = process.env.KNIT_TEST_SECRETS_FILE;
  if (!file) return;
  const lines = values.filter((v): v is string => typeof v === 'string' && v.length >= 16).map((v) => v + '\n').join('');
  if (lines) appendFileSync(file, lines, { mode: 0o600 });
}

/** Saves a captured log (a child's stderr, a logger's lines) where the scan looks. */
export function saveTestLog(name: string, text: string): void {
  const dir = process.env.KNIT_TEST_LOG_DIR;
  if (!dir) return;
  writeFileSync(join(dir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${process.pid}-${Date.now()}.log`), text);
}

/**
 * Flags that keep a test coordinator off fixed ports: `--relay off` where the
 * coordinator has an in-process relay (default UDP/TCP 3480, which two test
 * coordinators at once would fight over). Read from `knit help coordinator`, so
 * tests work on either side of that feature.
 */
export function coordinatorTestFlags(bin: string): string[] {
  try {
    const help = execFileSync(process.execPath, [bin, 'help', 'coordinator'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return /--relay HOST:PORT\|off/.test(help) ? ['--relay', 'off'] : [];
  } catch {
    return [];
  }
}
