import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sharedPortRuleset, sharedPortTable } from '../../../agent/net/shared-port.js';

test('shared-port ruleset: golden text (disco and STUN untracked, steered in after the host\'s filter chains, agent replies stamped out)', () => {
  assert.equal(sharedPortRuleset('knit0', 41641, 50000), [
    'table inet knit_knit0 {',
    '  chain untrack_in {',
    '    type filter hook prerouting priority raw; policy accept;',
    '    udp dport 41641 @th,64,32 0x4b4e4954 notrack',
    '    udp dport 41641 @th,96,32 0x2112a442 notrack',
    '  }',
    '  chain steer_in {',
    '    type filter hook input priority 1000; policy accept;',
    '    udp dport 41641 @th,64,32 0x4b4e4954 udp dport set 50000',
    '    udp dport 41641 @th,96,32 0x2112a442 udp dport set 50000',
    '  }',
    '  chain stamp_out {',
    '    type filter hook output priority raw; policy accept;',
    '    udp sport 50000 notrack udp sport set 41641',
    '  }',
    '}',
    '',
  ].join('\n'));
});

test('shared-port ruleset refuses nonsense ports and names tables safely', () => {
  assert.throws(() => sharedPortRuleset('knit0', 41641, 41641), RangeError);
  assert.throws(() => sharedPortRuleset('knit0', 0, 1), RangeError);
  assert.throws(() => sharedPortRuleset('knit0', 1, 70000), RangeError);
  assert.equal(sharedPortTable('wg-0.x'), 'knit_wg_0_x');
});
