import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createInterfaceMonitor, selectAddresses, type InterfaceTable } from '../../../agent/roam/interfaces.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const info = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal, netmask: '', mac: '', cidr: null }) as never;

const TABLE: InterfaceTable = {
  lo: [info('127.0.0.1', 'IPv4', true), info('::1', 'IPv6', true)],
  eth0: [info('10.0.0.2', 'IPv4'), info('fe80::1', 'IPv6'), info('fd00::2', 'IPv6')],
  wlan0: [info('192.168.1.5', 'IPv4')],
};

test('interface selection: loopback only when named, link-local never, allow-list respected', () => {
  assert.deepEqual(selectAddresses(TABLE), ['10.0.0.2', '192.168.1.5', 'fd00::2']);
  assert.deepEqual(selectAddresses(TABLE, ['lo']), ['127.0.0.1', '::1']);
  assert.deepEqual(selectAddresses(TABLE, ['eth0']), ['10.0.0.2', 'fd00::2']);
  assert.deepEqual(selectAddresses(TABLE, ['nope']), []);
  assert.deepEqual(selectAddresses({ ...TABLE, knit0: [info('100.64.0.3', 'IPv4')] }, undefined, ['knit0']), ['10.0.0.2', '192.168.1.5', 'fd00::2'], 'the tunnel interface never gives candidates');
});

test('the monitor reports a change once, on the next poll after it happens', () => {
  const clock = new ManualClock();
  let table: InterfaceTable = { eth0: [info('10.0.0.2', 'IPv4')] };
  const changes: string[][] = [];
  const m = createInterfaceMonitor({ clock, read: () => table, onChange: (a) => changes.push(a), intervalMs: 2000 });
  m.start();
  clock.advance(4000);
  assert.deepEqual(changes, []);
  table = { eth0: [info('10.0.1.7', 'IPv4')] };
  clock.advance(2000);
  clock.advance(2000);
  assert.deepEqual(changes, [['10.0.1.7']]);
  m.stop();
  assert.equal(clock.pending, 0, 'stop leaves no timer behind');
});

test('a netlink hint (poke) makes the monitor look at once, not at the next poll', () => {
  const clock = new ManualClock();
  let table: InterfaceTable = { eth0: [info('10.0.0.2', 'IPv4')] };
  const changes: string[][] = [];
  const m = createInterfaceMonitor({ clock, read: () => table, onChange: (a) => changes.push(a), intervalMs: 2000 });
  m.start();
  table = { eth0: [info('10.0.9.9', 'IPv4')] };
  m.poke();
  m.poke(); // a burst of netlink events costs one look
  clock.advance(100);
  assert.deepEqual(changes, [['10.0.9.9']]);
  m.stop();
  assert.equal(clock.pending, 0);
});
