import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createEndpointDiscovery, REDISCOVER_MS, type DiscoveryAction, type DiscoveryEvent, type DiscoveryResult, type EndpointDiscovery,
} from '../../../agent/discovery/index.js';
import type { UdpEndpoint } from '../../../shared/udp.js';
import { encodeBindingResponse, parseBindingRequest, STUN_KNIT_REQUEST_LEN } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';

// Step tables on virtual time: each step delivers one event at `at` and states
// what must come out (which observers get a request, the result if a round
// ends) and when the core wants its next tick.

const S1 = { address: '198.18.0.1', port: 3478 };
const S2 = { address: '198.18.0.1', port: 3479 };
const S3 = { address: '198.18.0.2', port: 3478 }; // a second observer address
const PORT = 41641;
const LAN = ['10.0.0.2'];
const PUBLIC = { address: '198.18.9.9', port: PORT };

type Input =
  | DiscoveryEvent
  /** The observer answers the latest request it got, reporting `mapped`; `from` overrides the source. */
  | { answer: UdpEndpoint; mapped: UdpEndpoint; from?: UdpEndpoint; txidOf?: UdpEndpoint };

interface Step {
  at: number;
  input: Input;
  sends?: UdpEndpoint[];
  result?: Partial<DiscoveryResult> & { changed?: boolean };
  wake?: number | undefined;
  note?: string;
}

function harness(core: EndpointDiscovery = createEndpointDiscovery({ random: seededBytes(1) })) {
  const lastSent = new Map<string, Uint8Array>();
  const key = (e: UdpEndpoint) => `${e.address}:${e.port}`;
  const results: DiscoveryResult[] = [];
  function run(steps: Step[]): void {
    for (const s of steps) {
      const where = `at ${s.at}${s.note ? ` (${s.note})` : ''}`;
      let out: DiscoveryAction[];
      if ('answer' in s.input) {
        const req = lastSent.get(key(s.input.txidOf ?? s.input.answer));
        assert.ok(req, `${where}: the observer was never asked`);
        const txid = parseBindingRequest(req)!.txid;
        out = core.handle({ type: 'packet', from: s.input.from ?? s.input.answer, bytes: encodeBindingResponse(txid, s.input.mapped) }, s.at);
      } else out = core.handle(s.input, s.at);
      const sends = out.filter((a): a is Extract<DiscoveryAction, { type: 'send' }> => a.type === 'send');
      for (const a of sends) {
        assert.equal(a.bytes.length, STUN_KNIT_REQUEST_LEN, `${where}: requests are padded`);
        assert.ok(parseBindingRequest(a.bytes), `${where}: a valid Binding request`);
        lastSent.set(key(a.to), a.bytes);
      }
      assert.deepEqual(sends.map((a) => a.to), s.sends ?? [], `${where}: sends`);
      const res = out.filter((a): a is Extract<DiscoveryAction, { type: 'result' }> => a.type === 'result');
      if (s.result) {
        assert.equal(res.length, 1, `${where}: a result`);
        const { changed, ...want } = s.result;
        for (const [k, v] of Object.entries(want)) assert.deepEqual(res[0]!.result[k as keyof DiscoveryResult], v, `${where}: result.${k}`);
        if (changed !== undefined) assert.equal(res[0]!.changed, changed, `${where}: changed`);
        results.push(res[0]!.result);
      } else assert.equal(res.length, 0, `${where}: no result`);
      if ('wake' in s) assert.equal(core.nextWakeup(), s.wake, `${where}: next wakeup`);
    }
  }
  return { core, run, results, lastSent };
}

const start = (servers: UdpEndpoint[], localAddresses = LAN, localPort = PORT): DiscoveryEvent => ({ type: 'start', servers, localAddresses, localPort });
const tick: DiscoveryEvent = { type: 'tick' };

test('two ports saw the same mapping: endpoint-independent, port preserved, candidates, then every 20 s', () => {
  harness().run([
    { at: 0, input: start([S1, S2]), sends: [S1, S2], wake: 250 },
    { at: 30, input: { answer: S1, mapped: PUBLIC }, wake: 250 },
    { at: 40, input: { answer: S2, mapped: PUBLIC }, wake: REDISCOVER_MS,
      result: { natType: 'endpoint-independent', comparedAcross: 'ports', portPreserved: true, reflexive: [PUBLIC],
        candidates: ['198.18.9.9:41641', '10.0.0.2:41641'], answered: 2, asked: 2, reason: 'start', changed: true,
        observations: [{ server: S1, mapped: PUBLIC, rttMs: 30 }, { server: S2, mapped: PUBLIC, rttMs: 40 }] } },
    { at: REDISCOVER_MS - 1, input: tick, note: 'too early: nothing' },
    { at: REDISCOVER_MS, input: tick, sends: [S1, S2], wake: REDISCOVER_MS + 250, note: 'the periodic round (the mapping keepalive)' },
    { at: REDISCOVER_MS + 5, input: { answer: S1, mapped: PUBLIC } },
    { at: REDISCOVER_MS + 6, input: { answer: S2, mapped: PUBLIC }, result: { reason: 'periodic', changed: false }, wake: 2 * REDISCOVER_MS },
  ]);
});

test('mapping classification from two observers (table)', () => {
  const rows: { name: string; servers: UdpEndpoint[]; m1: UdpEndpoint; m2: UdpEndpoint; want: Partial<DiscoveryResult> }[] = [
    { name: 'symmetric NAT: a new port per destination port', servers: [S1, S2], m1: { address: '198.18.9.9', port: 1024 }, m2: { address: '198.18.9.9', port: 1025 },
      want: { natType: 'endpoint-dependent', comparedAcross: 'ports', portPreserved: false } },
    { name: 'port preserved towards the first observer only', servers: [S1, S2], m1: PUBLIC, m2: { address: '198.18.9.9', port: 1025 },
      want: { natType: 'endpoint-dependent', portPreserved: true } },
    { name: 'no NAT: the mapping is our own address and port', servers: [S1, S2], m1: { address: '10.0.0.2', port: PORT }, m2: { address: '10.0.0.2', port: PORT },
      want: { natType: 'none', portPreserved: true, candidates: ['10.0.0.2:41641'] } },
    { name: 'two observer addresses agree', servers: [S1, S3], m1: { address: '198.18.9.9', port: 5000 }, m2: { address: '198.18.9.9', port: 5000 },
      want: { natType: 'endpoint-independent', comparedAcross: 'addresses', portPreserved: false } },
    { name: 'two observer addresses disagree', servers: [S1, S3], m1: { address: '198.18.9.9', port: 5000 }, m2: { address: '198.18.9.10', port: 5000 },
      want: { natType: 'endpoint-dependent', comparedAcross: 'addresses', reflexive: [{ address: '198.18.9.9', port: 5000 }, { address: '198.18.9.10', port: 5000 }] } },
  ];
  for (const r of rows) {
    harness().run([
      { at: 0, input: start(r.servers), sends: r.servers, note: r.name },
      { at: 10, input: { answer: r.servers[0]!, mapped: r.m1 }, note: r.name },
      { at: 20, input: { answer: r.servers[1]!, mapped: r.m2 }, result: r.want, note: r.name },
    ]);
  }
});

test('one observer: retransmits at 0/250/750 ms, an answer after a retransmit has no RTT (Karn), mapping unknown', () => {
  harness().run([
    { at: 0, input: start([S1]), sends: [S1], wake: 250 },
    { at: 249, input: tick, wake: 250 },
    { at: 250, input: tick, sends: [S1], wake: 750 },
    { at: 750, input: tick, sends: [S1], wake: 2000, note: 'last retransmit; now only the deadline' },
    { at: 900, input: { answer: S1, mapped: PUBLIC },
      result: { natType: 'unknown', portPreserved: true, observations: [{ server: S1, mapped: PUBLIC }], answered: 1, asked: 1 }, wake: REDISCOVER_MS },
  ]);
});

test('nobody answers: blocked after 2 s, retried at 5 s then doubling up to the period; one answer restores the period', () => {
  harness().run([
    { at: 0, input: start([S1, S2]), sends: [S1, S2] },
    { at: 250, input: tick, sends: [S1, S2] },
    { at: 750, input: tick, sends: [S1, S2], wake: 2000 },
    { at: 2000, input: tick, result: { natType: 'blocked', answered: 0, asked: 2, reflexive: [], candidates: ['10.0.0.2:41641'], portPreserved: undefined }, wake: 5000 },
    { at: 5000, input: tick, sends: [S1, S2] },
    { at: 7000, input: tick, result: { natType: 'blocked', changed: false }, wake: 15_000, note: '5 s after the round began, then 10' },
    { at: 15_000, input: tick, sends: [S1, S2] },
    { at: 17_000, input: tick, result: { natType: 'blocked' }, wake: 35_000, note: 'then 20 (capped at the period)' },
    { at: 35_000, input: tick, sends: [S1, S2] },
    { at: 35_010, input: { answer: S1, mapped: PUBLIC }, wake: 35_250 },
    { at: 37_000, input: tick, result: { natType: 'unknown', answered: 1, asked: 2, changed: true }, wake: 35_000 + REDISCOVER_MS },
  ]);
});

test('a lost round keeps the last reflexive candidate (marked carried) until the interfaces change', () => {
  harness().run([
    { at: 0, input: start([S1]), sends: [S1] },
    { at: 10, input: { answer: S1, mapped: PUBLIC }, result: { candidates: ['198.18.9.9:41641', '10.0.0.2:41641'], reflexiveCarried: false } },
    { at: REDISCOVER_MS, input: tick, sends: [S1] },
    { at: REDISCOVER_MS + 250, input: tick, sends: [S1] },
    { at: REDISCOVER_MS + 750, input: tick, sends: [S1] },
    { at: REDISCOVER_MS + 2000, input: tick, note: 'all lost',
      result: { natType: 'blocked', reflexive: [], candidates: ['198.18.9.9:41641', '10.0.0.2:41641'], reflexiveCarried: true, changed: true } },
    { at: REDISCOVER_MS + 2100, input: { type: 'interfaces-changed', localAddresses: ['10.1.0.5'] }, sends: [S1], note: 'roamed' },
    { at: REDISCOVER_MS + 4100, input: tick, result: { natType: 'blocked', candidates: ['10.1.0.5:41641'], reflexiveCarried: false, reason: 'interfaces-changed' } },
  ]);
});

test('answers count only for an outstanding transaction, from the observer it was sent to', () => {
  const h = harness();
  h.run([{ at: 0, input: start([S1, S2]), sends: [S1, S2] }]);
  h.run([
    { at: 1, input: { answer: S1, mapped: PUBLIC, from: { address: '198.18.0.66', port: 3478 } }, note: 'right txid, another address' },
    { at: 2, input: { answer: S1, mapped: PUBLIC, from: { address: '198.18.0.1', port: 9999 } }, note: 'right txid, another port' },
    { at: 3, input: { answer: S2, mapped: PUBLIC, txidOf: S1 }, note: "S1's txid answered by S2" },
    { at: 4, input: { type: 'packet', from: S1, bytes: encodeBindingResponse(new Uint8Array(12), PUBLIC) }, note: 'unknown txid' },
    { at: 5, input: { type: 'packet', from: S1, bytes: new Uint8Array([0, 1, 2, 3]) }, note: 'garbage' },
    { at: 6, input: { type: 'packet', from: S1, bytes: h.lastSent.get('198.18.0.1:3478')! }, note: 'a request, not an answer' },
    { at: 7, input: { answer: S1, mapped: PUBLIC } },
    { at: 8, input: { answer: S1, mapped: { address: '198.18.6.6', port: 1 } }, note: 'a duplicate does not overwrite' },
    { at: 9, input: { answer: S2, mapped: PUBLIC }, result: { reflexive: [PUBLIC], natType: 'endpoint-independent' } },
    { at: 10, input: { answer: S2, mapped: PUBLIC }, note: 'late: the round is over' },
  ]);
});

test('interfaces change mid-round: a new round at once with new ids; the old round\'s answers are ignored', () => {
  const h = harness();
  h.run([
    { at: 0, input: start([S1]), sends: [S1] },
  ]);
  const oldRequest = h.lastSent.get('198.18.0.1:3478')!;
  h.run([
    { at: 100, input: { type: 'interfaces-changed', localAddresses: ['10.1.0.5'] }, sends: [S1], wake: 350 },
    { at: 110, input: { type: 'packet', from: S1, bytes: encodeBindingResponse(parseBindingRequest(oldRequest)!.txid, PUBLIC) }, note: 'answer for the abandoned id' },
    { at: 120, input: { answer: S1, mapped: { address: '198.18.5.5', port: 7000 } },
      result: { reason: 'interfaces-changed', candidates: ['198.18.5.5:7000', '10.1.0.5:41641'], portPreserved: false } },
  ]);
});

test('refresh: starts a round when idle, is absorbed by one in flight', () => {
  harness().run([
    { at: 0, input: start([S1]), sends: [S1] },
    { at: 5, input: { type: 'refresh' }, note: 'in flight: no second round' },
    { at: 10, input: { answer: S1, mapped: PUBLIC }, result: { reason: 'start' } },
    { at: 1000, input: { type: 'refresh' }, sends: [S1] },
    { at: 1010, input: { answer: S1, mapped: PUBLIC }, result: { reason: 'refresh', changed: false }, wake: 1000 + REDISCOVER_MS },
  ]);
});

test('a late tick sends one request per observer, not a burst of the missed retransmits', () => {
  harness().run([
    { at: 0, input: start([S1, S2]), sends: [S1, S2] },
    { at: 800, input: tick, sends: [S1, S2], wake: 2000, note: '250 and 750 both missed: one send each' },
  ]);
});

test('no observers: nothing to do; stop: nothing scheduled', () => {
  harness().run([
    { at: 0, input: start([]), wake: undefined },
    { at: 1, input: { type: 'interfaces-changed', localAddresses: ['10.0.0.9'] }, wake: undefined },
    { at: 2, input: start([S1]), sends: [S1], wake: 252 },
    { at: 3, input: { type: 'stop' }, wake: undefined },
    { at: 10_000_000, input: tick },
  ]);
});

test('bad options are programmer errors', () => {
  assert.throws(() => createEndpointDiscovery({ random: seededBytes(1), retransmitMs: [0, 250, 250] }), RangeError);
  assert.throws(() => createEndpointDiscovery({ random: seededBytes(1), retransmitMs: [0, 3000] }), RangeError);
  assert.throws(() => createEndpointDiscovery({ random: seededBytes(1), retransmitMs: [] }), RangeError);
});
