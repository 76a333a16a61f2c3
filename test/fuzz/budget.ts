/**
 * How hard the property/fuzz tests push: a small budget in `npm test`, a large
 * one under `npm run fuzz` (KNIT_FUZZ_ITERATIONS). Always bounded.
 */
export function fuzzIterations(normal: number): number {
  const n = Number(process.env.KNIT_FUZZ_ITERATIONS ?? '');
  return Number.isSafeInteger(n) && n > 0 ? Math.min(n, 50_000_000) : normal;
}
