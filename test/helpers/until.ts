/**
 * Polls a condition against real processes and sockets until it holds, with a
 * deadline — for integration and lab tests only (core tests use virtual time).
 * On timeout the error names what was awaited, the last error seen, and
 * whatever `explain` adds (logs, status documents).
 */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  options: { timeoutMs?: number; intervalMs?: number; explain?: () => Promise<string> | string } = {},
): Promise<T> {
  const end = Date.now() + (options.timeoutMs ?? 15_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = undefined; // an error from an earlier attempt (a process still starting) is not why this one failed
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      const extra = options.explain ? `\n${await options.explain()}` : '';
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}${extra}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
}
