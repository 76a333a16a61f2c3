// What `ip` answers when an address family is switched off, read as "skip this family", and
// everything else still read as a failure. The kernel's words are the ones seen on Linux 6.1.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ExecError } from '../../../agent/engine/exec.js';
import { familyOffReason } from '../../../agent/engine/ip-link.js';

describe('familyOffReason', () => {
  const cases: Array<{ name: string; error: unknown; want: string | undefined }> = [
    { name: 'address under disable_ipv6', error: new ExecError('ip', 1, 'Error: ipv6: IPv6 is disabled on this device.\nCommand failed -:1\n'), want: 'IPv6 is disabled on this device' },
    { name: 'route under disable_ipv6', error: new ExecError('ip', 1, 'Error: IPv6 is disabled on nexthop device.\nCommand failed -:2\n'), want: 'IPv6 is disabled on nexthop device' },
    { name: 'kernel without IPv6 (ipv6.disable=1)', error: new ExecError('ip', 2, 'RTNETLINK answers: Address family not supported by protocol\n'), want: 'Address family not supported by protocol' },
    { name: 'another failure', error: new ExecError('ip', 1, 'Error: Nexthop has invalid gateway.\nCommand failed -:1\n'), want: undefined },
    { name: 'a missing device', error: new ExecError('ip', 1, 'Cannot find device "knit0"\n'), want: undefined },
    { name: 'not an exec failure', error: new Error('IPv6 is disabled on this device'), want: undefined },
  ];
  for (const c of cases) it(c.name, () => assert.equal(familyOffReason(c.error), c.want));
});
