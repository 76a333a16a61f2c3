/**
 * Routers whose own stack takes unsolicited WAN packets (a plain Linux box doing masquerade,
 * a cloud NAT instance; sim/nat.ts `wanInput: 'accept'`): a peer's first punch is kept there
 * as an inbound flow, and the host's own later flow to that peer clashes onto another port.
 * Two port-restricted cones behind such routers must still end direct (agent/disco/quiet-punch.ts),
 * as must the mixed pair; ordinary routers keep their fast path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { World } from '../../sim/world.js';

async function pair(seed: number, aInput: 'drop' | 'accept', bInput: 'drop' | 'accept', budgetMs: number) {
  const w = new World({ seed });
  try {
    // b's LAN hop is slow (a busy Wi-Fi): a's first punch reaches b's router before b's own
    // punch has left it, which is what happens on a real network where the far side is
    // microseconds away and the agents start milliseconds apart.
    const ha = w.addHost('ha', w.addNat(natOf(aInput)));
    const hb = w.addHost('hb', w.addNat(natOf(bInput), { lan: { latencyMs: 60 } }));
    const a = await w.addAgent('a', ha);
    const b = await w.addAgent('b', hb);
    const start = w.clock.now();
    await w.clock.runUntil(start + budgetMs, () => w.path(a, b) === 'direct' && w.path(b, a) === 'direct');
    return { ab: w.path(a, b), ba: w.path(b, a), ms: w.clock.now() - start, forced: a.agent.status().counters.quietRounds ?? 0 };
  } finally {
    await w.stop();
  }
}

function natOf(wanInput: 'drop' | 'accept') {
  return { kind: 'napt', mapping: 'EI', filtering: 'APD', ports: 'preserve', timeoutMs: 30_000, refreshOnInbound: false, hairpin: false, wanInput } as const;
}

for (const [aIn, bIn, budget] of [['drop', 'drop', 20_000], ['accept', 'drop', 120_000], ['drop', 'accept', 120_000], ['accept', 'accept', 150_000]] as const) {
  test(`cone (WAN input ${aIn}) ↔ cone (WAN input ${bIn}): direct both ways, over seeds`, async (t) => {
    const times: number[] = [];
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = await pair(seed, aIn, bIn, budget);
      assert.equal(r.ab, 'direct', `seed ${seed}: a→b ${r.ab} after ${r.ms} ms`);
      assert.equal(r.ba, 'direct', `seed ${seed}: b→a ${r.ba}`);
      times.push(r.ms);
    }
    t.diagnostic(`direct after ${times.join(', ')} ms (virtual)`);
  });
}
