import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  blockingInputChains, firewallHealth, parseRuleset, planFirewall, planScript, removalScript, type FirewallFacts, type NftChain,
} from '../../../agent/firewall/rules.js';
import { EMPTY, FIREWALLD_LIKE, IPTABLES_NFT, NFT_POLICY_DROP, NFT_POLICY_DROP_WITH_OURS } from './nft-samples.js';

const want = { iface: 'knit0', tunnelPort: 41641 };
const parse = (json: string): NftChain[] => parseRuleset(json)!;

test('parseRuleset: real nft -j output decodes; anything else is undefined, never a throw', () => {
  assert.deepEqual(parse(EMPTY), []);
  const chains = parse(IPTABLES_NFT);
  assert.deepEqual(chains.map((c) => [c.family, c.table, c.name, c.hook, c.policy, c.rules.length]), [
    ['ip', 'filter', 'INPUT', 'input', 'drop', 2],
    ['ip6', 'filter', 'INPUT', 'input', 'drop', 1],
  ]);
  for (const bad of ['', 'nope', '[]', '{"nftables": 3}', 'null']) assert.equal(parseRuleset(bad), undefined, bad);
  assert.deepEqual(parseRuleset('{"nftables": [{"rule": {"family": "ip", "table": "t", "chain": "nochain", "handle": 1, "expr": []}}, 7, null]}'), []);
});

test('blockingInputChains: which input chains can drop the tunnel, and what they already admit', () => {
  const rows: { name: string; json: string; want: [string, boolean, boolean][] }[] = [
    { name: 'no ruleset', json: EMPTY, want: [] },
    { name: 'nftables policy drop', json: NFT_POLICY_DROP, want: [['inet filter input', false, false]] },
    { name: 'the same with our rules at the top', json: NFT_POLICY_DROP_WITH_OURS, want: [['inet filter input', true, true]] },
    { name: 'iptables-nft, IPv4 and IPv6', json: IPTABLES_NFT, want: [['ip filter INPUT', false, false], ['ip6 filter INPUT', false, false]] },
    // The reject sits in the base chain; the open table (policy accept, no drop) and the nat chain don't block.
    { name: 'firewalld: policy accept, ends in reject', json: FIREWALLD_LIKE, want: [['inet firewalld filter_INPUT', false, false]] },
  ];
  for (const r of rows) {
    assert.deepEqual(blockingInputChains(parse(r.json), want).map((c) => [`${c.family} ${c.table} ${c.chain}`, c.admitsIface, c.admitsPort]), r.want, r.name);
  }
  // Our rules admit only the port they name.
  assert.deepEqual(blockingInputChains(parse(NFT_POLICY_DROP_WITH_OURS), { iface: 'knit0', tunnelPort: 5000 }).map((c) => [c.admitsIface, c.admitsPort]), [[true, false]]);
});

test('blockingInputChains: a drop reached by a jump blocks; an accept after a drop or jump admits nothing', () => {
  const chain = (name: string, rules: unknown[][], base = true): NftChain => ({
    family: 'inet', table: 't', name, ...(base ? { hook: 'input', type: 'filter', policy: 'accept' } : {}),
    rules: rules.map((expr, i) => ({ handle: i + 1, expr })),
  });
  const iface = [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'knit0' } }, { accept: null }];
  const port = [{ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'udp' } }, { match: { op: '==', left: { payload: { protocol: 'udp', field: 'dport' } }, right: 41641 } }, { counter: null }, { accept: null }];
  const portAndMore = [{ match: { op: '==', left: { payload: { protocol: 'udp', field: 'dport' } }, right: 41641 } }, { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '10.0.0.1' } }, { accept: null }];
  const rows: { name: string; chains: NftChain[]; want: [boolean, boolean][] }[] = [
    { name: 'jump to a chain that drops', chains: [chain('in', [[{ jump: { target: 'x' } }]]), chain('x', [[{ drop: null }]], false)], want: [[false, false]] },
    { name: 'jump to a chain that only accepts', chains: [chain('in', [[{ jump: { target: 'x' } }]]), chain('x', [[{ accept: null }]], false)], want: [] },
    { name: 'admin rules first', chains: [chain('in', [iface, port, [{ drop: null }]])], want: [[true, true]] },
    { name: 'admin rules after the drop', chains: [chain('in', [[{ drop: null }], iface, port])], want: [[false, false]] },
    { name: 'port rule narrowed by source', chains: [chain('in', [portAndMore, [{ drop: null }]])], want: [[false, false]] },
    { name: 'a loop of jumps ends', chains: [chain('in', [[{ jump: { target: 'x' } }]]), chain('x', [[{ goto: { target: 'in' } }]], false)], want: [] },
  ];
  for (const r of rows) assert.deepEqual(blockingInputChains(r.chains, want).map((c) => [c.admitsIface, c.admitsPort]), r.want, r.name);
});

test('planFirewall → planScript: the nft commands, per sample', () => {
  const rows: { name: string; chains: NftChain[]; want: string }[] = [
    { name: 'nothing blocks', chains: parse(FIREWALLD_LIKE).filter((c) => c.table !== 'firewalld'), want: '' },
    {
      name: 'nftables policy drop',
      chains: parse(NFT_POLICY_DROP),
      want: 'insert rule inet filter input iifname "knit0" counter accept comment "knit:knit0"\n'
        + 'insert rule inet filter input udp dport 41641 counter accept comment "knit:knit0"\n',
    },
    { name: 'already in place: nothing to do (idempotent)', chains: parse(NFT_POLICY_DROP_WITH_OURS), want: '' },
    {
      name: 'iptables-nft: both families',
      chains: parse(IPTABLES_NFT),
      want: 'insert rule ip filter INPUT iifname "knit0" counter accept comment "knit:knit0"\n'
        + 'insert rule ip filter INPUT udp dport 41641 counter accept comment "knit:knit0"\n'
        + 'insert rule ip6 filter INPUT iifname "knit0" counter accept comment "knit:knit0"\n'
        + 'insert rule ip6 filter INPUT udp dport 41641 counter accept comment "knit:knit0"\n',
    },
    {
      name: 'firewalld',
      chains: parse(FIREWALLD_LIKE),
      want: 'insert rule inet firewalld filter_INPUT iifname "knit0" counter accept comment "knit:knit0"\n'
        + 'insert rule inet firewalld filter_INPUT udp dport 41641 counter accept comment "knit:knit0"\n',
    },
  ];
  for (const r of rows) assert.equal(planScript(planFirewall(r.chains, want), want), r.want, r.name);
});

test('planFirewall: a crashed run\'s rules for another port are replaced; other interfaces\' rules are left alone', () => {
  const moved = { iface: 'knit0', tunnelPort: 5000 };
  assert.equal(planScript(planFirewall(parse(NFT_POLICY_DROP_WITH_OURS), moved), moved),
    'delete rule inet filter input handle 5\n'
    + 'insert rule inet filter input udp dport 5000 counter accept comment "knit:knit0"\n');
  const other = { iface: 'knit1', tunnelPort: 41641 };
  // knit1's agent adds its own iface rule; knit0's port rule already admits 41641 — still, nothing of knit0's is touched.
  assert.equal(planScript(planFirewall(parse(NFT_POLICY_DROP_WITH_OURS), other), other),
    'insert rule inet filter input iifname "knit1" counter accept comment "knit:knit1"\n');
  // A chain that no longer blocks (the admin switched the policy to accept): our rules there go.
  const opened = parse(NFT_POLICY_DROP_WITH_OURS).map((c) => ({ ...c, policy: 'accept' }));
  assert.equal(planScript(planFirewall(opened, want), want), 'delete rule inet filter input handle 5\ndelete rule inet filter input handle 4\n');
});

test('removalScript: deletes exactly our rules by handle', () => {
  assert.equal(removalScript(parse(NFT_POLICY_DROP_WITH_OURS), 'knit0'), 'delete rule inet filter input handle 5\ndelete rule inet filter input handle 4\n');
  assert.equal(removalScript(parse(NFT_POLICY_DROP_WITH_OURS), 'knit1'), '');
  assert.equal(removalScript(parse(IPTABLES_NFT), 'knit0'), '');
});

test('firewallHealth: ok, warn or fail, with the exact rules to add', () => {
  const blocking = blockingInputChains(parse(IPTABLES_NFT), want);
  const admitted = blockingInputChains(parse(NFT_POLICY_DROP_WITH_OURS), want);
  const facts = (f: Partial<FirewallFacts>): FirewallFacts => ({ mode: 'on', blocking: [], legacyTables: [], ...f });
  const rows: { name: string; facts: FirewallFacts; level: string; detail: RegExp; fix?: string }[] = [
    { name: 'nothing blocks', facts: facts({}), level: 'ok', detail: /no input firewall chain drops/ },
    { name: 'our rules in place', facts: facts({ blocking: admitted }), level: 'ok', detail: /Knit's scoped accept rules admit knit0 and UDP port 41641 in inet filter input/ },
    { name: 'off, the admin opened it', facts: facts({ mode: 'off', blocking: admitted }), level: 'ok', detail: /the admin's rules admit/ },
    {
      name: 'off and blocking', facts: facts({ mode: 'off', blocking }), level: 'fail', detail: /ip filter INPUT, ip6 filter INPUT drops .*--firewall off/,
      fix: 'nft insert rule ip filter INPUT iifname "knit0" accept; nft insert rule ip filter INPUT udp dport 41641 accept; '
        + 'nft insert rule ip6 filter INPUT iifname "knit0" accept; nft insert rule ip6 filter INPUT udp dport 41641 accept',
    },
    {
      name: 'on, but nft refused', facts: facts({ blocking: blocking.slice(0, 1), applyError: 'Error: Could not process rule: Operation not permitted' }), level: 'fail',
      detail: /could not add its accept rules: Error: Could not process rule/,
      fix: 'nft insert rule ip filter INPUT iifname "knit0" accept; nft insert rule ip filter INPUT udp dport 41641 accept',
    },
    { name: 'cannot read', facts: facts({ readError: 'Operation not permitted' }), level: 'warn', detail: /cannot read the host firewall/, fix: 'make sure the input firewall accepts: iifname "knit0" accept; udp dport 41641 accept' },
    {
      name: 'iptables-legacy', facts: facts({ legacyTables: ['filter'] }), level: 'warn', detail: /iptables-legacy tables \(filter\)/,
      fix: 'if their INPUT chain drops, add: iptables -I INPUT -i knit0 -j ACCEPT; iptables -I INPUT -p udp --dport 41641 -j ACCEPT (and the same with ip6tables)',
    },
  ];
  for (const r of rows) {
    const c = firewallHealth(r.facts, want);
    assert.equal(c.check, 'firewall');
    assert.equal(c.level, r.level, r.name);
    assert.match(c.detail, r.detail, r.name);
    assert.equal(c.fix, r.fix, r.name);
  }
});

test('bad input to the pure functions is a programmer error', () => {
  assert.throws(() => planFirewall([], { iface: 'knit0"; flush ruleset', tunnelPort: 1 }), RangeError);
  assert.throws(() => planFirewall([], { iface: 'knit0', tunnelPort: 0 }), RangeError);
});
