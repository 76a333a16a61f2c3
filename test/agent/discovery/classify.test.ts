import assert from 'node:assert/strict';
import { test } from 'node:test';
import { candidateEndpoints, classifyMapping, type MappingObservation } from '../../../agent/discovery/index.js';

const local = { addresses: ['10.0.0.2', 'fd00::2'], port: 41641 };
const v4a = { address: '198.18.0.1', port: 3478 };
const v4b = { address: '198.18.0.1', port: 3479 };
const v6a = { address: '2001:db8::1', port: 3478 };
const m = (address: string, port: number) => ({ address, port });

test('classifyMapping (table)', () => {
  const rows: { name: string; obs: MappingObservation[]; want: Record<string, unknown> }[] = [
    { name: 'nobody answered', obs: [{ server: v4a }, { server: v4b }], want: { natType: 'blocked', answered: 0, asked: 2, portPreserved: undefined } },
    { name: 'one answered of two', obs: [{ server: v4a, mapped: m('198.18.9.9', 41641) }, { server: v4b }], want: { natType: 'unknown', answered: 1, portPreserved: true } },
    { name: 'same mapping, two ports', obs: [{ server: v4a, mapped: m('198.18.9.9', 7) }, { server: v4b, mapped: m('198.18.9.9', 7) }], want: { natType: 'endpoint-independent', comparedAcross: 'ports', portPreserved: false } },
    { name: 'different mapping', obs: [{ server: v4a, mapped: m('198.18.9.9', 7) }, { server: v4b, mapped: m('198.18.9.9', 8) }], want: { natType: 'endpoint-dependent', comparedAcross: 'ports' } },
    { name: 'no NAT (v4-mapped text compares equal)', obs: [{ server: v4a, mapped: m('10.0.0.2', 41641) }], want: { natType: 'none' } },
    { name: 'no NAT on IPv6', obs: [{ server: v6a, mapped: m('FD00::2', 41641) }], want: { natType: 'none' } },
    { name: 'our address but another port is a NAT', obs: [{ server: v4a, mapped: m('10.0.0.2', 5) }], want: { natType: 'unknown', portPreserved: false } },
    { name: 'one v4 and one v6 answer cannot be compared', obs: [{ server: v4a, mapped: m('198.18.9.9', 7) }, { server: v6a, mapped: m('2001:db8::99', 41641) }], want: { natType: 'unknown', comparedAcross: undefined } },
    { name: 'the same observer twice is no comparison', obs: [{ server: v4a, mapped: m('198.18.9.9', 7) }, { server: v4a, mapped: m('198.18.9.9', 7) }], want: { natType: 'unknown' } },
  ];
  for (const r of rows) {
    const c = classifyMapping(r.obs, local);
    for (const [k, v] of Object.entries(r.want)) assert.deepEqual(c[k as keyof typeof c], v, `${r.name}: ${k}`);
  }
});

test('candidates: reflexive first, then local addresses with the tunnel port, deduplicated and capped at 16', () => {
  assert.deepEqual(
    candidateEndpoints(['10.0.0.2', 'fd00::2'], 41641, [m('198.18.9.9', 41641), m('198.18.9.9', 41641), m('10.0.0.2', 41641)]),
    ['198.18.9.9:41641', '10.0.0.2:41641', '[fd00::2]:41641'],
  );
  const many = candidateEndpoints(Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}`), 1, [m('198.18.9.9', 2)]);
  assert.equal(many.length, 16);
  assert.equal(many[0], '198.18.9.9:2', 'the cap never drops the reflexive endpoint');
});
