/**
 * The simulator's NAT presets behave as their RFC 4787 labels say, checked
 * with plain virtual UDP sockets on a virtual clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatEndpoint } from '../../shared/net/addr.js';
import { VirtualClock } from '../../sim/clock.js';
import { NAT_PRESETS, type NatBehaviour } from '../../sim/nat.js';
import { SeededRandom } from '../../sim/random.js';
import { SimHost, SimNat, SimNetwork, type VirtualUdpSocket } from '../../sim/net.js';

function lab(behaviour: NatBehaviour) {
  const clock = new VirtualClock();
  const random = new SeededRandom(5);
  const net = new SimNetwork(clock, random, { latencyMs: 10, jitterMs: 0, loss: 0 });
  const nat = new SimNat('nat', '198.18.1.1', net.internet, behaviour, random, { latencyMs: 1, jitterMs: 0, loss: 0 });
  net.internet.nodes.set(nat.publicIp, nat);
  const inside = new SimHost('in', '10.1.0.10', nat.inside, net);
  nat.inside.nodes.set(inside.ip, inside);
  const s1 = new SimHost('s1', '198.18.0.1', net.internet, net);
  const s2 = new SimHost('s2', '198.18.0.2', net.internet, net);
  net.internet.nodes.set(s1.ip, s1);
  net.internet.nodes.set(s2.ip, s2);
  const seen: { at: string; from: string }[] = [];
  const listen = (s: VirtualUdpSocket) => s.onMessage((_b, from) => seen.push({ at: `${s.host.name}:${s.port}`, from: formatEndpoint(from) }));
  const e1 = s1.bindUdp(3478); listen(e1);
  const e1b = s1.bindUdp(3479); listen(e1b);
  const e2 = s2.bindUdp(3478); listen(e2);
  const c = inside.bindUdp(41641); listen(c);
  return { clock, net, nat, c, e1, e1b, e2, seen };
}

const ping = new Uint8Array([1]);

test('mapping: EI keeps one public port for every destination; APD makes one per destination', async () => {
  for (const [preset, same] of [['easy', true], ['hard', false]] as const) {
    const l = lab(NAT_PRESETS[preset]);
    l.c.send(ping, { address: '198.18.0.1', port: 3478 });
    l.c.send(ping, { address: '198.18.0.2', port: 3478 });
    await l.clock.run(100);
    const froms = l.seen.map((s) => s.from);
    assert.equal(froms.length, 2, preset);
    assert.equal(froms[0] === froms[1], same, `${preset}: ${froms}`);
    if (preset === 'easy') assert.equal(froms[0], '198.18.1.1:41641', 'port preserved');
  }
});

test('filtering: EI admits anyone, AD only addresses we sent to, APD only address:port pairs', async () => {
  const rows = [['easy-ei', [true, true, true]], ['easy-ad', [true, true, false]], ['easy', [true, false, false]]] as const;
  for (const [preset, want] of rows) {
    const l = lab(NAT_PRESETS[preset]);
    l.c.send(ping, { address: '198.18.0.1', port: 3478 });
    await l.clock.run(50);
    l.seen.length = 0;
    const mapped = { address: '198.18.1.1', port: 41641 };
    l.e1.send(ping, mapped); // the destination we sent to
    l.e1b.send(ping, mapped); // same address, another port
    l.e2.send(ping, mapped); // another address
    await l.clock.run(50);
    const got = ['198.18.0.1:3478', '198.18.0.1:3479', '198.18.0.2:3478'].map((f) => l.seen.some((s) => s.from === f && s.at === 'in:41641'));
    assert.deepEqual(got, [...want], preset);
  }
});

test('mappings expire after the timeout without outbound traffic', async () => {
  const l = lab(NAT_PRESETS.easy);
  l.c.send(ping, { address: '198.18.0.1', port: 3478 });
  await l.clock.run(29_000);
  l.e1.send(ping, { address: '198.18.1.1', port: 41641 });
  await l.clock.run(100);
  assert.equal(l.seen.filter((s) => s.at === 'in:41641').length, 1, 'alive at 29 s');
  await l.clock.run(31_000);
  l.e1.send(ping, { address: '198.18.1.1', port: 41641 });
  await l.clock.run(100);
  assert.equal(l.seen.filter((s) => s.at === 'in:41641').length, 1, 'gone after 30 s idle');
  assert.ok(l.nat.table.counters.expired >= 1);
});

test('blocked UDP: nothing leaves; one-to-one: the inside host owns the public address', async () => {
  const b = lab(NAT_PRESETS.blocked);
  b.c.send(ping, { address: '198.18.0.1', port: 3478 });
  await b.clock.run(100);
  assert.equal(b.seen.length, 0);
  assert.equal(b.net.counters.dropped['nat-blocked'], 1);
  const o = lab(NAT_PRESETS['one-to-one']);
  o.e1.send(ping, { address: '198.18.1.1', port: 41641 }); // unsolicited, yet admitted
  await o.clock.run(100);
  assert.deepEqual(o.seen, [{ at: 'in:41641', from: '198.18.0.1:3478' }]);
});

test('hairpinning only where enabled', async () => {
  for (const [preset, want] of [['easy', 0], ['easy-ei', 1]] as const) {
    const l = lab(NAT_PRESETS[preset]);
    const other = new SimHost('in2', '10.1.0.11', l.nat.inside, l.net);
    l.nat.inside.nodes.set(other.ip, other);
    const s = other.bindUdp(5000);
    let got = 0;
    s.onMessage(() => got++);
    s.send(ping, { address: '198.18.0.1', port: 3478 }); // opens other's mapping (port 5000)
    await l.clock.run(50);
    l.c.send(ping, { address: '198.18.1.1', port: 5000 }); // to our own public address
    await l.clock.run(50);
    assert.equal(got, want, preset);
  }
});
