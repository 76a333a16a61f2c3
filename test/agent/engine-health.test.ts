// The engine's health checks as a table: engine report in, checks out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineHealthChecks, familyRecheckDue, FAMILY_RECHECK_MS } from '../../agent/engine-health.js';
import type { EngineHealth } from '../../agent/engine/types.js';

const NOW = 1_800_000_000_000;
const OFF: EngineHealth['unavailableFamilies'] = [{ family: 6, reason: 'IPv6 is disabled on this device' }];

describe('engineHealthChecks', () => {
  const cases: Array<{ name: string; h: EngineHealth; want: Array<[string, string, RegExp, RegExp?]> }> = [
    {
      name: 'nothing applied yet: engine ok, ipv6 unknown (left out)',
      h: { lastSuccessMs: 0, unavailableFamilies: [] },
      want: [['engine', 'ok', /not been configured yet/]],
    },
    {
      name: 'applied, both families',
      h: { lastSuccessMs: NOW - 3_000, unavailableFamilies: [] },
      want: [['engine', 'ok', /holds the configuration \(applied 3 s ago\)/], ['ipv6', 'ok', /IPv4 and IPv6/]],
    },
    {
      name: 'IPv6 switched off (disable_ipv6): engine ok, ipv6 warns with the sysctl',
      h: { lastSuccessMs: NOW, unavailableFamilies: OFF },
      want: [['engine', 'ok', /holds/], ['ipv6', 'warn', /^IPv6 is disabled on this host; the tunnel carries IPv4 only$/, /sysctl -w net\.ipv6\.conf\.all\.disable_ipv6=0/]],
    },
    {
      name: 'a kernel without IPv6: the fix is the boot parameter',
      h: { lastSuccessMs: NOW, unavailableFamilies: [{ family: 6, reason: 'Address family not supported by protocol' }] },
      want: [['engine', 'ok', /holds/], ['ipv6', 'warn', /IPv4 only/, /ipv6\.disable=1/]],
    },
    {
      name: 'the last apply failed: engine fails with the error and a fix',
      h: { lastSuccessMs: NOW - 60_000, lastError: { message: 'applying to the wireguard-go engine failed: ip failed (exit 2): Error: Nexthop has invalid gateway.', atMs: NOW - 5_000 }, unavailableFamilies: [] },
      want: [['engine', 'fail', /apply failed \(5 s ago\): .*invalid gateway/, /knit down/], ['ipv6', 'ok', /IPv4 and IPv6/]],
    },
    {
      name: 'wireguard-go missing: the fix says to install it',
      h: { lastSuccessMs: 0, lastError: { message: 'starting the wireguard-go engine failed: cannot run wireguard-go: ENOENT', atMs: NOW }, unavailableFamilies: [] },
      want: [['engine', 'fail', /cannot run wireguard-go/, /apt install wireguard-go/]],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = engineHealthChecks(c.h, 'wireguard-go', NOW);
      assert.deepEqual(got.map((x) => [x.check, x.level]), c.want.map(([check, level]) => [check, level]));
      got.forEach((x, i) => {
        const [, , detail, fix] = c.want[i]!;
        assert.match(x.detail, detail);
        if (fix) assert.match(x.fix ?? '', fix);
      });
    });
  }
});

describe('familyRecheckDue', () => {
  const cases: Array<{ name: string; h: EngineHealth; last: number; now: number; want: boolean }> = [
    { name: 'nothing switched off: never', h: { lastSuccessMs: 1, unavailableFamilies: [] }, last: 0, now: 10 * FAMILY_RECHECK_MS, want: false },
    { name: 'switched off, never rechecked', h: { lastSuccessMs: 1, unavailableFamilies: OFF }, last: 0, now: FAMILY_RECHECK_MS, want: true },
    { name: 'switched off, rechecked just now', h: { lastSuccessMs: 1, unavailableFamilies: OFF }, last: 50_000, now: 50_000 + FAMILY_RECHECK_MS - 1, want: false },
    { name: 'switched off, rechecked a period ago', h: { lastSuccessMs: 1, unavailableFamilies: OFF }, last: 50_000, now: 50_000 + FAMILY_RECHECK_MS, want: true },
  ];
  for (const c of cases) it(c.name, () => assert.equal(familyRecheckDue(c.h, c.last, c.now), c.want));
});
