import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEndpointDiscovery, type DiscoveryResult } from '../../../agent/discovery/index.js';
import { formatNetcheck, netcheckReport } from '../../../agent/roam/netcheck.js';
import { encodeBindingResponse, parseBindingRequest } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';

const S1 = { address: '198.18.0.1', port: 3478 };
const S2 = { address: '198.18.0.1', port: 3479 };

/** A real round through the discovery core, answered as `mapped` says, and sent through JSON like the local API does. */
function round(mapped: ({ address: string; port: number } | undefined)[]): DiscoveryResult {
  const core = createEndpointDiscovery({ random: seededBytes(5) });
  const sends = core.handle({ type: 'start', servers: [S1, S2], localAddresses: ['10.0.0.2'], localPort: 41641 }, 0);
  sends.forEach((a, i) => {
    const m = mapped[i];
    if (a.type === 'send' && m) core.handle({ type: 'packet', from: a.to, bytes: encodeBindingResponse(parseBindingRequest(a.bytes)!.txid, m) }, 20 + i);
  });
  if (core.busy()) core.handle({ type: 'tick' }, 2000);
  return JSON.parse(JSON.stringify(core.last()));
}

const base = { servers: ['198.18.0.1:3478', '198.18.0.1:3479'], localAddresses: ['10.0.0.2'], port: 41641 };

test('netcheck report: cone NAT', () => {
  const r = netcheckReport({ ...base, result: round([{ address: '198.18.9.9', port: 41641 }, { address: '198.18.9.9', port: 41641 }]) });
  assert.equal(r.udpReachable, true);
  assert.equal(r.mapping, 'endpoint-independent');
  assert.match(r.mappingDetail, /RFC 4787 EIM.*address-dependent NAT would look the same/);
  assert.deepEqual(r.reflexive, ['198.18.9.9:41641']);
  assert.equal(r.portPreserved, true);
  assert.deepEqual(r.candidates, ['198.18.9.9:41641', '10.0.0.2:41641']);
  assert.deepEqual(r.observations, [
    { server: '198.18.0.1:3478', mapped: '198.18.9.9:41641', rttMs: 20 },
    { server: '198.18.0.1:3479', mapped: '198.18.9.9:41641', rttMs: 21 },
  ]);
  assert.deepEqual(formatNetcheck(r), [
    'tunnel port     41641',
    'local addresses 10.0.0.2',
    'STUN servers    198.18.0.1:3478 198.18.0.1:3479',
    'UDP             yes (2/2 observers answered)',
    'reflexive       198.18.9.9:41641',
    'mapping         endpoint-independent mapping (RFC 4787 EIM) across two ports of one observer address (an address-dependent NAT would look the same): hole punching works',
    'port preserved  yes',
    'candidates      198.18.9.9:41641 10.0.0.2:41641',
    '  198.18.0.1:3478        saw us as 198.18.9.9:41641 in 20 ms',
    '  198.18.0.1:3479        saw us as 198.18.9.9:41641 in 21 ms',
  ]);
});

test('netcheck report (table): symmetric, one observer, blocked, not measured, an older agent\'s shape', () => {
  const rows: { name: string; input: Parameters<typeof netcheckReport>[0]; want: Record<string, unknown>; line?: RegExp }[] = [
    { name: 'symmetric', input: { ...base, result: round([{ address: '198.18.9.9', port: 1024 }, { address: '198.18.9.9', port: 1025 }]) },
      want: { mapping: 'endpoint-dependent', portPreserved: false, udpReachable: true }, line: /^mapping +address-and-port-dependent mapping \(symmetric NAT\)/ },
    { name: 'one observer answered', input: { ...base, result: round([{ address: '198.18.9.9', port: 41641 }, undefined]) },
      want: { mapping: 'unknown', answered: 1, asked: 2 }, line: /^UDP +yes \(1\/2 observers answered\)$/ },
    { name: 'blocked', input: { ...base, result: round([undefined, undefined]) },
      want: { mapping: 'blocked', udpReachable: false, reflexive: [], portPreserved: null }, line: /^UDP +no answer from 2 observer\(s\)$/ },
    { name: 'no observer known yet', input: { servers: [], localAddresses: ['10.0.0.2'], port: 41641 },
      want: { mapping: null, udpReachable: null }, line: /^STUN servers +\(not known yet/ },
    { name: 'an older agent: no observations', input: { ...base, result: { natType: 'endpoint-independent', reflexive: [{ address: '198.18.9.9', port: 7 }], portPreserved: false, answered: 2, asked: 2 } },
      want: { mapping: 'endpoint-independent', reflexive: ['198.18.9.9:7'], udpReachable: true, portPreserved: false } },
    { name: 'garbage fields', input: { result: { natType: 'cgnat', reflexive: 'x', observations: [1, { server: 'nope' }] }, servers: 'x', port: -1 },
      want: { mapping: null, tunnelPort: null, servers: [], reflexive: [], observations: [] } },
  ];
  for (const r of rows) {
    const report = netcheckReport(r.input);
    for (const [k, v] of Object.entries(r.want)) assert.deepEqual(report[k as keyof typeof report], v, `${r.name}: ${k}`);
    const lines = formatNetcheck(report);
    if (r.line) assert.ok(lines.some((l) => r.line!.test(l)), `${r.name}: ${r.line} in\n${lines.join('\n')}`);
  }
});
