/**
 * The topology builder: deterministic addresses in the documented ranges,
 * NAT chains, extra LANs, the positional form the scenarios use, and clear
 * errors for impossible builds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NAT_PRESETS } from '../../sim/nat.js';
import { Topology } from '../../sim/topology.js';
import { listen, quietTopology, text, type Heard } from './lab.js';

test('addresses are handed out in creation order from the documented ranges', () => {
  const build = () => {
    const t = new Topology({ seed: 1 });
    const n1 = t.addNat('easy');
    const n2 = t.addNat('hard', { name: 'sym' });
    const router = t.addNat('none');
    const home = t.addNat('cgnat');
    const lan2 = t.addLan(n1);
    return {
      internet: [t.addHost('i1').ip, t.addHost('i2', 'internet').ip],
      nats: [n1.name, n1.publicIp, n2.name, n2.publicIp, router.publicIp, home.parent!.publicIp, home.publicIp],
      lans: [t.addHost('a', n1).ip, t.addHost('b', n1).ip, t.addHost('c', n2).ip, t.addHost('d', router).ip, t.addHost('e', home).ip, t.addHost('f', n1, { lan: lan2 }).ip],
    };
  };
  const got = build();
  assert.deepEqual(got, {
    internet: ['198.18.0.10', '198.18.0.11'],
    nats: ['nat1', '198.19.0.10', 'sym', '198.19.0.11', '198.19.0.12', '198.19.0.13', '100.64.0.10'],
    lans: ['10.0.1.10', '10.0.1.11', '10.0.2.10', '198.18.128.10', '10.0.3.10', '10.0.4.10'],
  });
  assert.deepEqual(build(), got, 'the same build, the same addresses');
});

test('the positional form addNat(name, preset, behind?) builds the same NATs the scenarios expect', () => {
  const t = new Topology({ seed: 1 });
  const carrier = t.addNat('cgnat-isp', 'easy');
  const home = t.addNat('home', 'easy', carrier);
  const custom = t.addNat('custom', { ...NAT_PRESETS.easy, timeoutMs: 120_000 });
  assert.equal(home.parent, carrier);
  assert.match(home.publicIp, /^100\.64\./, 'a NAT named cgnat… numbers its LAN from RFC 6598 space');
  assert.equal(custom.behaviour.timeoutMs, 120_000);
  assert.deepEqual(t.nats.map((n) => n.name), ['cgnat-isp', 'home', 'custom']);
});

test('options override a preset; nonsense is refused', () => {
  const t = new Topology({ seed: 1 });
  const n = t.addNat('easy', { timeoutMs: 300_000, hairpin: true, refreshOnInbound: true, ports: 'random' });
  assert.deepEqual([n.behaviour.timeoutMs, n.behaviour.hairpin, n.behaviour.refreshOnInbound, n.behaviour.ports], [300_000, true, true, 'random']);
  assert.equal(NAT_PRESETS.easy.timeoutMs, 30_000, 'the preset itself is untouched');
  assert.throws(() => t.addNat('nonsense' as 'easy'), RangeError);
  assert.throws(() => t.addNat('easy', { timeoutMs: 0 }), RangeError);
  assert.throws(() => t.addNat('easy', { mapping: 'XX' as 'EI' }), RangeError);
  const other = t.addNat('easy');
  assert.throws(() => t.addHost('h', n, { lan: other.inside }), RangeError, 'a LAN of another gateway');
  assert.throws(() => t.addHost('h', undefined, { lan: t.internet() }), RangeError, 'the internet is not a LAN');
  assert.throws(() => t.addNat('cgnat', { carrier: other }), RangeError, 'not a carrier NAT');
  const h = t.addHost('h', n, { lan: n.inside });
  assert.equal(h.segment, n.inside);
});

test('a `none` router: hosts have public addresses, and anyone may reach them', async () => {
  const t = quietTopology();
  const r = t.addNat('none');
  const log: Heard[] = [];
  const h = t.addHost('h', r);
  listen(h, 41641, log);
  const x = t.addHost('x').bindUdp(1);
  x.send(text('hello'), { address: h.ip, port: 41641 });
  h.sockets.get(41641)!.send(text('out'), { address: x.host.ip, port: 1 });
  let from = '';
  x.onMessage((_d, f) => { from = `${f.address}:${f.port}`; });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((l) => l.text), ['hello']);
  assert.equal(from, `${h.ip}:41641`, 'no translation');
});

test('a `none` router behind a NAT: its hosts sit behind that NAT, reachable through it', async () => {
  const t = quietTopology();
  const nat = t.addNat('easy-ei');
  const sw = t.addNat('none', { behind: nat });
  const log: Heard[] = [];
  const h = t.addHost('h', sw);
  assert.match(h.ip, /^10\.0\.2\./);
  const s = listen(h, 41641, log);
  const x = t.addHost('x').bindUdp(1);
  let mapped = '';
  x.onMessage((_d, f) => { mapped = `${f.address}:${f.port}`; });
  s.send(text('out'), { address: x.host.ip, port: 1 });
  await t.clock.runFor(100);
  assert.equal(mapped, `${nat.publicIp}:41641`);
  x.send(text('back'), { address: nat.publicIp, port: 41641 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((l) => l.text), ['back']);
});
