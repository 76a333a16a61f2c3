/**
 * LAN discovery in the simulator: the real agents and LAN core on the sim's
 * multicast segments. Multicast stays on its LAN (gateways don't forward it),
 * and mDNS is what reunites two agents whose cached endpoints went stale
 * while the coordinator was away.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runScenario } from '../../sim/scenarios/index.js';
import { World } from '../../sim/world.js';

test('same-LAN agents find each other by mDNS within 2 s (virtual), over many seeds', async () => {
  for (let seed = 1; seed <= 10; seed++) {
    const r = await runScenario('lan', seed);
    assert.ok(r.ok, `seed ${seed}: ${JSON.stringify(r.details)}`);
    assert.ok(r.timeMs! <= 2000, `seed ${seed}: ${r.timeMs} ms`);
  }
});

test('control: without mDNS, agents that rebooted onto new LAN addresses during an outage stay apart', async () => {
  const w = new World({ seed: 4, lanDiscovery: false });
  try {
    const home = w.addNat('home', 'easy');
    const a = await w.addAgent('a', w.addHost('a', home));
    const b = await w.addAgent('b', w.addHost('b', home));
    await w.clock.runUntil(w.clock.now() + 10_000, () => w.path(a, b) === 'lan' && w.path(b, a) === 'lan');
    assert.equal(w.path(a, b), 'lan', 'connected over the LAN through the coordinator first');
    w.coordinatorDown();
    await a.agent.stop();
    await b.agent.stop();
    w.moveHost(a.host, home);
    w.moveHost(b.host, home);
    await w.restartAgent(a);
    await w.restartAgent(b);
    await w.clock.run(30_000);
    assert.equal(w.path(a, b), 'none');
  } finally {
    await w.stop();
  }
});

test('mDNS never leaves its LAN: the internet segment carries no multicast, and a host behind another NAT hears nothing', async () => {
  const w = new World({ seed: 2 });
  try {
    const home = w.addNat('home', 'easy');
    const a = await w.addAgent('a', w.addHost('a', home));
    const out = await w.addAgent('out', w.addHost('out', 'internet'));
    await w.clock.run(5000);
    assert.equal(out.agent.status().counters.lanReceived ?? 0, 0, 'a host on the internet has no LAN to browse');
    assert.equal(out.agent.status().counters.lanCandidates ?? 0, 0);
    assert.equal(a.agent.status().counters.lanCandidates ?? 0, 0);
  } finally {
    await w.stop();
  }
});

test('agents report their paths to the coordinator: it sees the LAN pair as lan, both ways', async () => {
  const w = new World({ seed: 6 });
  try {
    const home = w.addNat('home', 'easy');
    const a = await w.addAgent('a', w.addHost('a', home));
    const b = await w.addAgent('b', w.addHost('b', home));
    const ids = [a.node.id, b.node.id];
    const lanBothWays = () => ids.every((from) => w.hub.pathEdges().some((e) => e.from === from && ids.includes(e.to) && e.kind === 'lan'));
    await w.clock.runUntil(w.clock.now() + 10_000, lanBothWays);
    assert.ok(lanBothWays(), JSON.stringify(w.hub.pathEdges()));
  } finally {
    await w.stop();
  }
});
