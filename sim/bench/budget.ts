/**
 * A budget as `knit bench` reports it: a measured value against its limit
 * (lower is better), in the `budgets` section of the JSON.
 */
export interface Budget { name: string; value: number; limit: number; ok: boolean }

export const budget = (name: string, value: number, limit: number): Budget => ({ name, value, limit, ok: value <= limit });
