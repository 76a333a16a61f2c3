// IP predicates: the hand-written IPv4 parser agrees with node's isIPv4, and the
// predicates classify addresses (and v4-mapped v6 forms) as the RFCs say.
import assert from 'node:assert/strict';
import { isIPv4 } from 'node:net';
import { describe, it } from 'node:test';
import {
  ipv4Octets, isLinkLocalIp, isLoopbackIp, isMulticastIp, isPrivateIp, isUnspecifiedIp, normalizeIp,
} from '../../../shared/net/addr.js';

describe('ipv4Octets', () => {
  const samples = [
    '0.0.0.0', '10.0.0.1', '255.255.255.255', '198.18.0.1', '1.2.3.4', '01.2.3.4', '1.2.3.04', '256.1.1.1', '1.2.3', '1.2.3.4.5',
    '1..2.3', '.1.2.3', '1.2.3.', '', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.a', '1000.1.1.1', '::1', 'fe80::1', '::ffff:10.0.0.1', '١.٢.٣.٤', '0.00.0.0',
  ];
  for (const s of samples) {
    it(`${JSON.stringify(s)}: as strict as node's isIPv4`, () => {
      const octets = ipv4Octets(s);
      assert.equal(octets !== undefined, isIPv4(s));
      if (octets) assert.deepEqual(octets, s.split('.').map(Number));
    });
  }
  it('agrees with isIPv4 on 20,000 random short strings of digits and dots', () => {
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 20_000; i++) {
      const s = Array.from({ length: 3 + (next() % 13) }, () => '0123456789.'[next() % 11]).join('');
      assert.equal(ipv4Octets(s) !== undefined, isIPv4(s), s);
    }
  });
});

describe('IP predicates', () => {
  it('classify private, loopback, link-local, multicast and unspecified addresses', () => {
    for (const ip of ['10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '100.127.255.255', '169.254.1.1', 'fd00::1', 'fe80::1', '::ffff:10.0.0.1']) {
      assert.equal(isPrivateIp(ip), true, ip);
    }
    for (const ip of ['172.32.0.1', '100.128.0.1', '198.18.0.1', '8.8.8.8', '2001:db8::1', '11.0.0.1']) assert.equal(isPrivateIp(ip), false, ip);
    assert.equal(isLoopbackIp('127.0.0.1'), true);
    assert.equal(isLoopbackIp('::1'), true);
    assert.equal(isLoopbackIp('::FFFF:127.0.0.1'), true);
    assert.equal(isLoopbackIp('128.0.0.1'), false);
    assert.equal(isLinkLocalIp('169.254.0.1'), true);
    assert.equal(isLinkLocalIp('FE80::1'), true);
    assert.equal(isMulticastIp('224.0.0.251'), true);
    assert.equal(isMulticastIp('ff02::fb'), true);
    assert.equal(isMulticastIp('240.0.0.1'), false);
    assert.equal(isUnspecifiedIp('0.0.0.0'), true);
    assert.equal(isUnspecifiedIp('0.1.2.3'), true);
    assert.equal(isUnspecifiedIp('::'), true);
    assert.equal(isUnspecifiedIp('1.0.0.0'), false);
  });

  it('normalizeIp lower-cases v6 and unmaps v4-mapped addresses, and leaves dotted IPv4 alone', () => {
    assert.equal(normalizeIp('FE80::A'), 'fe80::a');
    assert.equal(normalizeIp('::FFFF:198.18.0.1'), '198.18.0.1');
    assert.equal(normalizeIp('198.18.0.1'), '198.18.0.1');
  });
});
