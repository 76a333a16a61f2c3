/**
 * Fuzzing the mDNS input path: mutated and random datagrams go through the
 * DNS decoder (dns-packet, as multicast-dns uses it) and, when they decode,
 * through our record parser and the LAN core. Nothing may throw, and nothing
 * accepted may break the core's bounds: candidates only for peers, only
 * on-link addresses, at most MAX_ADDRESSES per announcement.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket from 'dns-packet';
import { LanCore } from '../../agent/lan/core.js';
import { browseQuery, decodeDatagram, MAX_ADDRESSES, meshIdOf, ourRecords, parseResponse, type LanSelf } from '../../agent/lan/records.js';
import { seededBytes } from '../helpers/manual-clock.js';
import { fuzzIterations } from './budget.js';

const MESH = meshIdOf('fuzz');
const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const me: LanSelf = { name: 'me', nodeKey: key(1), discoKey: key(11), port: 41641, meshId: MESH };
const peer: LanSelf = { name: 'peer', nodeKey: key(2), discoKey: key(12), port: 41642, meshId: MESH };

const SEEDS = [
  dnsPacket.encode({ type: 'response', ...ourRecords(peer, '10.0.0.7') }),
  dnsPacket.encode({ type: 'response', ...ourRecords(peer, '10.0.0.7', 0) }),
  dnsPacket.encode(browseQuery([{ instance: 'peer-00000000._knit._udp.local', ttlS: 100 }])),
];

function mutate(seed: Buffer, rnd: (n: number) => Uint8Array): Buffer {
  const b = Buffer.from(seed);
  const r = rnd(6);
  switch (r[0]! % 4) {
    case 0: { // flip a few bytes
      for (let i = 0; i < 1 + (r[1]! % 8); i++) {
        const at = rnd(2);
        b[((at[0]! << 8) | at[1]!) % b.length] = rnd(1)[0]!;
      }
      return b;
    }
    case 1: return b.subarray(0, r[1]! % b.length); // truncate
    case 2: b.writeUInt16BE(((r[1]! << 8) | r[2]!), 6 + 2 * (r[3]! % 3)); return b; // absurd record counts
    default: return Buffer.concat([b.subarray(0, r[1]! % b.length), Buffer.from(rnd(r[2]! % 64)), b.subarray(r[1]! % b.length)]); // splice garbage
  }
}

test('mDNS: mutated and random datagrams never throw, and what is accepted stays within bounds', () => {
  const rnd = seededBytes(53);
  const core = new LanCore(me, rnd);
  core.handle({ type: 'peers', nodeKeys: [peer.nodeKey] }, 0);
  core.handle({ type: 'interfaces', interfaces: [{ name: 'eth0', address: '10.0.0.5', prefixLen: 24 }] }, 0);
  core.handle({ type: 'start' }, 0);
  let decoded = 0;
  let candidates = 0;
  const n = fuzzIterations(5000);
  for (let i = 0; i < n; i++) {
    const bytes = i % 10 === 0 ? Buffer.from(rnd(rnd(1)[0]! * 2)) : mutate(SEEDS[i % SEEDS.length]!, rnd);
    const packet = decodeDatagram(bytes);
    if (packet) decoded++;
    if (packet) for (const a of parseResponse(packet).announcements) assert.ok(a.addresses.length <= MAX_ADDRESSES && a.port >= 1 && a.port <= 65535);
    const from = i % 7 === 0 ? '172.16.0.9' : '10.0.0.7';
    for (const action of core.handle({ type: 'packet', from, packet }, i)) {
      if (action.type !== 'candidate') continue;
      candidates++;
      assert.equal(action.nodeKey, peer.nodeKey, 'only peers become candidates');
      assert.match(action.endpoint.address, /^10\.0\.0\.\d+$/, 'only on-link addresses');
    }
  }
  assert.ok(decoded > n / 10, 'mutations stay near valid input often enough to reach the parser');
  assert.ok(candidates > 0, 'some mutations keep a valid announcement');
  assert.ok(core.counters.malformed > 0);
});
