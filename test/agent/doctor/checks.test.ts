/**
 * knit doctor's verdicts as tables: inputs → the check's level (and the words
 * a person acts on). Pure; the probes and the command are tested against a
 * running agent in test/cli/doctor.integration.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  clockCheck, coordinatorCheck, doctorChecks, portMappingCheck, prefixesOverlap, prefixOverlapCheck, relayCheck, stunCheck,
  type DoctorInputs,
} from '../../../agent/doctor/checks.js';
import type { StatusDocument } from '../../../agent/status.js';

function status(over: Partial<StatusDocument> = {}, self: Partial<StatusDocument['self']> = {}): StatusDocument {
  return {
    self: { id: 1, name: 'a', nodeKey: 'k', ips: ['100.96.0.1'], port: 41641, endpoints: [], natType: 'endpoint-independent', ...self },
    coordinator: { url: 'http://198.18.0.1:8080', status: 'connected', version: 3 },
    engine: { kind: 'memory', iface: 'knit0', portMode: 'memory' },
    counters: {}, peers: [], health: [], ...over,
  };
}
const node = { coordinatorUrl: 'http://198.18.0.1:8080', ipv4Prefix: '100.96.0.0/12', ipv6Prefix: 'fd7a:115c:a1e0::/48' };
const up = (stunPorts: number[] | undefined, clockSkewMs?: number) => ({ reachable: true as const, rttMs: 2, stunPorts, clockSkewMs });

test('coordinator: joined and reachable, control connected → ok; anything else says what to do', () => {
  const cases: { name: string; i: Parameters<typeof coordinatorCheck>[0]; level: string; says: RegExp }[] = [
    { name: 'ok', i: { stateDir: '/s', node, agent: { status: status() }, coordinator: up([3478, 3479]) }, level: 'ok', says: /answers.*connected/ },
    { name: 'no agent, reachable', i: { stateDir: '/s', node, agent: { error: 'x' }, coordinator: up([3478]) }, level: 'ok', says: /answers in 2 ms$/ },
    { name: 'never joined', i: { stateDir: '/s', agent: { error: 'x' } }, level: 'fail', says: /never joined/ },
    { name: 'unreachable', i: { stateDir: '/s', node, agent: { error: 'x' }, coordinator: { reachable: false, error: 'ECONNREFUSED' } }, level: 'fail', says: /does not answer.*ECONNREFUSED/ },
    { name: 'control down', i: { stateDir: '/s', node, agent: { status: status({ coordinator: { url: node.coordinatorUrl, status: 'connecting', detail: 'closed 4400', version: 0 } }) }, coordinator: up([]) }, level: 'warn', says: /connecting \(closed 4400\)/ },
    { name: 'removed', i: { stateDir: '/s', node, agent: { status: status({ coordinator: { url: node.coordinatorUrl, status: 'removed', version: 0 } }) }, coordinator: up([]) }, level: 'fail', says: /removed/ },
  ];
  for (const c of cases) {
    const r = coordinatorCheck(c.i);
    assert.equal(r.level, c.level, c.name);
    assert.match(r.detail, c.says, c.name);
  }
});

test('stun: ports offered, which answer from this host, and the NAT type', () => {
  const agent = (natType: StatusDocument['self']['natType']) => ({ status: status({}, { natType }) });
  const cases: { name: string; i: Parameters<typeof stunCheck>[0]; level?: string; says?: RegExp }[] = [
    { name: 'two ports answer', i: { agent: agent('endpoint-independent'), coordinator: up([3478, 3479]), stun: [{ port: 3478, mapped: '198.18.1.1:5' }, { port: 3479, mapped: '198.18.1.1:5' }] }, level: 'ok', says: /3478, 3479 answer; NAT type endpoint-independent/ },
    { name: 'one port offered', i: { agent: agent('unknown'), coordinator: up([3478]), stun: [{ port: 3478, mapped: '198.18.1.1:5' }] }, level: 'warn', says: /offers one STUN port/ },
    { name: 'none offered', i: { agent: agent('unknown'), coordinator: up([]), stun: [] }, level: 'warn', says: /no STUN port/ },
    { name: 'none answers', i: { agent: agent('blocked'), coordinator: up([3478, 3479]), stun: [{ port: 3478 }, { port: 3479 }] }, level: 'fail', says: /no STUN answer from UDP ports 3478, 3479/ },
    { name: 'one of two answers', i: { agent: { error: 'x' }, coordinator: up([3478, 3479]), stun: [{ port: 3478, mapped: '198.18.1.1:5' }, { port: 3479 }] }, level: 'warn', says: /port 3479 does not answer/ },
    { name: 'host answers, tunnel port blocked', i: { agent: agent('blocked'), coordinator: up([3478, 3479]), stun: [{ port: 3478, mapped: 'a' }, { port: 3479, mapped: 'a' }] }, level: 'warn', says: /tunnel port/ },
    { name: 'coordinator unreachable: said elsewhere', i: { agent: agent('unknown'), coordinator: { reachable: false, error: 'x' }, stun: [] } },
    { name: 'an older coordinator without stun in /healthz', i: { agent: agent('unknown'), coordinator: up(undefined), stun: [] } },
  ];
  for (const c of cases) {
    const r = stunCheck(c.i);
    assert.equal(r?.level, c.level, c.name);
    if (c.says) assert.match(r!.detail, c.says, c.name);
  }
});

test('relay, port mapping and clock', () => {
  const table: { name: string; got: ReturnType<typeof relayCheck> | undefined; level?: string; says?: RegExp }[] = [
    { name: 'no relay', got: relayCheck(status()), level: 'warn', says: /announces no relay/ },
    { name: 'relay unused', got: relayCheck(status({ relay: { endpoint: '198.18.0.1:3480', transport: 'udp' } })), level: 'ok', says: /not needed yet/ },
    { name: 'relay bound', got: relayCheck(status({ relay: { endpoint: '198.18.0.1:3480', transport: 'udp' }, counters: { relayBound: 2 } })), level: 'ok', says: /answers \(2 bindings\)/ },
    { name: 'relay over ws', got: relayCheck(status({ relay: { endpoint: '198.18.0.1:3480', ws: 'ws://198.18.0.1:3480/v1/relay', transport: 'ws' } })), level: 'warn', says: /UDP to the relay/ },
    { name: 'portmap off', got: portMappingCheck(status()), level: 'ok', says: /off/ },
    { name: 'portmap verified', got: portMappingCheck(status({ portMapping: { state: 'mapped', protocol: 'pcp', external: '198.18.1.1:41641', verified: true } })), level: 'ok' },
    { name: 'portmap unverified', got: portMappingCheck(status({ portMapping: { state: 'mapped', protocol: 'upnp', external: '198.18.1.1:41641', verified: false } })), level: 'warn' },
    { name: 'no gateway protocol', got: portMappingCheck(status({ portMapping: { state: 'waiting', verified: false } })), level: 'ok', says: /waiting/ },
    { name: 'clock in step', got: clockCheck(up([], 1200)), level: 'ok' },
    { name: 'clock 5 min ahead', got: clockCheck(up([], 300_000)), level: 'warn', says: /300 s ahead/ },
    { name: 'clock 2 min behind', got: clockCheck(up([], -120_000)), level: 'warn', says: /120 s behind/ },
    { name: 'no Date header', got: clockCheck(up([])) },
  ];
  for (const c of table) {
    assert.equal(c.got?.level, c.level, c.name);
    if (c.says) assert.match(c.got!.detail, c.says, c.name);
  }
});

test('prefix overlap: a local route sharing addresses with the mesh prefix warns; default routes and the tunnel\'s own do not', () => {
  for (const [a, b, want] of [
    ['100.64.0.0/10', '100.96.0.0/12', true], ['100.96.0.0/24', '100.96.0.0/12', true], ['100.96.0.5', '100.96.0.0/12', true],
    ['10.0.0.0/8', '100.96.0.0/12', false], ['100.112.0.0/12', '100.96.0.0/12', false], ['fd7a:115c:a1e0:1::/64', 'fd7a:115c:a1e0::/48', true],
    ['fd00::/8', '100.96.0.0/12', false], ['not-a-prefix', '100.96.0.0/12', false],
  ] as const) assert.equal(prefixesOverlap(a, b), want, `${a} ∩ ${b}`);
  const check = (routes: { dst: string; dev: string }[]) => prefixOverlapCheck({ node, routes, tunnelIface: 'knit0' });
  assert.equal(check([{ dst: 'default', dev: 'eth0' }, { dst: '0.0.0.0/0', dev: 'eth1' }, { dst: '198.18.0.0/15', dev: 'eth0' }, { dst: '100.96.0.2', dev: 'knit0' }])?.level, 'ok');
  const cgnat = check([{ dst: '100.64.0.0/10', dev: 'eth0' }]);
  assert.equal(cgnat?.level, 'warn');
  assert.match(cgnat!.detail, /100\.64\.0\.0\/10 on eth0 overlaps the mesh prefix 100\.96\.0\.0\/12/);
  assert.match(cgnat!.fix!, /--ipv4-prefix/);
  assert.equal(prefixOverlapCheck({ node, routes: undefined, tunnelIface: 'knit0' }), undefined, 'routes unreadable: no verdict');
});

test('doctorChecks: the agent line first, then the agent\'s own checks, which win over doctor\'s of the same name', () => {
  const own = [{ check: 'relay', level: 'fail' as const, detail: 'the agent knows better' }, { check: 'ipv6', level: 'warn' as const, detail: 'IPv6 is disabled' }];
  const i: DoctorInputs = { stateDir: '/s', agent: { status: status({ health: own }) }, node, coordinator: up([3478, 3479], 0), stun: [{ port: 3478, mapped: 'a' }, { port: 3479, mapped: 'a' }], routes: [], tunnelIface: 'knit0' };
  const checks = doctorChecks(i);
  assert.deepEqual(checks.map((c) => c.check), ['agent', 'relay', 'ipv6', 'coordinator', 'stun', 'portmap', 'clock', 'prefix']);
  assert.equal(checks.find((c) => c.check === 'relay')!.detail, 'the agent knows better');
  const without = doctorChecks({ ...i, agent: { error: 'no agent is running' } });
  assert.deepEqual(without.map((c) => [c.check, c.level]), [['agent', 'fail'], ['coordinator', 'ok'], ['stun', 'ok'], ['clock', 'ok'], ['prefix', 'ok']]);
});
