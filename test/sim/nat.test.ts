/**
 * The NAT models behave as their RFC 4787 labels say. The mapping table is
 * checked as a pure step table on given times; the presets and every
 * mapping × filtering pair are checked from outside, the way a STUN client
 * (RFC 5780) would classify a real NAT: plain virtual UDP sockets, echo
 * servers, unsolicited probes, all on virtual time.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CGNAT_CARRIER, NAT_PRESETS, NatTable, natBehaviour, type Dependence, type NatBehaviour } from '../../sim/nat.js';
import { SeededRandom } from '../../sim/random.js';
import type { NatOptions, NatSpec } from '../../sim/topology.js';
import { listen, quietTopology, reflector, seen, text, type Heard } from './lab.js';

const inner = { address: '10.0.1.10', port: 41641 };
const S1 = { address: '198.18.0.10', port: 3478 };
const S1b = { address: '198.18.0.10', port: 3479 };
const S2 = { address: '198.18.0.11', port: 3478 };

test('mapping table step by step (easy: EI mapping, APD filtering, 30 s, outbound refresh only)', () => {
  const t = new NatTable(natBehaviour('easy'), new SeededRandom(1));
  type Step = { at: number; out?: typeof S1; from?: typeof S1; want: number | string | undefined; why: string };
  const steps: Step[] = [
    { at: 0, out: S1, want: 41641, why: 'port preserved' },
    { at: 1, out: S2, want: 41641, why: 'EI: same port for another destination' },
    { at: 2, from: S1, want: '10.0.1.10:41641', why: 'the destination answers' },
    { at: 3, from: S1b, want: undefined, why: 'APD: same address, other port is filtered' },
    { at: 4, from: { address: '198.18.0.99', port: 3478 }, want: undefined, why: 'APD: stranger' },
    { at: 29_999, from: S2, want: '10.0.1.10:41641', why: 'last outbound at 1 ms: still alive' },
    { at: 30_000, from: S1, want: undefined, why: "S1's permission dates from 0 ms: aged out" },
    { at: 30_000, from: S2, want: '10.0.1.10:41641', why: 'inbound did not refresh, but 29.999 s < 30 s' },
    { at: 30_001, from: S2, want: undefined, why: 'idle 30 s: the mapping is gone' },
    { at: 30_002, out: S1, want: 41641, why: 'a new mapping, the port preserved again' },
  ];
  for (const s of steps) {
    const got = s.out ? t.outbound(inner, s.out, s.at) : t.inbound(s.from!, 41641, s.at);
    const shown = typeof got === 'object' ? `${got.address}:${got.port}` : got;
    assert.equal(shown, s.want, `${s.at} ms: ${s.why}`);
  }
  assert.equal(t.counters.created, 2);
  assert.equal(t.counters.expired, 1);
  assert.equal(t.counters.filtered, 4);
});

test('wanInput accept: the box\'s own inbound flow makes a later outbound flow to that remote clash onto another port; TTL-1 refreshes without creating', () => {
  const t = new NatTable(natBehaviour('easy', { wanInput: 'accept' }), new SeededRandom(1));
  const peer = { address: '198.18.0.20', port: 41641 };
  // The peer's punch arrives first: no mapping admits it, so the box's stack takes it.
  assert.equal(t.inbound(peer, 41641, 0), undefined);
  t.unsolicited(peer, 41641, 0);
  assert.equal(t.outbound(inner, S1, 1), 41641, 'other destinations keep the preserved port');
  const clashed = t.outbound(inner, peer, 2);
  assert.notEqual(clashed, 41641, 'towards the peer: another port, as masquerade picks');
  assert.equal(t.outbound(inner, peer, 3), clashed, 'and that port while the flow lives');
  assert.equal(t.inbound(peer, 41641, 4), undefined, 'the peer\'s packets to 41641 still go to the box itself');
  t.unsolicited(peer, 41641, 4);
  // Everything quiet for the timeout: the stack's flow and the clashed mapping are gone.
  assert.equal(t.outbound(inner, peer, 4 + 30_000), 41641, 'after both expired, the preserved port again');
  assert.equal(t.inbound(peer, 41641, 4 + 30_001)?.port, 41641, 'and the peer gets in');
  // TTL-1: touch refreshes the live flow towards the peer, creates nothing for a stranger.
  t.touch(inner, peer, 4 + 50_000);
  t.touch(inner, S2, 4 + 50_000);
  assert.equal(t.inbound(peer, 41641, 4 + 79_000)?.port, 41641, 'refreshed at 50 s: alive at 79 s');
  assert.equal(t.inbound(S2, 41641, 4 + 79_001), undefined, 'never sent to S2: no flow to refresh');
});

test('wanInput drop (the default): an unsolicited packet leaves nothing behind', () => {
  const t = new NatTable(natBehaviour('easy'), new SeededRandom(1));
  assert.equal(t.behaviour.wanInput, 'drop');
  const peer = { address: '198.18.0.20', port: 41641 };
  assert.equal(t.inbound(peer, 41641, 0), undefined);
  assert.equal(t.outbound(inner, peer, 1), 41641);
  assert.equal(t.inbound(peer, 41641, 2)?.port, 41641);
});

interface Observed {
  mapping: Dependence | 'blocked';
  filtering: Dependence | 'blocked';
  publicIp?: string;
  port?: number;
}

/** Classifies a NAT from outside: RFC 5780's tests, on the simulator. */
async function classify(spec: NatSpec, opts: NatOptions = {}): Promise<Observed> {
  // Mapping: the source seen by three echo servers (same IP + other port, other IP).
  const t = quietTopology();
  const nat = t.addNat(spec, opts);
  const inside = t.addHost('in', nat);
  const s1 = t.addHost('s1');
  const s2 = t.addHost('s2');
  reflector(s1, 3478);
  reflector(s1, 3479);
  reflector(s2, 3478);
  const log: Heard[] = [];
  const c = listen(inside, 41641, log);
  for (const to of [S1, S1b, S2]) c.send(text('hi'), to);
  await t.clock.runFor(200);
  const eps = [S1, S1b, S2].map((s) => seen(log.find((h) => h.text.startsWith('seen') && h.from === `${s.address}:${s.port}`)));
  if (eps.some((e) => e === undefined)) return { mapping: 'blocked', filtering: 'blocked' };
  const key = eps.map((e) => `${e!.address}:${e!.port}`);
  const mapping: Dependence = key[0] === key[2] ? 'EI' : key[0] === key[1] ? 'AD' : 'APD';

  // Filtering: open one mapping towards S1 only, then probe it from S1, S1 other port, S2.
  const f = quietTopology();
  const fnat = f.addNat(spec, opts);
  const fin = f.addHost('in', fnat);
  const a = f.addHost('s1');
  const b = f.addHost('s2');
  const probes = [a.bindUdp(3478), a.bindUdp(3479), b.bindUdp(3478)];
  let mapped: { address: string; port: number } | undefined;
  probes[0]!.onMessage((_d, from) => { mapped = from; });
  const flog: Heard[] = [];
  const fc = listen(fin, 41641, flog);
  fc.send(text('open'), S1);
  await f.clock.runFor(100);
  assert.ok(mapped, 'the opening packet got out');
  probes.forEach((p, i) => p.send(text(`probe${i}`), mapped!));
  await f.clock.runFor(100);
  const got = [0, 1, 2].map((i) => flog.some((h) => h.text === `probe${i}`));
  const filtering: Dependence = got[2] ? 'EI' : got[1] ? 'AD' : 'APD';
  assert.ok(got[0], 'the destination itself is always admitted');
  return { mapping, filtering, publicIp: eps[0]!.address, port: eps[0]!.port };
}

test('every mapping × filtering combination is what it says (RFC 4787 §4.1, §5)', async () => {
  const deps: Dependence[] = ['EI', 'AD', 'APD'];
  for (const mapping of deps) {
    for (const filtering of deps) {
      const b: NatBehaviour = { ...NAT_PRESETS.easy, mapping, filtering };
      const o = await classify(b);
      assert.deepEqual([o.mapping, o.filtering], [mapping, filtering], `${mapping}/${filtering}`);
      assert.equal(o.publicIp, '198.19.0.10');
    }
  }
});

test('presets classify as their names say', async () => {
  const rows: { preset: NatSpec; want: Omit<Observed, 'port'>; port?: number }[] = [
    { preset: 'none', want: { mapping: 'EI', filtering: 'EI', publicIp: '198.18.128.10' }, port: 41641 },
    { preset: 'easy', want: { mapping: 'EI', filtering: 'APD', publicIp: '198.19.0.10' }, port: 41641 },
    { preset: 'easy-ad', want: { mapping: 'EI', filtering: 'AD', publicIp: '198.19.0.10' }, port: 41641 },
    { preset: 'easy-ei', want: { mapping: 'EI', filtering: 'EI', publicIp: '198.19.0.10' }, port: 41641 },
    { preset: 'hard', want: { mapping: 'APD', filtering: 'APD', publicIp: '198.19.0.10' } },
    { preset: 'hard-seq', want: { mapping: 'APD', filtering: 'APD', publicIp: '198.19.0.10' } },
    { preset: 'one-to-one', want: { mapping: 'EI', filtering: 'EI', publicIp: '198.19.0.10' }, port: 41641 },
    // Double NAT: the world sees the carrier's address; the pair behaves as EI mapping, APD filtering.
    { preset: 'cgnat', want: { mapping: 'EI', filtering: 'APD', publicIp: '198.19.0.10' } },
    { preset: 'blocked', want: { mapping: 'blocked', filtering: 'blocked' } },
  ];
  for (const r of rows) {
    const { port, ...o } = await classify(r.preset);
    assert.deepEqual(o, r.want, String(r.preset));
    if (r.port !== undefined) assert.equal(port, r.port, `${String(r.preset)}: port kept`);
  }
});

test('port assignment: preserve (sequential on collision), sequential, random', async () => {
  const publicPorts = async (spec: NatSpec, hosts: number, dests: number) => {
    const t = quietTopology();
    const nat = t.addNat(spec);
    const server = t.addHost('srv');
    const ports: number[] = [];
    for (let d = 0; d < dests; d++) server.bindUdp(3000 + d).onMessage((_x, from) => ports.push(from.port));
    for (let h = 0; h < hosts; h++) {
      const s = t.addHost(`in${h}`, nat).bindUdp(41641);
      for (let d = 0; d < dests; d++) s.send(text('x'), { address: server.ip, port: 3000 + d });
      await t.clock.runFor(50);
    }
    return ports;
  };
  const kept = await publicPorts('easy', 3, 1);
  assert.equal(kept[0], 41641, 'the first host keeps its port');
  assert.equal(new Set(kept).size, 3, 'the others cannot, and get distinct ones');
  const seq = await publicPorts('hard-seq', 1, 5);
  assert.deepEqual(seq.slice(1).map((p, i) => p - seq[i]!), [1, 1, 1, 1], `sequential: ${seq}`);
  const rnd = await publicPorts('hard', 1, 5);
  assert.equal(new Set(rnd).size, 5);
  assert.notDeepEqual(rnd.slice(1).map((p, i) => p - rnd[i]!), [1, 1, 1, 1], `random: ${rnd}`);
  assert.deepEqual(await publicPorts('hard', 1, 5), rnd, 'random, but the same for the same seed');
});

/** Opens a mapping at 0, idles, and reports whether an answer from the destination still gets in at `probeAt`. */
async function aliveAfter(opts: NatOptions, probeAt: number, keepalives: number[] = [], inboundAt: number[] = []): Promise<boolean> {
  const t = quietTopology();
  const nat = t.addNat('easy', opts);
  const log: Heard[] = [];
  const c = listen(t.addHost('in', nat), 41641, log);
  const server = t.addHost('srv').bindUdp(3478);
  let mapped: { address: string; port: number } | undefined;
  server.onMessage((_d, from) => { mapped = from; });
  const sends: [number, () => void][] = [
    [0, () => c.send(text('open'), S1)],
    ...keepalives.map((at): [number, () => void] => [at, () => c.send(text('keepalive'), S1)]),
    ...inboundAt.map((at): [number, () => void] => [at, () => server.send(text('in'), mapped!)]),
    [probeAt, () => server.send(text('probe'), mapped!)],
  ];
  const start = t.clock.now();
  for (const [at, fn] of sends.sort((x, y) => x[0] - y[0])) {
    await t.clock.runUntil(start + at);
    fn();
  }
  await t.clock.runFor(100);
  return log.some((h) => h.text === 'probe');
}

test('mapping timeouts (RFC 4787 §4.3): 30 s default, 120 s, 300 s; outbound refreshes; inbound only when enabled', async () => {
  // The probe leaves the server at `probeAt` and reaches the NAT 15 ms later; the opening packet crossed the NAT at 1 ms.
  const rows: { name: string; opts: NatOptions; probeAt: number; keep?: number[]; inbound?: number[]; want: boolean }[] = [
    { name: '30 s: alive just before', opts: {}, probeAt: 29_980, want: true },
    { name: '30 s: gone after', opts: {}, probeAt: 30_000, want: false },
    { name: '120 s: alive at 119 s', opts: { timeoutMs: 120_000 }, probeAt: 119_000, want: true },
    { name: '120 s: gone at 121 s', opts: { timeoutMs: 120_000 }, probeAt: 121_000, want: false },
    { name: '300 s: alive at 299 s', opts: { timeoutMs: 300_000 }, probeAt: 299_000, want: true },
    { name: '300 s: gone at 301 s', opts: { timeoutMs: 300_000 }, probeAt: 301_000, want: false },
    { name: 'outbound keepalives every 25 s hold it for 100 s', opts: {}, probeAt: 100_000, keep: [25_000, 50_000, 75_000, 90_000], want: true },
    { name: 'inbound traffic does not refresh by default', opts: {}, probeAt: 40_000, inbound: [20_000], want: false },
    { name: 'inbound refreshes when enabled', opts: { refreshOnInbound: true }, probeAt: 40_000, inbound: [20_000], want: true },
  ];
  for (const r of rows) assert.equal(await aliveAfter(r.opts, r.probeAt, r.keep, r.inbound), r.want, r.name);
});

test('expireAll forgets every mapping at once; a random-port NAT then rebinds to a new port', async () => {
  const t = quietTopology();
  const nat = t.addNat('hard');
  const c = t.addHost('in', nat).bindUdp(41641);
  const srv = t.addHost('srv').bindUdp(3478);
  const froms: number[] = [];
  srv.onMessage((_d, from) => froms.push(from.port));
  c.send(text('1'), S1);
  await t.clock.runFor(50);
  assert.equal(nat.table.size, 1);
  nat.expireAll();
  assert.equal(nat.table.size, 0);
  c.send(text('2'), S1);
  await t.clock.runFor(50);
  assert.equal(froms.length, 2);
  assert.notEqual(froms[0], froms[1], 'rebinding: the peer sees a new port');
});

test('hairpinning (RFC 4787 §6): off drops; on delivers from the public endpoint, subject to filtering', async () => {
  const rows: { spec: NatSpec; opts?: NatOptions; answerFirst: boolean; want: 'dropped' | 'filtered' | 'delivered' }[] = [
    { spec: 'easy', answerFirst: true, want: 'dropped' },
    { spec: 'easy-ei', answerFirst: false, want: 'delivered' },
    { spec: 'easy', opts: { hairpin: true }, answerFirst: false, want: 'filtered' },
    { spec: 'easy', opts: { hairpin: true }, answerFirst: true, want: 'delivered' },
  ];
  for (const r of rows) {
    const t = quietTopology();
    const nat = t.addNat(r.spec, r.opts);
    const a = t.addHost('a', nat);
    const b = t.addHost('b', nat);
    const srv = t.addHost('srv');
    reflector(srv, 3478);
    const la: Heard[] = [];
    const lb: Heard[] = [];
    const sa = listen(a, 5000, la);
    const sb = listen(b, 6000, lb);
    sa.send(text('stun'), S1);
    sb.send(text('stun'), S1);
    await t.clock.runFor(100);
    const pa = seen(la[0])!;
    const pb = seen(lb[0])!;
    if (r.answerFirst) sb.send(text('towards a'), pa); // b opens its filter for a's public endpoint (hairpinned itself)
    await t.clock.runFor(50);
    const before = { ...t.net.counters.dropped };
    const sentAt = t.clock.elapsed();
    sa.send(text('hairpin'), pb);
    await t.clock.runFor(50);
    const got = lb.find((h) => h.text === 'hairpin');
    const outcome = got ? 'delivered' : t.net.counters.dropped.hairpin > before.hairpin ? 'dropped' : t.net.counters.dropped['nat-filtered'] > before['nat-filtered'] ? 'filtered' : 'lost?';
    assert.equal(outcome, r.want, `${String(r.spec)} ${JSON.stringify(r.opts ?? {})}`);
    if (got) {
      assert.equal(got.from, `${pa.address}:${pa.port}`, "the receiver sees the sender's public endpoint (REQ-9)");
      assert.equal(got.at - sentAt, 2, 'a hairpin stays on the LAN: 1 ms up to the NAT, 1 ms back down');
    }
  }
});

test('double NAT: hosts behind a home NAT behind a carrier NAT; both mappings time out on their own clocks', async () => {
  const t = quietTopology();
  const home = t.addNat('cgnat');
  const carrier = home.parent!;
  assert.ok(carrier, 'the home NAT sits behind a carrier');
  assert.match(home.publicIp, /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./, 'the home NAT is numbered from RFC 6598 space');
  assert.match(carrier.publicIp, /^198\.19\./);
  const log: Heard[] = [];
  const host = t.addHost('h', home);
  assert.match(host.ip, /^10\./);
  const c = listen(host, 41641, log);
  reflector(t.addHost('srv'), 3478);
  c.send(text('stun'), S1);
  await t.clock.runFor(100);
  const mapped = seen(log[0])!;
  assert.equal(mapped.address, carrier.publicIp);
  assert.equal(home.table.size, 1);
  assert.equal(carrier.table.size, 1);
  // The home NAT forgets at 30 s, the carrier (RFC 6888, 120 s) holds on; an answer then dies at home.
  await t.clock.runFor(40_000);
  const before = home.table.counters.filtered;
  const admitted = carrier.table.counters.admitted;
  t.hosts.find((h) => h.name === 'srv')!.sockets.get(3478)!.send(text('late'), mapped);
  await t.clock.runFor(100);
  assert.equal(carrier.table.counters.admitted, admitted + 1, 'the carrier still had it');
  assert.equal(home.table.counters.filtered, before + 1, 'the home NAT did not');
  assert.equal(CGNAT_CARRIER.timeoutMs, 120_000);
});

test('two homes behind one carrier: a hairpinning carrier joins them; the default carrier does not', async () => {
  for (const hairpin of [false, true]) {
    const t = quietTopology();
    const isp = t.addNat({ ...CGNAT_CARRIER, hairpin }, { name: 'isp', carrierSpace: true });
    const h1 = t.addNat('cgnat', { carrier: isp, name: 'home1' });
    const h2 = t.addNat('cgnat', { carrier: isp, name: 'home2' });
    assert.equal(h1.parent, isp);
    assert.equal(h2.parent, isp);
    const l1: Heard[] = [];
    const l2: Heard[] = [];
    const a = listen(t.addHost('a', h1), 41641, l1);
    const b = listen(t.addHost('b', h2), 41641, l2);
    reflector(t.addHost('srv'), 3478);
    a.send(text('stun'), S1);
    b.send(text('stun'), S1);
    await t.clock.runFor(100);
    // Both sides aim at each other's carrier endpoint (a hole punch inside the carrier); b's opens its filters.
    b.send(text('opening'), seen(l1[0])!);
    await t.clock.runFor(10);
    a.send(text('neighbour'), seen(l2[0])!);
    await t.clock.runFor(100);
    assert.equal(l2.some((h) => h.text === 'neighbour' && h.from === `${seen(l1[0])!.address}:${seen(l1[0])!.port}`), hairpin, `carrier hairpin ${hairpin}`);
  }
});

test('1:1 NAT: the inside host owns the public address on every port; blocked: nothing crosses either way', async () => {
  const t = quietTopology();
  const o = t.addNat('one-to-one');
  const log: Heard[] = [];
  listen(t.addHost('vm', o), 22000, log);
  const x = t.addHost('x').bindUdp(1234);
  x.send(text('unsolicited'), { address: o.publicIp, port: 22000 });
  const fw = t.addNat('blocked');
  const flog: Heard[] = [];
  const inside = listen(t.addHost('fw-in', fw), 41641, flog);
  inside.send(text('out'), { address: x.host.ip, port: 1234 });
  x.send(text('in'), { address: fw.publicIp, port: 41641 });
  await t.clock.runFor(100);
  assert.deepEqual(log.map((h) => [h.text, h.from]), [['unsolicited', `${x.host.ip}:1234`]]);
  assert.deepEqual(flog, []);
  assert.equal(t.net.counters.dropped['nat-blocked'], 2);
});
