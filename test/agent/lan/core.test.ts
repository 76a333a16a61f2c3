/**
 * The LAN discovery core, driven by hand: what it multicasts and when, whom
 * it answers, and which announcements become LAN candidates.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket, { type Packet } from 'dns-packet';
import { LanCore, MAX_QUERY_INTERVAL_MS, type LanAction, type LanInterface } from '../../../agent/lan/core.js';
import { browseQuery, instanceName, meshIdOf, ourRecords, type LanSelf } from '../../../agent/lan/records.js';

const MESH = meshIdOf('coordkey');
const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const ant: LanSelf = { name: 'ant', nodeKey: key(1), discoKey: key(101), port: 41641, meshId: MESH };
const bee: LanSelf = { name: 'bee', nodeKey: key(2), discoKey: key(102), port: 41642, meshId: MESH };
const eth0: LanInterface = { name: 'eth0', address: '10.0.0.5', prefixLen: 24 };
const wifi: LanInterface = { name: 'wlan0', address: '192.168.1.5', prefixLen: 24 };

const wire = (p: Packet) => dnsPacket.decode(dnsPacket.encode(p)); // what a peer would really receive
const announcementOf = (s: LanSelf, address: string, ttl?: number) => wire({ type: 'response', ...ourRecords(s, address, ttl) });

function started(interfaces = [eth0], peers = [bee.nodeKey]): { core: LanCore; first: LanAction[] } {
  let n = 0;
  const core = new LanCore(ant, (len) => Uint8Array.from({ length: len }, () => (n += 37) & 255));
  core.handle({ type: 'peers', nodeKeys: peers }, 0);
  core.handle({ type: 'interfaces', interfaces }, 0);
  return { core, first: core.handle({ type: 'start' }, 0) };
}

const sends = (out: LanAction[]) => out.filter((a) => a.type === 'send') as Extract<LanAction, { type: 'send' }>[];
const candidates = (out: LanAction[]) => out.filter((a) => a.type === 'candidate') as Extract<LanAction, { type: 'candidate' }>[];

/** Runs the core's timer until `until`, collecting (time, action). */
function runUntil(core: LanCore, until: number): { at: number; action: LanAction }[] {
  const log: { at: number; action: LanAction }[] = [];
  for (let i = 0; i < 10_000; i++) {
    const at = core.nextWakeup();
    if (at === undefined || at > until) break;
    for (const action of core.handle({ type: 'tick' }, at)) log.push({ at, action });
  }
  return log;
}

test('start: announces twice a second apart, and browses at 0, 1, 3, 7 s … capped at a minute', () => {
  const { core, first } = started();
  assert.deepEqual(sends(first).map((s) => s.packet.type), ['response', 'query']);
  const log = runUntil(core, 200_000);
  const responses = log.filter((l) => l.action.type === 'send' && l.action.packet.type === 'response').map((l) => l.at);
  assert.deepEqual(responses, [1000]);
  const queries = log.filter((l) => l.action.type === 'send' && l.action.packet.type === 'query').map((l) => l.at);
  assert.deepEqual(queries.slice(0, 5), [1000, 3000, 7000, 15000, 31000]);
  const gaps = queries.slice(1).map((t, i) => t - queries[i]!);
  assert.ok(gaps.every((g) => g <= MAX_QUERY_INTERVAL_MS) && gaps.at(-1) === MAX_QUERY_INTERVAL_MS);
});

test('an announcement from a peer on the link gives a LAN candidate at its SRV port', () => {
  const { core } = started();
  const out = core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 10);
  assert.deepEqual(candidates(out), [{ type: 'candidate', nodeKey: bee.nodeKey, endpoint: { address: '10.0.0.7', port: 41642 }, discoKey: bee.discoKey }]);
  assert.equal(core.counters.candidates, 1);
});

test('strangers, other meshes, ourselves and off-link senders give nothing, and are counted', () => {
  const { core } = started();
  const stranger: LanSelf = { ...bee, name: 'eve', nodeKey: key(3) };
  const otherMesh: LanSelf = { ...bee, meshId: meshIdOf('another coordinator') };
  const events: [string, Packet | undefined][] = [
    ['10.0.0.8', announcementOf(stranger, '10.0.0.8')],
    ['10.0.0.9', announcementOf(otherMesh, '10.0.0.9')],
    ['10.0.0.5', announcementOf(ant, '10.0.0.5')], // our own, looped back
    ['172.16.0.1', announcementOf(bee, '172.16.0.1')], // not on any of our links
    ['10.0.0.7', undefined], // undecodable
  ];
  const out = events.flatMap(([from, packet]) => core.handle({ type: 'packet', from, packet }, 10));
  assert.deepEqual(candidates(out), []);
  assert.equal(core.counters.notPeer, 1);
  assert.equal(core.counters.otherMesh, 1);
  assert.equal(core.counters.offLink, 1);
  assert.equal(core.counters.malformed, 1);
});

test('addresses off the link the packet came in on are not candidates (a LAN host cannot aim us elsewhere)', () => {
  const { core } = started();
  const p = wire({ type: 'response', answers: [...ourRecords(bee, '10.0.0.7').additionals, { type: 'A', name: ourRecords(bee, 'x').additionals[2]!.name, ttl: 120, data: '203.0.113.9' }] });
  const out = core.handle({ type: 'packet', from: '10.0.0.7', packet: p }, 10);
  assert.deepEqual(candidates(out).map((c) => c.endpoint.address), ['10.0.0.7']);
});

test('a node that becomes a peer later is a candidate at once, from what it announced before', () => {
  const { core } = started([eth0], []);
  assert.deepEqual(candidates(core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 10)), []);
  const out = core.handle({ type: 'peers', nodeKeys: [bee.nodeKey] }, 20);
  assert.deepEqual(candidates(out).map((c) => c.endpoint), [{ address: '10.0.0.7', port: 41642 }]);
});

test('queries for us are answered after 20–120 ms, once per burst, at most once a second', () => {
  const { core } = started();
  runUntil(core, 1500); // past the announcements
  const q = wire(browseQuery([]));
  assert.deepEqual(core.handle({ type: 'packet', from: '10.0.0.7', packet: q }, 2000), []);
  core.handle({ type: 'packet', from: '10.0.0.8', packet: q }, 2001); // a second querier: same answer
  const answers = runUntil(core, 2200).filter((l) => l.action.type === 'send' && l.action.packet.type === 'response');
  assert.equal(answers.length, 1);
  assert.ok(answers[0]!.at >= 2020 && answers[0]!.at <= 2120, `answered at ${answers[0]!.at}`);
  core.handle({ type: 'packet', from: '10.0.0.7', packet: q }, 2300);
  const next = runUntil(core, 4000).filter((l) => l.action.type === 'send' && l.action.packet.type === 'response');
  assert.ok(next[0]!.at >= answers[0]!.at + 1000, 'rate-limited to one multicast answer a second');
  assert.equal(core.counters.answered, 2);
});

test('known-answer suppression: a querier that holds our record gets no answer', () => {
  const { core } = started();
  runUntil(core, 1500);
  core.handle({ type: 'packet', from: '10.0.0.7', packet: wire(browseQuery([{ instance: instanceName(ant), ttlS: 110 }])) }, 2000);
  assert.equal(runUntil(core, 4000).filter((l) => l.action.type === 'send' && l.action.packet.type === 'response').length, 0);
  assert.equal(core.counters.suppressed, 1);
});

test('our queries list what we know as known answers, until half its TTL is gone', () => {
  const { core } = started();
  core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 10);
  const log = runUntil(core, 70_000).filter((l) => l.action.type === 'send' && l.action.packet.type === 'query');
  const known = (at: number) => log.find((l) => l.at === at)!.action as Extract<LanAction, { type: 'send' }>;
  assert.deepEqual(known(1000).packet.answers?.map((a) => (a as { data: string }).data), [instanceName(bee)]);
  assert.deepEqual(known(63_000).packet.answers, [], 'over half the TTL gone: ask again so it refreshes');
});

test('a goodbye forgets the instance', () => {
  const { core } = started();
  core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 10);
  core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7', 0) }, 20);
  assert.equal(core.counters.goodbyes, 1);
  const q = runUntil(core, 1000).find((l) => l.action.type === 'send' && l.action.packet.type === 'query')!.action as Extract<LanAction, { type: 'send' }>;
  assert.deepEqual(q.packet.answers, []);
});

test('stop says goodbye (TTL 0) on every link and asks for no more ticks', () => {
  const { core } = started([eth0, wifi]);
  const out = core.handle({ type: 'stop' }, 500);
  assert.deepEqual(sends(out).map((s) => [s.iface.name, s.packet.type, (s.packet.answers?.[0] as { ttl?: number } | undefined)?.ttl]), [['eth0', 'response', 0], ['wlan0', 'response', 0]]);
  assert.equal(core.nextWakeup(), undefined);
  assert.deepEqual(core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 600), []);
});

test('a new interface set is announced and browsed afresh; what was heard on a lost link is forgotten', () => {
  const { core } = started([eth0]);
  core.handle({ type: 'packet', from: '10.0.0.7', packet: announcementOf(bee, '10.0.0.7') }, 10);
  runUntil(core, 20_000);
  const out = core.handle({ type: 'interfaces', interfaces: [wifi] }, 20_000);
  const first = sends([...out, ...runUntil(core, 20_000).map((l) => l.action)]);
  assert.deepEqual(first.map((s) => [s.iface.name, s.packet.type]), [['wlan0', 'response'], ['wlan0', 'query']]);
  assert.deepEqual(first[1]!.packet.answers, [], 'nothing known on the new link');
  const again = runUntil(core, 21_000).filter((l) => l.action.type === 'send' && l.action.packet.type === 'response');
  assert.deepEqual(again.map((l) => l.at), [21_000]);
  // The same set again changes nothing.
  assert.deepEqual(core.handle({ type: 'interfaces', interfaces: [{ ...wifi }] }, 22_000), []);
});
