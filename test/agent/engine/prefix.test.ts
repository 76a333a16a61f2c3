// Prefix text: canonical forms for addresses (host bits kept) and allowed IPs (masked).
import assert from 'node:assert/strict';
import { describe, it, test } from 'node:test';
import { canonicalAddress, canonicalAllowedIp, formatIpBytes, meshAllowedIps, parseIpBytes } from '../../../agent/engine/prefix.js';

describe('prefix text', () => {
  const cases: Array<[input: string, address: string | undefined, allowed: string | undefined]> = [
    ['100.96.0.2/10', '100.96.0.2/10', '100.64.0.0/10'],
    ['10.0.0.5', '10.0.0.5/32', '10.0.0.5/32'],
    ['0.0.0.0/0', '0.0.0.0/0', '0.0.0.0/0'],
    ['FD7A:115C:A1E0:0:0:0:0:9/64', 'fd7a:115c:a1e0::9/64', 'fd7a:115c:a1e0::/64'],
    ['fd00::5/64', 'fd00::5/64', 'fd00::/64'],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128', '2001:db8::1:0:0:1/128'],
    ['2001:db8:0:1:1:1:1:1/48', '2001:db8:0:1:1:1:1:1/48', '2001:db8::/48'],
    ['::ffff:198.18.0.1/128', '::ffff:c612:1/128', '::ffff:c612:1/128'],
    ['::/0', '::/0', '::/0'],
    ['1:0:0:2:0:0:0:3/128', '1:0:0:2::3/128', '1:0:0:2::3/128'],
    ['10.0.0.0/33', undefined, undefined],
    ['10.0.0.0/08', undefined, undefined],
    ['10.0.0/8', undefined, undefined],
    ['fe80::1%eth0/64', undefined, undefined],
    ['1::2::3/64', undefined, undefined],
    ['10.0.0.0/8 ', undefined, undefined],
    ['', undefined, undefined],
  ];
  for (const [input, address, allowed] of cases) {
    it(`${JSON.stringify(input)} → ${address} / ${allowed}`, () => {
      assert.equal(canonicalAddress(input), address);
      assert.equal(canonicalAllowedIp(input), allowed);
    });
  }

  it('rejects non-strings', () => {
    assert.equal(canonicalAddress(undefined), undefined);
    assert.equal(canonicalAllowedIp(42), undefined);
  });

  it('formats v6 per RFC 5952 (a lone zero group is not compressed, the first longest run is)', () => {
    assert.equal(formatIpBytes(parseIpBytes('2001:db8:0:1:1:1:1:1')!), '2001:db8:0:1:1:1:1:1');
    assert.equal(formatIpBytes(parseIpBytes('2001:0:0:1:0:0:1:1')!), '2001::1:0:0:1:1');
    assert.equal(formatIpBytes(parseIpBytes('::')!), '::');
    assert.equal(formatIpBytes(parseIpBytes('::1')!), '::1');
  });
});

test('meshAllowedIps: only single mesh addresses become WireGuard routes', () => {
  const mesh = { ipv4Prefix: '100.96.0.0/16', ipv6Prefix: 'fd12:3456:789a::/48' };
  assert.deepEqual(meshAllowedIps(['100.96.0.7/32', 'fd12:3456:789a::7/128'], mesh), ['100.96.0.7/32', 'fd12:3456:789a::7/128']);
  assert.deepEqual(meshAllowedIps(['0.0.0.0/1', '128.0.0.0/1', '0.0.0.0/0', '::/0', '100.96.0.0/16', '100.96.0.7/31'], mesh), [], 'no prefix wider than one host');
  assert.deepEqual(meshAllowedIps(['192.168.1.10/32', '100.97.0.1/32', 'fd00::1/128', 'nonsense'], mesh), [], 'nothing outside the mesh');
});
