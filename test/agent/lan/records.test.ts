/**
 * DNS-SD record building and parsing against golden packets: the exact bytes
 * we put on the wire, and what we make of bytes others put there.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import {
  browseQuery, decodeDatagram, fingerprint, hostName, instanceName, knownAnswerSuppresses, meshIdOf, ourRecords, parseResponse, queryWantsUs, type LanSelf,
} from '../../../agent/lan/records.js';

const self: LanSelf = {
  name: 'ant',
  nodeKey: 'AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=',
  discoKey: 'ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=',
  port: 41641,
  meshId: meshIdOf('coordkey'),
};

// Header: id 0, flags 0x8400 (response, authoritative), 0 questions, 1 answer, 0 authority, 3 additional.
// PTR _knit._udp.local (class IN, TTL 120) → ant-49ebe803._knit._udp.local; SRV/TXT/A with the
// cache-flush bit (class 0x8001): SRV 0 0 41641 (0xa2a9) knit-49ebe803d9d34257.local,
// TXT v=1 mesh=… fp=… dk=…, A 10.0.0.5.
const GOLDEN_ANNOUNCEMENT = '000084000000000100000003055f6b6e6974045f756470056c6f63616c00000c000100000078001f0c616e742d3439656265383033055f6b6e6974045f756470056c6f63616c000c616e742d3439656265383033055f6b6e6974045f756470056c6f63616c000021800100000078002300000000a2a9156b6e69742d34396562653830336439643334323537056c6f63616c000c616e742d3439656265383033055f6b6e6974045f756470056c6f63616c000010800100000078006e03763d31156d6573683d663831346663616366376361636438642366703d34396562653830336439643334323537343064656237616463393630393338372f646b3d494345694979516c4a69636f4b536f724c4330754c7a41784d6a4d304e5459334f446b364f7a7739506a383d156b6e69742d34396562653830336439643334323537056c6f63616c00000180010000007800040a000005';
// A query for PTR _knit._udp.local with one known answer (TTL 100).
const GOLDEN_QUERY = '000000000001000100000000055f6b6e6974045f756470056c6f63616c00000c0001055f6b6e6974045f756470056c6f63616c00000c000100000064001f0c616e742d3439656265383033055f6b6e6974045f756470056c6f63616c00';

const response = (records: Answer[]): Packet => ({ type: 'response', answers: records });
const reencode = (p: Packet) => dnsPacket.decode(dnsPacket.encode(p));

test('names and identifiers are stable and derived from the keys', () => {
  assert.equal(fingerprint(self.nodeKey), '49ebe803d9d3425740deb7adc9609387');
  assert.equal(self.meshId, 'f814fcacf7cacd8d');
  assert.equal(instanceName(self), 'ant-49ebe803._knit._udp.local');
  assert.equal(hostName(self.nodeKey), 'knit-49ebe803d9d34257.local');
  assert.equal(instanceName({ name: 'a.b c', nodeKey: self.nodeKey }), 'a-b-c-49ebe803._knit._udp.local', 'a name never adds labels');
  assert.equal(instanceName({ name: 'x'.repeat(80), nodeKey: self.nodeKey }).split('.')[0]!.length, 57, 'an instance label stays within 63 bytes');
});

test('our announcement encodes to the golden bytes', () => {
  const bytes = dnsPacket.encode({ type: 'response', flags: dnsPacket.AUTHORITATIVE_ANSWER, ...ourRecords(self, '10.0.0.5') });
  assert.equal(bytes.toString('hex'), GOLDEN_ANNOUNCEMENT);
  assert.ok(bytes.length < 512, 'one small datagram');
});

test('the golden announcement parses back to one instance', () => {
  const { announcements, rejected } = parseResponse(dnsPacket.decode(Buffer.from(GOLDEN_ANNOUNCEMENT, 'hex')));
  assert.deepEqual(rejected, []);
  assert.deepEqual(announcements, [{
    instance: 'ant-49ebe803._knit._udp.local', fingerprint: fingerprint(self.nodeKey), meshId: self.meshId,
    discoKey: self.discoKey, port: 41641, addresses: ['10.0.0.5'], ttlS: 120,
  }]);
});

test('a browse query encodes to the golden bytes, and we know when it asks for us', () => {
  const q = browseQuery([{ instance: instanceName(self), ttlS: 100 }]);
  assert.equal(dnsPacket.encode(q).toString('hex'), GOLDEN_QUERY);
  const decoded = dnsPacket.decode(Buffer.from(GOLDEN_QUERY, 'hex'));
  assert.equal(queryWantsUs(decoded, self), true);
  assert.equal(knownAnswerSuppresses(decoded, self), true, 'the querier holds our PTR with more than half its TTL');
  assert.equal(knownAnswerSuppresses(reencode(browseQuery([{ instance: instanceName(self), ttlS: 59 }])), self), false);
  assert.equal(knownAnswerSuppresses(reencode(browseQuery([{ instance: 'bee-00000000._knit._udp.local', ttlS: 120 }])), self), false);
  assert.equal(queryWantsUs(reencode({ type: 'query', questions: [{ type: 'PTR', name: '_http._tcp.local' }] }), self), false);
  assert.equal(queryWantsUs(reencode({ type: 'query', questions: [{ type: 'SRV', name: 'ANT-49EBE803._knit._udp.local' }] }), self), true, 'names compare case-insensitively');
  assert.equal(queryWantsUs(reencode({ type: 'query', questions: [{ type: 'A', name: hostName(self.nodeKey) }] }), self), true);
});

test('a goodbye is the same records with TTL 0', () => {
  const bytes = dnsPacket.encode({ type: 'response', ...ourRecords(self, '10.0.0.5', 0) });
  const [a] = parseResponse(dnsPacket.decode(bytes)).announcements;
  assert.equal(a?.ttlS, 0);
});

test('other services in the same packet are ignored without complaint', () => {
  const mixed = reencode(response([
    { type: 'PTR', name: '_http._tcp.local', ttl: 4500, data: 'printer._http._tcp.local' },
    { type: 'SRV', name: 'printer._http._tcp.local', ttl: 120, data: { port: 80, target: 'printer.local' } },
    { type: 'TXT', name: 'printer._http._tcp.local', ttl: 4500, data: ['path=/'] },
    ...ourRecords(self, '10.0.0.5').answers, ...ourRecords(self, '10.0.0.5').additionals,
  ]));
  const r = parseResponse(mixed);
  assert.equal(r.announcements.length, 1);
  assert.deepEqual(r.rejected, []);
});

test('malformed or foreign-version instances are rejected, each with its reason', () => {
  const base = ourRecords(self, '10.0.0.5');
  const instance = instanceName(self);
  const withTxt = (data: string[]) => reencode(response([base.additionals[0]!, { type: 'TXT', name: instance, ttl: 120, data }, base.additionals[2]!]));
  const txt = (over: Record<string, string>) => Object.entries({ v: '1', mesh: self.meshId, fp: fingerprint(self.nodeKey), dk: self.discoKey, ...over }).map(([k, v]) => `${k}=${v}`);
  const reasons = (p: Packet) => parseResponse(p).rejected.map((r) => r.reason);
  assert.deepEqual(reasons(withTxt(txt({ v: '2' }))), ['version']);
  assert.deepEqual(reasons(withTxt(txt({ mesh: 'nothex' }))), ['malformed']);
  assert.deepEqual(reasons(withTxt(txt({ fp: 'ab' }))), ['malformed']);
  assert.deepEqual(reasons(withTxt(txt({ dk: 'AAAA' }))), ['malformed']);
  assert.deepEqual(reasons(reencode(response([base.additionals[0]!]))), ['malformed'], 'SRV without TXT');
  assert.deepEqual(reasons(reencode(response([{ type: 'SRV', name: instance, ttl: 120, data: { port: 0, target: 'x.local' } }, base.additionals[1]!]))), ['malformed'], 'port 0');
  const deep = `a.b.${'_knit._udp.local'}`;
  assert.deepEqual(reasons(reencode(response([{ type: 'SRV', name: deep, ttl: 120, data: { port: 1, target: 'x.local' } }]))), ['malformed'], 'an instance is one label');
  // The first of duplicated keys counts (RFC 6763 §6.4); boolean attributes are harmless.
  const dup = parseResponse(withTxt(['flag', ...txt({}), 'v=9']));
  assert.equal(dup.announcements.length, 1);
});

test('addresses: only usable unicast IPv4 of the SRV target, at most four', () => {
  const base = ourRecords(self, '10.0.0.5');
  const host = hostName(self.nodeKey);
  const a = (data: string, name = host): Answer => ({ type: 'A', name, ttl: 120, data });
  const p = reencode(response([
    base.additionals[0]!, base.additionals[1]!,
    a('224.0.0.251'), a('0.0.0.0'), a('255.255.255.255'), a('10.0.0.9', 'someone-else.local'),
    a('10.0.0.1'), a('10.0.0.2'), a('10.0.0.2'), a('10.0.0.3'), a('10.0.0.4'), a('10.0.0.5'),
  ]));
  assert.deepEqual(parseResponse(p).announcements[0]?.addresses, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']);
});

test('a packet stuffed with records is read only up to the cap', () => {
  const base = ourRecords(self, '10.0.0.5');
  const filler: Answer[] = Array.from({ length: 100 }, (_, i) => ({ type: 'A', name: `f${i}.local`, ttl: 1, data: '10.9.9.9' }));
  const r = parseResponse(reencode(response([...filler, ...base.answers, ...base.additionals])));
  assert.equal(r.announcements.length, 0, 'records beyond the cap are not read');
});

test('datagrams are checked before decoding: declared counts must fit the bytes', () => {
  assert.ok(decodeDatagram(Buffer.from(GOLDEN_ANNOUNCEMENT, 'hex')));
  const liar = Buffer.from('0000840000ffffffffffffff', 'hex'); // 12 bytes declaring 4 × 65,535 records
  assert.equal(decodeDatagram(liar), undefined);
  assert.equal(decodeDatagram(new Uint8Array(5)), undefined, 'shorter than a header');
  assert.equal(decodeDatagram(new Uint8Array(9001)), undefined, 'longer than RFC 6762 allows');
});
