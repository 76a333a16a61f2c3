/**
 * Named scenarios on the simulator, each a small story with a verdict:
 *   roaming        a host moves behind another NAT mid-session; the path comes back
 *   renumber       a NAT's public address changes (its mappings die); the path comes back
 *   expiry         a NAT forgets every mapping (reboot / timeout); the path comes back
 *   outage         the coordinator goes away; paths stay up; control resumes when it returns
 *   outage-restart the coordinator is away and both agents reboot; they reconnect from their cached maps
 *   lan            two agents on one LAN find each other by mDNS; a third behind another NAT hears nothing
 *   lan-outage     the coordinator is away, both agents reboot with new LAN addresses: mDNS reconnects them
 *   loss           10% loss on the internet; the pair still connects
 *   storm          N agents join at once; every agent holds the whole map, and sampled pairs connect
 */
import type { PathKind } from '../../agent/status.js';
import { World, type SimAgent } from '../world.js';

export interface ScenarioResult {
  name: string;
  ok: boolean;
  /** Virtual milliseconds the interesting part took (recovery, convergence). */
  timeMs?: number;
  wallMs: number;
  details: Record<string, unknown>;
}

async function pairWorld(seed: number, opts: { loss?: number } = {}) {
  const w = new World({ seed, internet: { loss: opts.loss ?? 0, jitterMs: 5 } });
  const na = w.addNat('nata', 'easy');
  const nb = w.addNat('natb', 'easy');
  const a = await w.addAgent('a', w.addHost('a', na));
  const b = await w.addAgent('b', w.addHost('b', nb));
  return { w, a, b, na, nb };
}

/** Runs until both sides report `want` (or anything but none), at most `budgetMs`; returns the virtual time taken. */
async function until(w: World, a: SimAgent, b: SimAgent, budgetMs: number, want?: PathKind): Promise<number | undefined> {
  const start = w.clock.now();
  const ok = () => {
    const pa = w.path(a, b);
    const pb = w.path(b, a);
    return want ? pa === want && pb === want : pa !== 'none' && pb !== 'none';
  };
  await w.clock.runUntil(start + budgetMs, ok);
  return ok() ? w.clock.now() - start : undefined;
}

type Scenario = (seed: number) => Promise<Omit<ScenarioResult, 'name' | 'wallMs'>>;

const SCENARIOS: Record<string, Scenario> = {
  async roaming(seed) {
    const { w, a, b } = await pairWorld(seed);
    try {
      await until(w, a, b, 10_000, 'direct'); // established (the relay answers first; wait for the punch)
      await w.clock.run(5000);
      const elsewhere = w.addNat('natc', 'easy');
      w.moveHost(b.host, elsewhere);
      const start = w.clock.now();
      const moved = () => a.agent.status().peers[0]?.endpoint?.startsWith(`${elsewhere.publicIp}:`) === true && w.path(a, b) === 'direct' && w.path(b, a) === 'direct';
      await w.clock.runUntil(start + 30_000, moved);
      return { ok: moved(), timeMs: moved() ? w.clock.now() - start : undefined, details: { newEndpoint: a.agent.status().peers[0]?.endpoint } };
    } finally {
      await w.stop();
    }
  },
  async renumber(seed) {
    const { w, a, b, nb } = await pairWorld(seed);
    try {
      await until(w, a, b, 10_000, 'direct'); // established (the relay answers first; wait for the punch)
      await w.clock.run(5000);
      w.renumberNat(nb);
      // Nothing changes on b's host: only its STUN round (or a dying path) reveals the new address.
      const start = w.clock.now();
      await w.clock.runUntil(start + 60_000, () => a.agent.status().peers[0]?.endpoint?.startsWith(nb.publicIp) === true && w.path(a, b) === 'direct');
      const ok = a.agent.status().peers[0]?.endpoint?.startsWith(nb.publicIp) === true && w.path(a, b) === 'direct';
      return { ok, timeMs: ok ? w.clock.now() - start : undefined, details: { newPublicIp: nb.publicIp } };
    } finally {
      await w.stop();
    }
  },
  async expiry(seed) {
    const { w, a, b, na, nb } = await pairWorld(seed);
    try {
      await until(w, a, b, 10_000, 'direct'); // established (the relay answers first; wait for the punch)
      await w.clock.run(5000);
      na.table.expireAll();
      nb.table.expireAll();
      const start = w.clock.now();
      // The path may survive (heartbeats re-open mappings that crossing pings agree on) or die and re-punch.
      await w.clock.run(8000);
      const t = await until(w, a, b, 60_000, 'direct');
      return { ok: t !== undefined, timeMs: t === undefined ? undefined : w.clock.now() - start, details: { mappingsA: na.table.size, mappingsB: nb.table.size } };
    } finally {
      await w.stop();
    }
  },
  async outage(seed) {
    const { w, a, b } = await pairWorld(seed);
    try {
      await until(w, a, b, 10_000, 'direct'); // established (the relay answers first; wait for the punch)
      w.coordinatorDown();
      await w.clock.run(60_000);
      const during = [w.path(a, b), w.path(b, a)];
      const control = a.agent.status().coordinator.status;
      w.coordinatorUpAgain();
      const start = w.clock.now();
      await w.clock.runUntil(start + 60_000, () => a.agent.status().coordinator.status === 'connected' && b.agent.status().coordinator.status === 'connected');
      const resumed = a.agent.status().coordinator.status === 'connected' && b.agent.status().coordinator.status === 'connected';
      return {
        ok: during.every((p) => p === 'direct') && control !== 'connected' && resumed,
        timeMs: resumed ? w.clock.now() - start : undefined,
        details: { pathsDuringOutage: during, controlDuringOutage: control },
      };
    } finally {
      await w.stop();
    }
  },
  async 'outage-restart'(seed) {
    // The coordinator is gone and both agents reboot: they come back from their cached maps,
    // learn each other's new disco keys from the node-key binding in their pings, and connect.
    const { w, a, b } = await pairWorld(seed);
    try {
      await until(w, a, b, 10_000, 'direct'); // established (the relay answers first; wait for the punch)
      w.coordinatorDown();
      await w.clock.run(5000);
      await w.restartAgent(a);
      await w.restartAgent(b);
      const t = await until(w, a, b, 30_000, 'direct');
      return { ok: t !== undefined, timeMs: t, details: { control: a.agent.status().coordinator.status, adopted: a.agent.status().counters.discoKeysAdopted } };
    } finally {
      await w.stop();
    }
  },
  async lan(seed) {
    const w = new World({ seed, internet: { jitterMs: 5 } });
    try {
      const home = w.addNat('home', 'easy');
      const away = w.addNat('away', 'easy');
      const a = await w.addAgent('a', w.addHost('a', home));
      const b = await w.addAgent('b', w.addHost('b', home));
      const c = await w.addAgent('c', w.addHost('c', away));
      const t = await until(w, a, b, 10_000, 'lan');
      const ab = a.agent.status().peers.find((p) => p.nodeKey === b.nodeKey);
      const heardAtC = c.agent.status().counters.lanCandidates ?? 0;
      const fromMdns = a.agent.status().counters.lanCandidates ?? 0;
      return {
        ok: t !== undefined && ab?.endpoint === `${b.host.ip}:41641` && fromMdns > 0 && heardAtC === 0,
        timeMs: t,
        details: { endpoint: ab?.endpoint, lanCandidatesAtA: fromMdns, lanCandidatesAcrossTheNat: heardAtC, multicastDroppedOnInternet: w.net.counters.dropped['multicast-scope'] },
      };
    } finally {
      await w.stop();
    }
  },
  async 'lan-outage'(seed) {
    // Both agents reboot during the outage and come back on new LAN addresses: the cached map
    // has their keys but stale endpoints, so only mDNS can bring them together.
    const w = new World({ seed, internet: { jitterMs: 5 } });
    try {
      const home = w.addNat('home', 'easy');
      const a = await w.addAgent('a', w.addHost('a', home));
      const b = await w.addAgent('b', w.addHost('b', home));
      await until(w, a, b, 10_000, 'lan');
      w.coordinatorDown();
      await w.clock.run(5000);
      await a.agent.stop();
      await b.agent.stop();
      w.moveHost(a.host, home);
      w.moveHost(b.host, home);
      await w.restartAgent(a);
      await w.restartAgent(b);
      const t = await until(w, a, b, 30_000, 'lan');
      const endpoint = a.agent.status().peers[0]?.endpoint;
      return {
        ok: t !== undefined && endpoint === `${b.host.ip}:41641` && a.agent.status().coordinator.status !== 'connected',
        timeMs: t,
        details: { endpoint, newAddress: b.host.ip, control: a.agent.status().coordinator.status, adopted: a.agent.status().counters.discoKeysAdopted },
      };
    } finally {
      await w.stop();
    }
  },
  async loss(seed) {
    const { w, a, b } = await pairWorld(seed, { loss: 0.1 });
    try {
      const t = await until(w, a, b, 30_000, 'direct');
      await w.clock.run(60_000);
      const stays = w.path(a, b) === 'direct' && w.path(b, a) === 'direct';
      return { ok: t !== undefined && stays, timeMs: t, details: { dropped: w.net.counters.dropped, staysUpOverAMinute: stays } };
    } finally {
      await w.stop();
    }
  },
};

export const SCENARIO_NAMES = [...Object.keys(SCENARIOS), 'storm'];

/**
 * N agents join at the same instant behind assorted NATs. Verdict: every agent
 * holds the whole peer map, and a sample of pairs reaches the expected path.
 */
export async function runStorm(agents: number, seed = 1): Promise<ScenarioResult> {
  const t0 = performance.now();
  const w = new World({ seed });
  try {
    const nats = ['easy', 'easy-ad', 'one-to-one'] as const;
    // All at once, as a storm of POST /v1/join would: the joins commit in a few batches.
    const list: SimAgent[] = await Promise.all(Array.from({ length: agents }, (_, i) => {
      const nat = w.addNat(`n${i}`, nats[i % nats.length]!);
      return w.addAgent(`n${i}`, w.addHost(`h${i}`, nat));
    }));
    const start = w.clock.now();
    const converged = () => list.every((x) => x.agent.mapInfo.version >= w.hub.log.version && x.agent.mapInfo.peers === agents - 1);
    let convergedAt: number | undefined;
    for (let step = 0; step < 600 && convergedAt === undefined; step++) {
      await w.clock.run(100);
      if (converged()) convergedAt = w.clock.now() - start;
    }
    // Beyond EAGER_PEER_LIMIT peers paths are made on demand: ask for a sample the way `knit ping` does.
    const sample = Array.from({ length: Math.min(20, agents - 1) }, (_, i) => [list[i]!, list[(i * 7 + 1) % agents]!] as const).filter(([x, y]) => x !== y);
    const pings = sample.map(([x, y]) => x.agent.ping(y.name, 10_000));
    await w.clock.run(10_000);
    const replies = await Promise.all(pings);
    const connected = sample.filter(([x, y]) => w.path(x, y) !== 'none').length;
    return {
      name: 'storm', ok: convergedAt !== undefined && connected === sample.length, timeMs: convergedAt,
      wallMs: Math.round(performance.now() - t0),
      details: { agents, mapVersion: w.hub.log.version, sampledPairs: sample.length, sampledConnected: connected, pingReplies: replies.filter((r) => r.ok).length, packets: w.net.counters.sent },
    };
  } finally {
    await w.stop();
  }
}

export async function runScenario(name: string, seed = 1): Promise<ScenarioResult> {
  if (name === 'storm') return runStorm(200, seed);
  const s = SCENARIOS[name];
  if (!s) throw new RangeError(`unknown scenario ${name}`);
  const t0 = performance.now();
  const r = await s(seed);
  return { name, ...r, wallMs: Math.round(performance.now() - t0) };
}
