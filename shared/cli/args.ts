/**
 * Flag parsing shared by the agent's commands: node:util parseArgs in strict
 * mode, with a usage error (exit 2) that names the bad flag in one line.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KnitError } from '../errors.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

export function parseFlags<T extends Options>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals });
  } catch (err) {
    // node's message goes on about positionals after '--'; the first sentence says it all.
    throw new KnitError('KNIT_ERR_USAGE', (err as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, ''));
  }
}

export function intFlag(value: string | undefined, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^[0-9]+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new KnitError('KNIT_ERR_USAGE', `--${name} must be a whole number from ${min} to ${max}`);
  }
  return Number(value);
}

export function listFlag(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0 || items.some((s) => !/^[A-Za-z0-9_.:@-]{1,32}$/.test(s))) {
    throw new KnitError('KNIT_ERR_USAGE', `"${value}" is not a comma-separated list of interface names`);
  }
  return items;
}

export function oneOf<T extends string>(value: string | undefined, name: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) throw new KnitError('KNIT_ERR_USAGE', `--${name} must be one of ${allowed.join(', ')}`);
  return value as T;
}
