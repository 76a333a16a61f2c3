import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultUrl } from '../../coordinator/index.js';

const iface = (address: string, internal: boolean) => ({ address, family: 'IPv4' as const, internal, netmask: '', mac: '', cidr: null });

test('the URL in tokens: the listen address, or the first external IPv4 when listening everywhere', () => {
  assert.equal(defaultUrl({ host: '198.18.0.5', port: 8080 }), 'http://198.18.0.5:8080');
  assert.equal(defaultUrl({ host: '0.0.0.0', port: 8080 }, { lo: [iface('127.0.0.1', true)], eth0: [iface('198.18.7.7', false)] }), 'http://198.18.7.7:8080');
  assert.equal(defaultUrl({ host: '0.0.0.0', port: 8080 }, { lo: [iface('127.0.0.1', true)] }), 'http://127.0.0.1:8080');
  assert.equal(defaultUrl({ host: '::1', port: 9 }), 'http://[::1]:9');
});
