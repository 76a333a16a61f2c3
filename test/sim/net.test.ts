import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../sim/clock.js';
import { SeededRandom } from '../../sim/random.js';
import { SimHost, SimNat, SimNetwork } from '../../sim/net.js';
import { NAT_PRESETS } from '../../sim/nat.js';

async function trace(seed: number): Promise<string[]> {
  const clock = new VirtualClock();
  const net = new SimNetwork(clock, new SeededRandom(seed), { latencyMs: 20, jitterMs: 10, loss: 0.2 });
  const a = new SimHost('a', '198.18.0.1', net.internet, net);
  const b = new SimHost('b', '198.18.0.2', net.internet, net);
  net.internet.nodes.set(a.ip, a);
  net.internet.nodes.set(b.ip, b);
  const out: string[] = [];
  net.onDeliver = (at, from, to, bytes) => out.push(`${at}|${from}|${to}|${bytes}`);
  const sa = a.bindUdp(1);
  b.bindUdp(2);
  for (let i = 0; i < 50; i++) sa.send(new Uint8Array(i + 1), { address: b.ip, port: 2 });
  await clock.run(1000);
  return out;
}

test('same seed, same trace; another seed, another trace (loss, jitter and reordering are seeded)', async () => {
  const t1 = await trace(7);
  assert.deepEqual(await trace(7), t1);
  assert.notDeepEqual(await trace(8), t1);
  assert.ok(t1.length > 25 && t1.length < 50, `about 20% lost: ${t1.length} delivered`);
  const sizes = t1.map((l) => Number(l.split('|')[3]));
  assert.notDeepEqual(sizes, [...sizes].sort((x, y) => x - y), 'jitter reorders');
});

test('multicast reaches the sockets of its own segment that joined, and never crosses a NAT', async () => {
  const clock = new VirtualClock();
  const random = new SeededRandom(1);
  const net = new SimNetwork(clock, random, { latencyMs: 10, jitterMs: 0, loss: 0 });
  const nat = new SimNat('nat', '198.18.1.1', net.internet, NAT_PRESETS['easy-ei'], random, { latencyMs: 1, jitterMs: 0, loss: 0 });
  net.internet.nodes.set(nat.publicIp, nat);
  const hosts = ['10.1.0.10', '10.1.0.11', '10.1.0.12'].map((ip, i) => {
    const h = new SimHost(`h${i}`, ip, nat.inside, net);
    nat.inside.nodes.set(ip, h);
    return h;
  });
  const outsider = new SimHost('o', '198.18.0.9', net.internet, net);
  net.internet.nodes.set(outsider.ip, outsider);
  const got: string[] = [];
  const group = '224.0.0.251';
  hosts.forEach((h, i) => h.bindUdp(5353, { multicast: i < 2 ? [group] : [] }).onMessage(() => got.push(h.name)));
  outsider.bindUdp(5353, { multicast: [group] }).onMessage(() => got.push('outsider'));
  hosts[0]!.bindUdp(6000).send(new Uint8Array([1]), { address: group, port: 5353 });
  await clock.run(100);
  assert.deepEqual(got.sort(), ['h0', 'h1']);
});

test('the virtual clock fires timers in (time, creation) order and only when run', async () => {
  const clock = new VirtualClock();
  const order: string[] = [];
  clock.setTimeout(() => order.push('b'), 10);
  clock.setTimeout(() => order.push('a'), 5);
  clock.setTimeout(() => order.push('c'), 10);
  const x = clock.setTimeout(() => order.push('x'), 7);
  clock.clearTimeout(x);
  assert.deepEqual(order, []);
  await clock.run(10);
  assert.deepEqual(order, ['a', 'b', 'c']);
  assert.equal(clock.elapsed(), 10);
});
