/**
 * Durations as people type them on a command line: "90s", "30m", "24h", "7d".
 */
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds, or undefined when the text is not a positive whole number followed by s, m, h or d. */
export function parseDuration(text: string): number | undefined {
  const m = /^([1-9][0-9]{0,6})([smhd])$/.exec(text.trim());
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : undefined;
}
