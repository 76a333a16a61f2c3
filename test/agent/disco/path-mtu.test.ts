import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatEndpoint } from '../../../shared/net/addr.js';
import { DISCO_MAX_LEN, DISCO_PONG_LEN, discoSharedKey, openDisco, sealDisco } from '../../../shared/wire/disco.js';
import {
  dueProbes, followPath, newPathMtu, noteProbeAnswered, PATH_MTU_PROBE_SIZES, PATH_MTU_REPROBE_MS, PATH_MTU_ROUND_MS, pathMtuNextWakeup,
  probePayloadBytes, tunnelMtuFor,
} from '../../../agent/disco/path-mtu.js';
import type { DiscoAction } from '../../../agent/disco/events.js';
import { Net, LATENCY_MS } from './harness.js';

const A = { address: '198.18.0.1', port: 41641 };
const B = { address: '198.18.0.2', port: 41641 };

test('tunnel MTU per path MTU: less IP, UDP and WireGuard, a multiple of 16, never above the interface', () => {
  const rows: { path: number; ipv6: boolean; want: number }[] = [
    { path: 1500, ipv6: false, want: 1420 }, // capped by the interface
    { path: 1500, ipv6: true, want: 1420 },
    { path: 1492, ipv6: false, want: 1420 }, // PPPoE over IPv4: 1432 room, the interface is less
    { path: 1492, ipv6: true, want: 1408 },
    { path: 1480, ipv6: false, want: 1420 },
    { path: 1280, ipv6: false, want: 1216 }, // 1220 room, padded by WireGuard to 1232 > 1220: 1216
    { path: 1280, ipv6: true, want: 1200 },
    { path: 1360, ipv6: true, want: 1280 }, // the smallest path that carries IPv6's minimum over IPv6
  ];
  for (const r of rows) assert.equal(tunnelMtuFor(r.path, r.ipv6, 1420), r.want, `${r.path} over IPv${r.ipv6 ? 6 : 4}`);
  for (const size of PATH_MTU_PROBE_SIZES) {
    assert.ok(probePayloadBytes(size, false) <= DISCO_MAX_LEN, `a ${size}-byte IPv4 probe fits a disco packet`);
    assert.ok(probePayloadBytes(size, true) <= DISCO_MAX_LEN);
  }
});

test('one path: probe all sizes at once, answers raise the proof at once, a re-probe may lower it, a new path starts over', () => {
  const s = newPathMtu();
  const steps: { at: number; do: () => unknown; want: unknown; proven?: number }[] = [
    { at: 0, do: () => dueProbes(s, 0).sizes.length, want: 0 }, // no path, nothing to probe
    { at: 0, do: () => followPath(s, '198.18.0.2:41641', false, 0), want: false },
    { at: 0, do: () => pathMtuNextWakeup(s), want: 0 },
    { at: 0, do: () => dueProbes(s, 0).sizes, want: PATH_MTU_PROBE_SIZES },
    { at: 10, do: () => dueProbes(s, 10).sizes.length, want: 0 }, // one round at a time
    { at: 20, do: () => noteProbeAnswered(s, '198.18.0.2:41641', 1280), want: true, proven: 1280 },
    { at: 20, do: () => noteProbeAnswered(s, '198.18.0.9:1', 1500), want: false, proven: 1280 }, // another path's answer
    { at: 21, do: () => noteProbeAnswered(s, '198.18.0.2:41641', 1500), want: true, proven: 1500 },
    { at: 22, do: () => noteProbeAnswered(s, '198.18.0.2:41641', 1400), want: false, proven: 1500 },
    { at: PATH_MTU_ROUND_MS, do: () => dueProbes(s, PATH_MTU_ROUND_MS), want: { sizes: [], changed: false }, proven: 1500 },
    { at: PATH_MTU_ROUND_MS, do: () => pathMtuNextWakeup(s), want: PATH_MTU_REPROBE_MS },
    // Ten minutes on the path shrank (a new uplink): only 1280 answers; the round's end lowers the proof.
    { at: PATH_MTU_REPROBE_MS, do: () => dueProbes(s, PATH_MTU_REPROBE_MS).sizes.length, want: PATH_MTU_PROBE_SIZES.length },
    { at: PATH_MTU_REPROBE_MS + 20, do: () => noteProbeAnswered(s, '198.18.0.2:41641', 1280), want: false, proven: 1500 },
    { at: PATH_MTU_REPROBE_MS + PATH_MTU_ROUND_MS, do: () => dueProbes(s, PATH_MTU_REPROBE_MS + PATH_MTU_ROUND_MS).changed, want: true, proven: 1280 },
    // A round nobody answers (lost probes, an old peer) proves nothing and changes nothing.
    { at: 2 * PATH_MTU_REPROBE_MS, do: () => dueProbes(s, 2 * PATH_MTU_REPROBE_MS).sizes.length, want: PATH_MTU_PROBE_SIZES.length },
    { at: 2 * PATH_MTU_REPROBE_MS + PATH_MTU_ROUND_MS, do: () => dueProbes(s, 2 * PATH_MTU_REPROBE_MS + PATH_MTU_ROUND_MS).changed, want: false, proven: 1280 },
    // The peer roams: the old proof is forgotten (a change), probing starts now.
    { at: 2 * PATH_MTU_REPROBE_MS + 6000, do: () => followPath(s, '[2001:db8::2]:41641', true, 2 * PATH_MTU_REPROBE_MS + 6000), want: true, proven: undefined },
    { at: 2 * PATH_MTU_REPROBE_MS + 6000, do: () => dueProbes(s, 2 * PATH_MTU_REPROBE_MS + 6000).sizes.length, want: PATH_MTU_PROBE_SIZES.length },
    { at: 2 * PATH_MTU_REPROBE_MS + 7000, do: () => followPath(s, undefined, false, 2 * PATH_MTU_REPROBE_MS + 7000), want: false },
    { at: 2 * PATH_MTU_REPROBE_MS + 7000, do: () => pathMtuNextWakeup(s), want: undefined }, // no path: no timers
  ];
  for (const [i, step] of steps.entries()) {
    assert.deepEqual(step.do(), step.want, `step ${i} at ${step.at}`);
    if ('proven' in step) assert.equal(s.provenBytes, step.proven, `step ${i}: proven`);
  }
});

function mtuActions(actions: DiscoAction[]) {
  return actions.filter((a): a is Extract<DiscoAction, { type: 'path-mtu' }> => a.type === 'path-mtu').map(({ pathMtu, tunnelMtu }) => ({ pathMtu, tunnelMtu }));
}

test('two cores: the chosen path is probed at once and its MTU found in one round trip; pongs match their probes', () => {
  const rows: { name: string; linkMtu?: number; want: { pathMtu?: number; tunnelMtu?: number }[] }[] = [
    { name: 'ordinary 1500 path', want: [{ pathMtu: 1280, tunnelMtu: 1216 }, { pathMtu: 1360, tunnelMtu: 1296 }, { pathMtu: 1400, tunnelMtu: 1328 }, { pathMtu: 1440, tunnelMtu: 1376 }, { pathMtu: 1480, tunnelMtu: 1420 }, { pathMtu: 1500, tunnelMtu: 1420 }] },
    { name: 'PPPoE 1492', linkMtu: 1492, want: [{ pathMtu: 1280, tunnelMtu: 1216 }, { pathMtu: 1360, tunnelMtu: 1296 }, { pathMtu: 1400, tunnelMtu: 1328 }, { pathMtu: 1440, tunnelMtu: 1376 }, { pathMtu: 1480, tunnelMtu: 1420 }] },
    { name: 'a 1280 uplink', linkMtu: 1280, want: [{ pathMtu: 1280, tunnelMtu: 1216 }] },
  ];
  for (const r of rows) {
    const net = new Net();
    const a = net.add('a', A);
    const b = net.add('b', B);
    b.linkMtu = r.linkMtu;
    net.introduce();
    net.clock.advance(4 * LATENCY_MS);
    assert.equal(net.status(a, b).path, 'direct', r.name);
    net.clock.advance(2 * LATENCY_MS + 1); // one round trip after the path was chosen
    assert.deepEqual(mtuActions(a.actions), r.want, `${r.name}: each answer raises the MTU at once`);
    assert.equal(net.status(a, b).pathMtu, r.want.at(-1)!.pathMtu, `${r.name}: status`);
    assert.equal(a.core.counters.mtuProbesSent, 6, `${r.name}: one probe per size`);
    // Every probe went to the chosen endpoint, was a ping, and every pong B sent was exactly its probe's size.
    const probes = a.actions.filter((x) => x.type === 'send-udp' && x.bytes.length > 200);
    assert.ok(probes.every((x) => x.type === 'send-udp' && formatEndpoint(x.to) === formatEndpoint(B)));
    const pongSizes = b.actions.filter((x) => x.type === 'send-udp' && x.bytes.length > 200).map((x) => (x as { bytes: Uint8Array }).bytes.length + 28).sort();
    const arrived = PATH_MTU_PROBE_SIZES.filter((size) => size <= (r.linkMtu ?? Infinity));
    assert.deepEqual(pongSizes, [...PATH_MTU_PROBE_SIZES, ...arrived].sort(), `${r.name}: B's own six probes, and a pong of the same size for each probe that reached it`);
    // The round ends; nothing changes; the next round is ten minutes away.
    net.clock.advance(PATH_MTU_ROUND_MS);
    assert.deepEqual(mtuActions(a.actions).length, r.want.length);
  }
});

test('a peer that answers a probe with a short pong (an older version) proves nothing', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  // B answers probes as an older agent would: an ordinary, unpadded pong.
  const key = discoSharedKey(b.disco.privateKey, a.disco.publicKey)!;
  const orig = b.core.handle.bind(b.core);
  b.core.handle = (e, now) => orig(e, now).map((x) => {
    if (x.type !== 'send-udp') return x;
    const m = openDisco(x.bytes, key);
    if (m?.type !== 'pong' || x.bytes.length === DISCO_PONG_LEN) return x;
    return { ...x, bytes: sealDisco({ type: 'pong', txid: m.txid, src: m.src }, b.disco.publicKey, key, new Uint8Array(24).fill(now % 256)) };
  });
  net.introduce();
  net.clock.advance(10 * LATENCY_MS + PATH_MTU_ROUND_MS);
  assert.equal(net.status(a, b).path, 'direct');
  assert.deepEqual(mtuActions(a.actions), []);
  assert.equal(net.status(a, b).pathMtu, undefined);
  assert.equal(a.core.counters.dropShortMtuPong, 6);
});

test('the path dies: what it carried is forgotten (undefined MTU), and the next path is probed afresh', () => {
  const net = new Net();
  const a = net.add('a', A);
  const b = net.add('b', B);
  b.linkMtu = 1400;
  net.introduce();
  net.clock.advance(10 * LATENCY_MS);
  assert.deepEqual(mtuActions(a.actions).at(-1), { pathMtu: 1400, tunnelMtu: 1328 });
  b.accept = () => false; // B's side goes silent
  net.clock.advance(8000);
  assert.equal(net.status(a, b).path, 'none');
  assert.deepEqual(mtuActions(a.actions).at(-1), { pathMtu: undefined, tunnelMtu: undefined });
  b.accept = () => true;
  b.linkMtu = undefined;
  net.clock.advance(40_000);
  assert.equal(net.status(a, b).path, 'direct');
  assert.deepEqual(mtuActions(a.actions).at(-1), { pathMtu: 1500, tunnelMtu: 1420 });
});
