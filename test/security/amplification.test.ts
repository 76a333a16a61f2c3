/**
 * No amplification. Anything Knit answers over UDP can be aimed at a victim by
 * spoofing the victim's source address, so:
 *   - the STUN observer answers Knit's padded requests with no more bytes than
 *     they carried, and answers everyone else within a per-source budget (in
 *     requests and bytes) and a global one;
 *   - a disco pong is never larger than the ping it answers, pongs are
 *     rate-limited per source, and an unauthenticated sender gets no answer at all;
 *   - endpoint lists are capped everywhere they travel, and pings to one
 *     destination are paced however often they are asked for.
 * All on virtual time (the observer and disco cores take `now`).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeKey, generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { formatEndpoint } from '../../shared/net/addr.js';
import type { UdpEndpoint } from '../../shared/udp.js';
import { decodeClientMessage } from '../../shared/wire/control.js';
import {
  DISCO_MAGIC_NODE, DISCO_MAX_ENDPOINTS, DISCO_MIN_PING_LEN, DISCO_PONG_LEN, decodeDiscoPlaintext, discoNodeKey, discoSharedKey, encodeDiscoPlaintext, openDisco, sealDisco,
} from '../../shared/wire/disco.js';
import { encodeBindingRequest, STUN_KNIT_REQUEST_LEN, STUN_MAX_RESPONSE_LEN } from '../../shared/wire/stun.js';
import { createObserverCore, OBSERVER_GLOBAL_RATE_LIMIT_PER_SEC, OBSERVER_RATE_LIMIT_PER_SEC } from '../../coordinator/observer/core.js';
import { DiscoCore } from '../../agent/disco/core.js';
import type { DiscoAction } from '../../agent/disco/events.js';
import { MIN_PING_INTERVAL_MS, PONGS_PER_SOURCE_PER_S } from '../../agent/disco/ping-pong.js';
import { seededBytes } from '../helpers/manual-clock.js';

const rnd = seededBytes(2024);

// ---- STUN observer ------------------------------------------------------------------------

test('STUN: a padded (Knit) request is always answered with no more bytes than it carried, v4 and v6', () => {
  const core = createObserverCore();
  const sources: UdpEndpoint[] = [
    { address: '198.18.0.1', port: 1 }, { address: '2001:db8::1', port: 65535 },
    { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 40000 }, { address: '255.255.255.254', port: 9 },
  ];
  let answered = 0;
  for (let i = 0; i < 2000; i++) {
    const padTo = STUN_KNIT_REQUEST_LEN + (i % 200);
    const req = encodeBindingRequest(rnd(12), { padTo, software: i % 3 === 0 });
    const from = sources[i % sources.length]!;
    const v = core.handle(req, from, 1000 + i); // 2000 requests in 2 s from 4 sources: far over any per-source rate
    assert.ok('answer' in v, 'padded requests are never rate-limited');
    assert.ok(v.answer.length <= req.length, `${v.answer.length} > ${req.length}`);
    answered++;
  }
  assert.equal(answered, 2000);
});

test('STUN: a flood of minimal requests from one source reflects at most its per-source byte budget', () => {
  const core = createObserverCore();
  const from = { address: '198.18.0.7', port: 3478 };
  const seconds = 10;
  let inBytes = 0;
  let outBytes = 0;
  let bigger = 0;
  for (let ms = 0; ms < seconds * 1000; ms++) {
    const req = encodeBindingRequest(rnd(12)); // 28 bytes: smaller than any answer
    inBytes += req.length;
    const v = core.handle(req, from, ms);
    if ('answer' in v) {
      outBytes += v.answer.length;
      if (v.answer.length > req.length) bigger++;
    }
  }
  // 10,000 requests in; at most rate × (seconds + the initial burst) answers out, each ≤ the largest answer.
  const budget = OBSERVER_RATE_LIMIT_PER_SEC * (seconds + 1);
  assert.ok(bigger <= budget, `${bigger} amplified answers > ${budget}`);
  assert.ok(outBytes <= budget * STUN_MAX_RESPONSE_LEN, `${outBytes} bytes reflected`);
  assert.ok(outBytes < inBytes / 10, 'the flood as a whole is damped, not amplified');
});

test('STUN: spoofed sources evicting each other still share one global budget', () => {
  const core = createObserverCore({ maxSources: 100 });
  const seconds = 5;
  let answers = 0;
  for (let ms = 0; ms < seconds * 1000; ms++) {
    for (let k = 0; k < 10; k++) {
      const src = { address: `198.18.${(ms * 10 + k) >> 8 & 255}.${(ms * 10 + k) & 255}`, port: 1 + k };
      const v = core.handle(encodeBindingRequest(rnd(12)), src, ms);
      if ('answer' in v) answers++;
    }
  }
  assert.ok(answers <= OBSERVER_GLOBAL_RATE_LIMIT_PER_SEC * (seconds + 1), `${answers} answers to 50,000 spoofed requests`);
  assert.ok(core.trackedSources() <= 100, 'the source table stays bounded');
});

test('STUN: only Binding requests are answered (no reflector ping-pong); random packets never are', () => {
  const core = createObserverCore();
  const answer = encodeBindingRequest(rnd(12), { padTo: STUN_KNIT_REQUEST_LEN });
  const v = core.handle(answer, { address: '198.18.0.1', port: 1 }, 0);
  assert.ok('answer' in v);
  const response = v.answer;
  assert.ok('drop' in core.handle(response, { address: '198.18.0.2', port: 1 }, 0), 'a response is not answered');
  for (let i = 0; i < 5000; i++) {
    const b = rnd(rnd(1)[0]! + 1);
    const r = core.handle(b, { address: '198.18.0.3', port: 1 }, i);
    if ('answer' in r) assert.ok(r.answer.length <= STUN_MAX_RESPONSE_LEN);
  }
});

// ---- disco ---------------------------------------------------------------------------------

interface Agent { node: KeyPair; disco: KeyPair; core: DiscoCore; key: string; discoKey: string }

function agent(seed: number): Agent {
  const node = generateKeyPair();
  const disco = generateKeyPair();
  return {
    node, disco, key: encodeKey(node.publicKey), discoKey: encodeKey(disco.publicKey),
    core: new DiscoCore({ nodeKey: encodeKey(node.publicKey), discoPrivateKey: disco.privateKey, discoPublicKey: disco.publicKey, random: seededBytes(seed), nodePrivateKey: node.privateKey }),
  };
}

function introduce(to: Agent, peer: Agent, endpoints: string[] = ['198.18.1.1:41641']): void {
  to.core.handle({ type: 'peers-updated', peers: [{ nodeKey: peer.key, discoKey: peer.discoKey, name: 'peer', endpoints, natType: 'none', online: true }] }, 0);
}

function ping(from: Agent, to: Agent, padding = 0): Uint8Array {
  const k = discoSharedKey(from.disco.privateKey, to.disco.publicKey)!;
  return sealDisco({ type: 'ping', txid: rnd(12), nodeKey: from.node.publicKey, padding }, from.disco.publicKey, k, rnd(24));
}

const sends = (actions: DiscoAction[]) => actions.filter((a): a is Extract<DiscoAction, { type: 'send-udp' }> => a.type === 'send-udp');

test('disco wire: a pong is smaller than every ping it can answer, for v4 and v6 observed sources', () => {
  const a = agent(1);
  const b = agent(2);
  const k = discoSharedKey(a.disco.privateKey, b.disco.publicKey)!;
  const smallestPing = sealDisco({ type: 'ping', txid: rnd(12), nodeKey: a.node.publicKey }, a.disco.publicKey, k, rnd(24));
  for (const src of [{ address: '198.18.0.1', port: 1 }, { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 }]) {
    const pong = sealDisco({ type: 'pong', txid: rnd(12), src }, b.disco.publicKey, k, rnd(24));
    assert.ok(pong.length < smallestPing.length, `pong ${pong.length} ≥ ping ${smallestPing.length}`);
    assert.equal(pong.length, DISCO_PONG_LEN);
  }
  assert.equal(smallestPing.length, DISCO_MIN_PING_LEN);
  // The smallest plaintext the decoder accepts as a ping is still larger than a pong's.
  const minPing = encodeDiscoPlaintext({ type: 'ping', txid: rnd(12), nodeKey: a.node.publicKey });
  assert.ok(decodeDiscoPlaintext(minPing));
  assert.ok(decodeDiscoPlaintext(minPing.subarray(0, minPing.length - 1)) === undefined, 'a shorter ping is refused');
  assert.ok(minPing.length > encodeDiscoPlaintext({ type: 'pong', txid: rnd(12), src: { address: '::1', port: 1 } }).length);
});

test('disco core: an unauthenticated sender gets no answer at all (random bytes, strangers, forged seals, node-sealed forgeries)', () => {
  const a = agent(3);
  const b = agent(4);
  const stranger = agent(5);
  introduce(b, a);
  const from = { address: '198.18.9.9', port: 4242 };
  const forgedAsA = (() => {
    // The header names A's disco key, but the box is sealed under the stranger's key with B.
    const k = discoSharedKey(stranger.disco.privateKey, b.disco.publicKey)!;
    return sealDisco({ type: 'ping', txid: rnd(12), nodeKey: a.node.publicKey }, a.disco.publicKey, k, rnd(24));
  })();
  const nodeSealedByStranger = (() => {
    const k = discoNodeKey(stranger.node.privateKey, b.node.publicKey)!;
    return sealDisco({ type: 'disco-key', discoKey: stranger.disco.publicKey, epoch: 1 }, stranger.node.publicKey, k, rnd(24), DISCO_MAGIC_NODE);
  })();
  const nodeSealedForgedAsA = (() => {
    const k = discoNodeKey(stranger.node.privateKey, b.node.publicKey)!;
    return sealDisco({ type: 'disco-key', discoKey: stranger.disco.publicKey, epoch: 1 }, a.node.publicKey, k, rnd(24), DISCO_MAGIC_NODE);
  })();
  const inputs: [string, Uint8Array][] = [
    ['a stranger\'s valid ping', ping(stranger, b)],
    ['a ping forged under a known peer\'s disco key', forgedAsA],
    ['a stranger\'s node-sealed announcement', nodeSealedByStranger],
    ['an announcement forged as a known peer', nodeSealedForgedAsA],
  ];
  for (let i = 0; i < 2000; i++) {
    const base = inputs[i % inputs.length]![1];
    const mutated = new Uint8Array(base);
    mutated[6 + (i % (mutated.length - 6))]! ^= 1 + (i % 255);
    inputs.push([`mutated ${i}`, mutated]);
    inputs.push([`random ${i}`, rnd(1 + rnd(1)[0]! * 4)]);
  }
  let t = 0;
  for (const [what, bytes] of inputs) {
    const out = b.core.handle({ type: 'udp', from, bytes }, (t += 3));
    // (B keeps punching its real peer on its own schedule; nothing may go to the sender.)
    assert.deepEqual(sends(out).filter((s) => formatEndpoint(s.to) === formatEndpoint(from)), [], what);
  }
});

test('disco core: an authenticated ping is answered by a smaller pong; a flood of them gets at most 20 pongs/s per source', () => {
  const a = agent(6);
  const b = agent(7);
  introduce(b, a);
  const from = { address: '198.18.2.2', port: 41641 };
  let pongs = 0;
  const seconds = 5;
  for (let ms = 0; ms < seconds * 1000; ms += 2) {
    const p = ping(a, b);
    for (const s of sends(b.core.handle({ type: 'udp', from, bytes: p }, 1000 + ms))) {
      const kind = decodeKindOf(s.bytes, b, a);
      if (kind === 'pong') {
        pongs++;
        assert.ok(s.bytes.length < p.length);
        assert.equal(formatEndpoint(s.to), formatEndpoint(from), 'a pong goes back where the ping came from, nowhere else');
      }
    }
  }
  assert.ok(pongs <= PONGS_PER_SOURCE_PER_S * (seconds + 1), `${pongs} pongs to 2,500 pings`);
});

/** Which message a packet `sender` sent to `receiver` is, opened with their shared key. */
function decodeKindOf(bytes: Uint8Array, sender: Agent, receiver: Agent): string | undefined {
  return openDisco(bytes, discoSharedKey(receiver.disco.privateKey, sender.disco.publicKey)!)?.type;
}

test('endpoint lists are capped wherever they travel: 16 in control reports and call-me-maybe, 16 in disco', () => {
  const eps = (n: number) => Array.from({ length: n }, (_, i) => `198.18.3.${i + 1}:41641`);
  assert.ok(decodeClientMessage(JSON.stringify({ type: 'endpoints', endpoints: eps(16) })).ok);
  assert.equal(decodeClientMessage(JSON.stringify({ type: 'endpoints', endpoints: eps(17) })).ok, false);
  assert.equal(decodeClientMessage(JSON.stringify({ type: 'call-me-maybe', to: encodeKey(generateKeyPair().publicKey), endpoints: eps(17) })).ok, false);
  assert.equal(DISCO_MAX_ENDPOINTS, 16);
  assert.throws(() => encodeDiscoPlaintext({ type: 'call-me-maybe', endpoints: eps(17).map((e) => ({ address: e.split(':')[0]!, port: 41641 })) }), RangeError);
  // A hand-made call-me-maybe plaintext with 17 entries is refused by the decoder.
  const ok = encodeDiscoPlaintext({ type: 'call-me-maybe', endpoints: eps(16).map((e) => ({ address: e.split(':')[0]!, port: 41641 })) });
  const tooMany = new Uint8Array(ok.length + 18);
  tooMany.set(ok);
  tooMany.set(ok.subarray(2, 20), ok.length);
  assert.equal(decodeDiscoPlaintext(tooMany), undefined);
});

test('probes are paced: however often pings are asked for, one destination gets at most one per 200 ms', () => {
  const a = agent(8);
  const b = agent(9);
  const peerEndpoints = ['198.18.4.1:41641', '198.18.4.2:41641', '10.0.0.9:41641'];
  introduce(a, b, peerEndpoints);
  const perDest = new Map<string, number>();
  const seconds = 10;
  for (let ms = 0; ms < seconds * 1000; ms += 10) {
    // (ping-now is `knit ping` from the local API: explicit, unpaced by design, and not reachable from the network.)
    const events = [
      { type: 'want', nodeKey: b.key },
      { type: 'call-me-maybe', fromNodeKey: b.key, endpoints: peerEndpoints },
      { type: 'network-changed' },
      { type: 'tick' },
    ] as const;
    for (const e of events) {
      for (const s of sends(a.core.handle(e as never, ms))) {
        if (decodeKindOf(s.bytes, a, b) !== 'ping') continue;
        const k = formatEndpoint(s.to);
        perDest.set(k, (perDest.get(k) ?? 0) + 1);
      }
    }
  }
  assert.ok(perDest.size > 0 && perDest.size <= peerEndpoints.length, [...perDest.keys()].join());
  const cap = (seconds * 1000) / MIN_PING_INTERVAL_MS + 1;
  for (const [dest, n] of perDest) assert.ok(n <= cap, `${n} pings to ${dest} in ${seconds} s (cap ${cap})`);
});

test('a replayed ping from a spoofed source gets no answer (a replay cache of txids)', () => {
  const a = agent(10);
  const b = agent(11);
  introduce(b, a);
  const captured = ping(a, b);
  b.core.handle({ type: 'udp', from: { address: '198.18.5.1', port: 41641 }, bytes: captured }, 1000); // the genuine one
  let outBytes = 0;
  const victims = 50;
  for (let i = 0; i < victims; i++) {
    const out = sends(b.core.handle({ type: 'udp', from: { address: `198.18.6.${i + 1}`, port: 53 }, bytes: captured }, 2000 + i));
    // Only what goes to the spoofed sources counts: b's own punch timers may fire meanwhile.
    outBytes += out.filter((s) => s.to.address.startsWith('198.18.6.')).reduce((n, s) => n + s.bytes.length, 0);
  }
  assert.equal(outBytes, 0, 'a replay is recognised and dropped: nothing reaches the victims');
  assert.equal(b.core.counters.dropReplay, victims);
});
