/**
 * The virtual network: seeded loss, jitter and reordering (same seed, same
 * trace); hop-by-hop latency with NAT state read when a packet reaches the
 * NAT (so crossing pings punch through, as on a real network); multicast that
 * stays on its LAN; the UdpSocket seam's behaviour; multi-homed hosts;
 * roaming and renumbering; drop counters by reason.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SIM_EPOCH_MS } from '../../sim/clock.js';
import { EPHEMERAL_PORT_MIN, UDP_MAX_PAYLOAD, type DropReason } from '../../sim/net.js';
import { Topology } from '../../sim/topology.js';
import { listen, quietTopology, reflector, seen, text, type Heard } from './lab.js';

async function trace(seed: number): Promise<string[]> {
  const t = new Topology({ seed, internet: { latencyMs: 20, jitterMs: 10, loss: 0.2 }, lan: { latencyMs: 1, jitterMs: 2, loss: 0.05 }, settle: false });
  const nat = t.addNat('easy-ei');
  const a = t.addHost('a', nat);
  const b = t.addHost('b');
  const out: string[] = [];
  t.net.onDeliver = (at, from, to, bytes) => out.push(`${at - SIM_EPOCH_MS}|${from}|${to}|${bytes}`);
  t.net.onDrop = (at, reason, from, to) => out.push(`${at - SIM_EPOCH_MS}|drop ${reason}|${from}|${to}`);
  const sa = a.bindUdp(1000);
  const sb = b.bindUdp(2000);
  sb.onMessage((d, from) => sb.send(d, from)); // echo
  for (let i = 0; i < 60; i++) sa.send(new Uint8Array(i + 1), { address: b.ip, port: 2000 });
  await t.clock.runFor(1000);
  return out;
}

test('same seed, same trace; another seed, another trace (loss, jitter and reordering are seeded)', async () => {
  const t1 = await trace(7);
  assert.deepEqual(await trace(7), t1);
  assert.notDeepEqual(await trace(8), t1);
  const delivered = t1.filter((l) => !l.includes('|drop ') && l.split('|')[2] === '198.18.0.10:2000'); // a → b, not the echoes
  const lost = t1.filter((l) => l.includes('drop loss'));
  assert.ok(delivered.length > 30 && delivered.length < 55, `about 25% lost on the way: ${delivered.length} of 60 arrived`);
  assert.ok(lost.length > 5);
  const sizes = delivered.map((l) => Number(l.split('|')[3]));
  assert.notDeepEqual(sizes, [...sizes].sort((x, y) => x - y), 'jitter reorders');
});

test('latency adds up hop by hop: LAN 1 ms + internet 15 ms + LAN 1 ms', async () => {
  const t = quietTopology();
  const na = t.addNat('easy-ei');
  const nb = t.addNat('one-to-one');
  const log: Heard[] = [];
  const sa = t.addHost('a', na).bindUdp(1);
  listen(t.addHost('b', nb), 2, log);
  const pub = t.addHost('pub');
  listen(pub, 3, log);
  sa.send(text('to nat'), { address: nb.publicIp, port: 2 });
  sa.send(text('to pub'), { address: pub.ip, port: 3 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((h) => [h.text, h.at]), [['to pub', 16], ['to nat', 17]]);
});

test('hole punching: pings that cross on the internet both get through port-restricted NATs; a lone early ping does not', async () => {
  for (const crossing of [true, false]) {
    const t = quietTopology();
    const la: Heard[] = [];
    const lb: Heard[] = [];
    const sa = listen(t.addHost('a', t.addNat('easy')), 41641, la);
    const sb = listen(t.addHost('b', t.addNat('easy')), 41641, lb);
    reflector(t.addHost('stun'), 3478);
    const stun = { address: '198.18.0.10', port: 3478 };
    sa.send(text('stun'), stun);
    sb.send(text('stun'), stun);
    await t.clock.runFor(100);
    const pa = seen(la[0])!;
    const pb = seen(lb[0])!;
    sa.send(text('ping a'), pb);
    if (!crossing) await t.clock.runFor(100); // a's ping reaches b's NAT before b has sent anything
    sb.send(text('ping b'), pa);
    await t.clock.runFor(100);
    const got = [la.some((h) => h.text === 'ping b'), lb.some((h) => h.text === 'ping a')];
    assert.deepEqual(got, crossing ? [true, true] : [true, false], `crossing ${crossing}`);
    assert.equal(t.net.counters.dropped['nat-filtered'], crossing ? 0 : 1);
  }
});

test('multicast reaches the joined sockets of its own LAN only: not across a NAT, not to another LAN, not on the internet', async () => {
  const t = quietTopology();
  const group = '224.0.0.251';
  const nat = t.addNat('easy-ei');
  const lan2 = t.addLan(nat);
  const log: Heard[] = [];
  const h0 = t.addHost('h0', nat);
  const h1 = t.addHost('h1', nat);
  const h2 = t.addHost('h2', nat);
  const other = t.addHost('other-lan', nat, { lan: lan2 });
  const outsider = t.addHost('outsider');
  const s0 = listen(h0, 5353, log, { multicast: [group] });
  listen(h1, 5353, log, { multicast: [group] });
  listen(h2, 5353, log); // not joined
  listen(other, 5353, log, { multicast: [group] });
  listen(outsider, 5353, log, { multicast: [group] });
  const bound = h1.bindUdp(5354, { address: h1.ip, multicast: [group] }); // bound to a unicast address: hears no multicast
  bound.onMessage(() => log.push({ at: 0, to: 'bound', from: '', text: 'x' }));
  s0.send(text('query'), { address: group, port: 5353 });
  h2.bindUdp(0).send(text('query2'), { address: group, port: 5354 });
  outsider.bindUdp(0).send(text('wan'), { address: group, port: 5353 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((h) => `${h.to}<${h.from}:${h.text}`).sort(), ['h0:5353<10.0.1.10:5353:query', 'h1:5353<10.0.1.10:5353:query']);
  assert.equal(t.net.counters.dropped['multicast-scope'], 1);
  // Leaving the group stops delivery.
  log.length = 0;
  h1.sockets.get(5353)!.dropMembership(group);
  s0.send(text('again'), { address: group, port: 5353 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((h) => h.to), ['h0:5353']);
  assert.throws(() => s0.addMembership('10.0.0.1'), RangeError);
});

test('a host on two LANs sends multicast on its default interface, or the one chosen with setMulticastInterface', async () => {
  const t = quietTopology();
  const n1 = t.addNat('easy');
  const n2 = t.addNat('easy');
  const group = '239.1.2.3';
  const log: Heard[] = [];
  const both = t.addHost('both', n1);
  const second = t.attach(both, n2);
  listen(t.addHost('on-1', n1), 5353, log, { multicast: [group] });
  listen(t.addHost('on-2', n2), 5353, log, { multicast: [group] });
  const s = both.bindUdp(5353, { multicast: [group] });
  s.send(text('default'), { address: group, port: 5353 });
  await t.clock.runFor(10);
  s.setMulticastInterface(second);
  s.send(text('chosen'), { address: group, port: 5353 });
  await t.clock.runFor(10);
  assert.throws(() => s.setMulticastInterface('10.9.9.9'), RangeError);
  assert.deepEqual(log.map((h) => `${h.to}:${h.text}`), ['on-1:5353:default', 'on-2:5353:chosen']);
});

test('unicast is routed between two LANs of one gateway without translation', async () => {
  const t = quietTopology();
  const nat = t.addNat('easy');
  const lan2 = t.addLan(nat);
  const log: Heard[] = [];
  const a = t.addHost('a', nat).bindUdp(1);
  const b = t.addHost('b', nat, { lan: lan2 });
  listen(b, 2, log);
  a.send(text('x'), { address: b.ip, port: 2 });
  await t.clock.runFor(10);
  assert.deepEqual(log.map((h) => [h.from, h.at]), [[`${a.host.ip}:1`, 2]]);
  assert.equal(nat.table.size, 0);
});

test('sockets: deterministic ephemeral ports, port in use, close, in-flight packets, bad input', async () => {
  const t = quietTopology();
  const h = t.addHost('h');
  const peer = t.addHost('peer');
  const p1 = h.bindUdp(0);
  const p2 = h.bindUdp(0);
  assert.deepEqual([p1.localPort(), p2.localPort()], [EPHEMERAL_PORT_MIN, EPHEMERAL_PORT_MIN + 1]);
  assert.throws(() => h.bindUdp(p1.localPort()), RangeError);
  assert.throws(() => h.bindUdp(70000), RangeError);
  assert.throws(() => h.bindUdp(5, { address: '198.18.9.9' }), RangeError);
  const log: Heard[] = [];
  const target = listen(peer, 9000, log);
  p1.send(text('in flight'), { address: peer.ip, port: 9000 });
  target.close();
  target.close(); // idempotent
  await t.clock.runFor(100);
  assert.deepEqual(log, []);
  const d = t.net.counters.dropped;
  assert.equal(d['no-socket'], 1, 'arrived after the socket closed');
  p2.close();
  p2.send(text('after close'), { address: peer.ip, port: 9000 });
  assert.equal(d['socket-closed'], 1);
  assert.equal(h.bindUdp(EPHEMERAL_PORT_MIN + 1).localPort(), EPHEMERAL_PORT_MIN + 1, 'a closed port is free again');
  assert.equal(h.bindUdp(0).localPort(), EPHEMERAL_PORT_MIN + 2, 'ephemeral ports go round in order');
  assert.throws(() => p1.send(text('x'), { address: peer.ip, port: 0 }), RangeError);
  assert.throws(() => p1.send('x' as unknown as Uint8Array, { address: peer.ip, port: 1 }), TypeError);
  p1.send(new Uint8Array(UDP_MAX_PAYLOAD + 1), { address: peer.ip, port: 9000 });
  p1.send(text('x'), { address: 'not-an-ip', port: 9000 });
  p1.send(text('x'), { address: '2001:db8::1', port: 9000 });
  await t.clock.runFor(100);
  assert.equal(d['too-big'], 1);
  assert.equal(d['no-route'], 2, 'the sim routes IPv4 only; anything else goes nowhere');
});

test('the sender may reuse its buffer; loopback and own-address packets stay on the host', async () => {
  const t = quietTopology();
  const h = t.addHost('h');
  const log: Heard[] = [];
  const s = listen(h, 7, log);
  const buf = text('one');
  s.send(buf, { address: '127.0.0.1', port: 7 });
  buf.set(text('two'));
  s.send(buf, { address: h.ip, port: 7 });
  await t.clock.runFor(1);
  assert.deepEqual(log.map((x) => [x.text, x.from, x.at]), [['one', '127.0.0.1:7', 0], ['two', `${h.ip}:7`, 0]]);
});

test('a multi-homed host: LAN traffic leaves by the LAN interface, the rest by the default one', async () => {
  const t = quietTopology();
  const nat = t.addNat('easy-ei');
  const laptop = t.addHost('laptop', nat); // Wi-Fi behind the NAT: the default route
  const wired = t.attach(laptop, 'internet'); // and a public interface
  assert.deepEqual(laptop.addresses(), ['10.0.1.10', wired]);
  const neighbour = t.addHost('n', nat);
  const server = t.addHost('srv');
  const log: Heard[] = [];
  listen(neighbour, 1, log);
  listen(server, 2, log);
  const s = laptop.bindUdp(5000);
  s.send(text('lan'), { address: neighbour.ip, port: 1 });
  s.send(text('wan'), { address: server.ip, port: 2 });
  const viaWired = laptop.bindUdp(5001, { address: wired });
  viaWired.send(text('bound'), { address: server.ip, port: 2 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((h) => [h.text, h.from]).sort(), [['bound', `${wired}:5001`], ['lan', '10.0.1.10:5000'], ['wan', `${nat.publicIp}:5000`]]);
  laptop.detach(wired);
  assert.deepEqual(laptop.addresses(), ['10.0.1.10']);
});

test('roaming: a moved host keeps its sockets, gets a new address; packets to the old one are lost', async () => {
  const t = quietTopology({ lan: { latencyMs: 10 } });
  const home = t.addNat('easy-ei');
  const cafe = t.addNat('easy-ei');
  const log: Heard[] = [];
  const h = t.addHost('h', home);
  const s = listen(h, 41641, log);
  const peer = t.addHost('peer');
  const ps = reflector(peer, 3478);
  s.send(text('stun'), { address: peer.ip, port: 3478 });
  await t.clock.runFor(100);
  const before = seen(log[0])!;
  assert.equal(before.address, home.publicIp);
  ps.send(text('in flight'), before);
  await t.clock.runFor(20); // through the NAT (at 15 ms), on the home LAN when the host leaves
  const addr = t.moveHost(h, cafe);
  assert.equal(h.ip, addr);
  assert.equal(h.sockets.get(41641), s);
  await t.clock.runFor(100);
  assert.ok(!log.some((x) => x.text === 'in flight'));
  assert.equal(t.net.counters.dropped['no-route'], 1, 'the home LAN no longer has that address');
  assert.equal(home.table.size, 1, 'and the lost packet did not bounce back out through the NAT');
  s.send(text('stun'), { address: peer.ip, port: 3478 });
  await t.clock.runFor(100);
  assert.equal(seen(log.at(-1))?.address, cafe.publicIp);
  t.moveHost(h, 'internet');
  assert.match(h.ip, /^198\.18\.0\./);
});

test('renumbering: a NAT takes a new public address; the old one is dead and every mapping is gone', async () => {
  const t = quietTopology();
  const nat = t.addNat('easy-ei');
  const log: Heard[] = [];
  const s = listen(t.addHost('h', nat), 41641, log);
  const peer = t.addHost('peer');
  reflector(peer, 3478);
  s.send(text('stun'), { address: peer.ip, port: 3478 });
  await t.clock.runFor(100);
  const old = seen(log[0])!;
  const fresh = t.renumberNat(nat);
  assert.notEqual(fresh, old.address);
  assert.equal(nat.publicIp, fresh);
  assert.equal(nat.table.size, 0);
  const x = peer.bindUdp(0);
  x.send(text('to old'), old);
  x.send(text('to new, no mapping'), { address: fresh, port: old.port });
  await t.clock.runFor(100);
  const d = t.net.counters.dropped;
  assert.deepEqual([d['no-route'], d['nat-filtered']], [1, 1]);
  s.send(text('stun'), { address: peer.ip, port: 3478 });
  await t.clock.runFor(100);
  assert.equal(seen(log.at(-1))?.address, fresh);
});

test('counters: sent, delivered and each drop reason add up', async () => {
  const t = quietTopology({ internet: { loss: 0.5, jitterMs: 0 } });
  const a = t.addHost('a').bindUdp(1);
  const b = t.addHost('b');
  b.bindUdp(2);
  for (let i = 0; i < 200; i++) a.send(text('x'), { address: b.ip, port: 2 });
  await t.clock.runFor(100);
  const c = t.net.counters;
  const dropped = Object.values(c.dropped).reduce((x, y) => x + y, 0);
  assert.equal(c.sent, 200);
  assert.equal(c.delivered + dropped, 200);
  assert.ok(c.dropped.loss > 60 && c.dropped.loss < 140, `${c.dropped.loss} lost at 50%`);
  assert.deepEqual(Object.keys(c.dropped).sort(), ['hairpin', 'loss', 'multicast-scope', 'nat-blocked', 'nat-filtered', 'no-route', 'no-socket', 'socket-closed', 'too-big', 'ttl'] satisfies DropReason[]);
});
