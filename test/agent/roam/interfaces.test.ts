import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createInterfaceMonitor, selectAddresses, type AddressChange, type InterfaceTable } from '../../../agent/roam/interfaces.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const info = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal, netmask: '', mac: '', cidr: null }) as never;

const TABLE: InterfaceTable = {
  lo: [info('127.0.0.1', 'IPv4', true), info('::1', 'IPv6', true)],
  eth0: [info('10.0.0.2', 'IPv4'), info('fe80::1', 'IPv6'), info('fd00::2', 'IPv6'), info('10.0.0.2', 'IPv4')],
  wlan0: [info('192.168.1.5', 'IPv4')],
  dummy0: [info('203.0.113.5', 'IPv4', true)], // flagged internal by the OS
  knit0: [info('100.64.0.3', 'IPv4')],
};

test('selectAddresses (table): allow-list, loopback and internal only when named, link-local v6 never, exclude wins', () => {
  const rows: { name: string; allow?: string[]; exclude?: string[]; want: string[] }[] = [
    { name: 'default: everything usable', exclude: ['knit0'], want: ['10.0.0.2', '192.168.1.5', 'fd00::2'] },
    { name: 'the tunnel interface when not excluded', want: ['10.0.0.2', '100.64.0.3', '192.168.1.5', 'fd00::2'] },
    { name: 'lo named (single-machine tests)', allow: ['lo'], want: ['127.0.0.1', '::1'] },
    { name: 'one interface', allow: ['eth0'], want: ['10.0.0.2', 'fd00::2'] },
    { name: 'an internal interface named', allow: ['dummy0'], want: ['203.0.113.5'] },
    { name: 'an unknown name', allow: ['nope'], want: [] },
    { name: 'exclude beats allow', allow: ['eth0', 'knit0'], exclude: ['knit0'], want: ['10.0.0.2', 'fd00::2'] },
  ];
  for (const r of rows) assert.deepEqual(selectAddresses(TABLE, r.allow, r.exclude), r.want, r.name);
});

test('selectAddresses tolerates odd rows: numeric family (old Node), v4-mapped text, missing entries', () => {
  const odd = {
    eth0: [{ address: 'FE80::9', family: 6, internal: false }, { address: '::ffff:10.1.1.1', family: 'IPv6', internal: false }, { address: 7 }, null],
    eth1: undefined,
  } as unknown as InterfaceTable;
  assert.deepEqual(selectAddresses(odd), ['10.1.1.1']);
});

test('the monitor reports a change once, on the next poll after it happens, with what was added and removed', () => {
  const clock = new ManualClock();
  let table: InterfaceTable = { eth0: [info('10.0.0.2', 'IPv4')], wlan0: [info('192.168.1.5', 'IPv4')] };
  const changes: AddressChange[] = [];
  const m = createInterfaceMonitor({ clock, read: () => table, onChange: (_a, c) => changes.push(c), intervalMs: 2000 });
  assert.deepEqual(m.addresses(), ['10.0.0.2', '192.168.1.5'], 'read at creation');
  m.start();
  m.start(); // idempotent: still one timer
  assert.equal(clock.pending, 1);
  clock.advance(4000);
  assert.deepEqual(changes, []);
  table = { eth0: [info('10.0.1.7', 'IPv4')], wlan0: [info('192.168.1.5', 'IPv4')] };
  clock.advance(1999);
  assert.deepEqual(changes, [], 'not before the poll');
  clock.advance(1);
  clock.advance(2000);
  assert.deepEqual(changes, [{ addresses: ['10.0.1.7', '192.168.1.5'], added: ['10.0.1.7'], removed: ['10.0.0.2'] }]);
  assert.deepEqual(m.addresses(), ['10.0.1.7', '192.168.1.5']);
  m.stop();
  m.stop();
  assert.equal(clock.pending, 0, 'stop leaves no timer behind');
  table = {};
  clock.advance(10_000);
  assert.equal(changes.length, 1, 'no polling after stop');
});

test('a netlink hint (poke) makes the monitor look 100 ms later, once per burst; subscribe/unsubscribe', () => {
  const clock = new ManualClock();
  let table: InterfaceTable = { eth0: [info('10.0.0.2', 'IPv4')] };
  const seen: string[][] = [];
  const m = createInterfaceMonitor({ clock, read: () => table, intervalMs: 2000 });
  const unsubscribe = m.subscribe((a) => seen.push(a));
  m.poke();
  assert.equal(clock.pending, 0, 'a poke before start does nothing');
  m.start();
  table = { eth0: [info('10.0.9.9', 'IPv4')] };
  m.poke();
  m.poke();
  assert.equal(clock.pending, 2, 'the poll timer and one settle timer');
  clock.advance(99);
  assert.deepEqual(seen, []);
  clock.advance(1);
  assert.deepEqual(seen, [['10.0.9.9']]);
  unsubscribe();
  table = { eth0: [info('10.0.9.10', 'IPv4')] };
  clock.advance(2000);
  assert.deepEqual(seen, [['10.0.9.9']], 'unsubscribed');
  assert.deepEqual(m.addresses(), ['10.0.9.10']);
  m.stop();
  assert.equal(clock.pending, 0);
});

test('a failing read keeps the last good set and is counted', () => {
  const clock = new ManualClock();
  let fail = false;
  const changes: string[][] = [];
  const m = createInterfaceMonitor({
    clock, intervalMs: 1000, onChange: (a) => changes.push(a),
    read: () => { if (fail) throw new Error('getifaddrs failed'); return { eth0: [info('10.0.0.2', 'IPv4')] }; },
  });
  m.start();
  fail = true;
  clock.advance(3000);
  assert.deepEqual(m.addresses(), ['10.0.0.2']);
  assert.deepEqual(changes, []);
  assert.equal(m.readErrors(), 3);
  m.stop();
});
