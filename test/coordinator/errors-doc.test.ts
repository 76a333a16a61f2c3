/**
 * docs/errors.md is the users' copy of the error table: every code in
 * shared/errors.ts appears there with the same HTTP status and WS close code.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_TABLE } from '../../shared/errors.js';

test('docs/errors.md lists every error code with its HTTP status and close code', () => {
  const doc = readFileSync(join(process.cwd(), 'docs', 'errors.md'), 'utf8');
  const rows = new Map<string, string[]>();
  for (const line of doc.split('\n')) {
    const m = /^\| `(KNIT_ERR_[A-Z_]+)` \|(.*)$/.exec(line);
    if (m) rows.set(m[1]!, m[2]!.split('|').map((c) => c.trim()));
  }
  for (const [code, row] of Object.entries(ERROR_TABLE)) {
    const cells = rows.get(code);
    assert.ok(cells, `${code} is missing from docs/errors.md`);
    assert.equal(cells[0], String(row.status), `${code}: HTTP status`);
    assert.equal(cells[1], String(row.close), `${code}: close code`);
    assert.equal(cells[2], row.retryable ? 'yes' : 'no', `${code}: retryable`);
  }
  assert.deepEqual([...rows.keys()].filter((c) => !(c in ERROR_TABLE)), [], 'no documented code that does not exist');
});
