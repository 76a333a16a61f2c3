/**
 * Scale smoke test of the substrate alone: 1,000 hosts behind assorted NATs
 * (every preset, double NAT included) each exchange a few packets with echo
 * servers on the internet. The counts are exact (no loss configured); the
 * wall time is printed, not asserted (CI machines differ).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Topology, type NatSpec } from '../../sim/topology.js';
import type { VirtualUdpSocket } from '../../sim/net.js';

const HOSTS = 1000;
const ROUNDS = 3;
const KINDS: NatSpec[] = ['easy', 'easy-ad', 'easy-ei', 'hard', 'one-to-one', 'cgnat', 'none', 'blocked'];

test(`${HOSTS} hosts behind assorted NATs exchange packets quickly and exactly`, async (t) => {
  const wall0 = performance.now();
  const w = new Topology({ seed: 11, settle: false });
  const servers = Array.from({ length: 4 }, (_, i) => {
    const s = w.addHost(`echo${i}`).bindUdp(3478);
    s.onMessage((d, from) => s.send(d, from));
    return s;
  });
  const socks: { s: VirtualUdpSocket; kind: NatSpec; echoes: number }[] = [];
  for (let i = 0; i < HOSTS; i++) {
    const kind = KINDS[i % KINDS.length]!;
    const host = w.addHost(`h${i}`, w.addNat(kind));
    const entry = { s: host.bindUdp(41641), kind, echoes: 0 };
    entry.s.onMessage(() => entry.echoes++);
    socks.push(entry);
  }
  // Every host pings an echo server each second for a few seconds.
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, x] of socks.entries()) x.s.send(new Uint8Array([r]), { address: servers[i % servers.length]!.host.ip, port: 3478 });
    await w.clock.runFor(1000);
  }
  const wallMs = Math.round(performance.now() - wall0);
  t.diagnostic(`${HOSTS} hosts, ${w.net.counters.sent} packets sent, ${w.clock.firedTimers} events, ${wallMs} ms wall`);
  const blocked = socks.filter((x) => x.kind === 'blocked');
  assert.ok(blocked.length > 0);
  for (const x of socks) assert.equal(x.echoes, x.kind === 'blocked' ? 0 : ROUNDS, `${x.kind} host on ${x.s.host.ip}`);
  assert.equal(w.net.counters.sent, HOSTS * ROUNDS + (HOSTS - blocked.length) * ROUNDS);
  assert.equal(w.net.counters.dropped['nat-blocked'], blocked.length * ROUNDS);
  assert.equal(w.net.counters.delivered, 2 * (HOSTS - blocked.length) * ROUNDS);
});
