/**
 * The real transport (multicast-dns on node:dgram) with the real core, on
 * loopback only: two discoverers on `lo` find each other, undecodable
 * datagrams are counted, and interface selection keeps to what it is told.
 * A private port keeps these tests away from any mDNS responder on the host.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { test } from 'node:test';
import { systemClock } from '../../../shared/clock.js';
import { defaultRandomBytes } from '../../../shared/crypto/seal.js';
import { silentLogger } from '../../../shared/log.js';
import { LanDiscovery } from '../../../agent/lan/discovery.js';
import { createMdnsTransport, selectLanInterfaces } from '../../../agent/lan/mdns-transport.js';
import { meshIdOf } from '../../../agent/lan/records.js';
import { until } from '../../helpers/until.js';

const PORT = 25353 + (process.pid % 1000);
const MESH = meshIdOf('test mesh');
const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const LO = [{ name: 'lo', address: '127.0.0.1', prefixLen: 8 }];

function discoverer() {
  const found: { nodeKey: string; address: string; port: number }[] = [];
  const lan = new LanDiscovery({ clock: systemClock, random: defaultRandomBytes, logger: silentLogger, transport: createMdnsTransport({ logger: silentLogger, port: PORT }), interfaces: () => LO });
  lan.onCandidate = (nodeKey, ep) => found.push({ nodeKey, ...ep });
  return { lan, found };
}

test('two discoverers on loopback find each other through real multicast sockets, and say goodbye', async () => {
  const a = discoverer();
  const b = discoverer();
  a.lan.setPeers([key(2)]);
  b.lan.setPeers([key(1)]);
  a.lan.start({ name: 'ant', nodeKey: key(1), discoKey: key(11), port: 40001, meshId: MESH });
  b.lan.start({ name: 'bee', nodeKey: key(2), discoKey: key(12), port: 40002, meshId: MESH });
  try {
    await until('both found', () => a.found.length > 0 && b.found.length > 0 ? true : undefined, { timeoutMs: 5000 });
    assert.deepEqual(a.found[0], { nodeKey: key(2), address: '127.0.0.1', port: 40002 });
    assert.deepEqual(b.found[0], { nodeKey: key(1), address: '127.0.0.1', port: 40001 });
    await b.lan.stop();
    await until('goodbye heard', () => (a.lan.counters?.goodbyes ?? 0) > 0 ? true : undefined, { timeoutMs: 5000 });
  } finally {
    await a.lan.stop();
    await b.lan.stop();
  }
});

test('an undecodable datagram is dropped and counted', async () => {
  const a = discoverer();
  a.lan.start({ name: 'ant', nodeKey: key(1), discoKey: key(11), port: 40001, meshId: MESH });
  const s = createSocket('udp4');
  try {
    s.bind(0, '127.0.0.1');
    await new Promise((r) => s.once('listening', r));
    s.setMulticastInterface('127.0.0.1');
    s.send(Buffer.from('not dns at all'), PORT, '224.0.0.251');
    await until('counted', () => (a.lan.counters?.malformed ?? 0) > 0 ? true : undefined, { timeoutMs: 5000 });
  } finally {
    s.close();
    await a.lan.stop();
  }
});

test('interface selection: an allow-list, loopback only when named, never the tunnel, IPv4 only', () => {
  const table = {
    lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '', internal: true, cidr: '127.0.0.1/8' }],
    eth0: [
      { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
      { address: '192.168.1.20', netmask: '255.255.255.0', family: 'IPv4', mac: '', internal: false, cidr: '192.168.1.20/24' },
    ],
    knit0: [{ address: '100.96.0.2', netmask: '255.255.0.0', family: 'IPv4', mac: '', internal: false, cidr: '100.96.0.2/16' }],
  } as Parameters<typeof selectLanInterfaces>[0];
  assert.deepEqual(selectLanInterfaces(table, undefined, ['knit0']), [{ name: 'eth0', address: '192.168.1.20', prefixLen: 24 }]);
  assert.deepEqual(selectLanInterfaces(table, ['lo'], ['knit0']), [{ name: 'lo', address: '127.0.0.1', prefixLen: 8 }]);
  assert.deepEqual(selectLanInterfaces(table, ['knit0'], ['knit0']), []);
  assert.deepEqual(selectLanInterfaces(table, ['wlan0']), []);
});
