/**
 * Runs the `nft` command: the one way the agent's nftables users (the shared-port
 * steering rules, net/shared-port.ts; the host firewall's scoped rules,
 * firewall/host-firewall.ts) talk to nftables. Never throws: a failure is a
 * non-zero `code` with nft's own words in `stderr`, for the caller to judge.
 */
import { execFile } from 'node:child_process';

export interface NftResult { code: number; stdout: string; stderr: string }
export type NftRunner = (args: string[], input?: string) => Promise<NftResult>;

/** `nft ARGS`, with `input` on stdin (a ruleset for `-f -`); bounded in time and output. */
export const runNft: NftRunner = (args, input) => new Promise((resolve) => {
  const child = execFile('nft', args, { timeout: 10_000, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
    resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr || (err ? err.message : '')) });
  });
  child.stdin?.on('error', () => {});
  child.stdin?.end(input ?? '');
});
