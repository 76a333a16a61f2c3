// The `wg` codec: the argv a diff becomes (golden), and `wg show dump` parsing
// (golden lines in the layout wireguard-tools 1.0.20210914 printed here).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EngineDiff } from '../../../agent/engine/diff.js';
import { statsFromWgDump, stateFromWgDump } from '../../../agent/engine/kernel.js';
import { parseWgDump, wgSetArgv } from '../../../agent/engine/wg-tool.js';

const key = (n: number) => Buffer.alloc(32, n).toString('base64');
const PRIV = key(0x11);
const PUB = key(0x22);
const P1 = key(0x33);
const P2 = key(0x44);

const GOLDEN_DUMP =
  `${PRIV}\t${PUB}\t51820\toff\n` +
  `${P1}\t(none)\t198.18.1.2:51820\t10.0.0.2/32,fd00::/64\t1700000123\t92\t1184\t25\n` +
  `${P2}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n`;

const emptyDiff = (): EngineDiff => ({
  removePeers: [], upsertPeers: [], addAddresses: [], removeAddresses: [], addRoutes: [], removeRoutes: [],
});

describe('wg set argv', () => {
  it('builds the golden argv, naming the key file, never the key', () => {
    const argv = wgSetArgv('wg0', {
      ...emptyDiff(),
      privateKey: PRIV,
      listenPort: 51820,
      removePeers: [P2],
      upsertPeers: [
        { publicKey: P1, create: true, endpoint: '198.18.0.7:51820', persistentKeepaliveS: 25, allowedIps: ['100.96.0.2/32', 'fd7a::2/128'] },
        { publicKey: PUB, create: false, persistentKeepaliveS: 0, allowedIps: [] },
      ],
    }, '/dev/shm/knit-wg-x/private-key');
    assert.deepEqual(argv, [
        'wg', 'set', 'wg0', 'private-key', '/dev/shm/knit-wg-x/private-key', 'listen-port', '51820',
        'peer', P2, 'remove',
        'peer', P1, 'endpoint', '198.18.0.7:51820', 'persistent-keepalive', '25', 'allowed-ips', '100.96.0.2/32,fd7a::2/128',
        'peer', PUB, 'persistent-keepalive', 'off', 'allowed-ips', '',
    ]);
    assert.ok(!argv!.includes(PRIV), 'the private key never appears in argv');
  });

  it('refuses a key change without a key file', () => {
    assert.throws(() => wgSetArgv('wg0', { ...emptyDiff(), privateKey: PRIV }), TypeError);
  });

  it('has nothing to run for an interface-only diff', () => {
    assert.equal(wgSetArgv('wg0', { ...emptyDiff(), addRoutes: ['100.96.0.2/32'] }), undefined);
  });
});

describe('wg show dump', () => {
  it('parses the golden dump', () => {
    assert.deepEqual(parseWgDump(GOLDEN_DUMP), {
      ok: true,
      value: {
        privateKey: PRIV, listenPort: 51820, fwmark: 0,
        peers: [
          { publicKey: P1, endpoint: '198.18.1.2:51820', allowedIps: ['10.0.0.2/32', 'fd00::/64'], latestHandshakeS: 1700000123, rxBytes: 92, txBytes: 1184, persistentKeepaliveS: 25 },
          { publicKey: P2, endpoint: undefined, allowedIps: [], latestHandshakeS: 0, rxBytes: 0, txBytes: 0, persistentKeepaliveS: 0 },
        ],
      },
    });
  });

  it('turns a dump into engine state and stats', () => {
    const dump = parseWgDump(GOLDEN_DUMP);
    assert.ok(dump.ok);
    const state = stateFromWgDump(dump.value, ['100.96.0.1/24'], ['10.0.0.2/32']);
    assert.equal(state.privateKey, PRIV);
    assert.deepEqual(state.peers.map((p) => p.publicKey), [P1, P2].sort());
    const stats = statsFromWgDump(dump.value);
    assert.deepEqual(stats[0], { publicKey: P1, endpoint: '198.18.1.2:51820', lastHandshakeMs: 1700000123000, rxBytes: 92, txBytes: 1184 });
  });

  it('parses an interface with no key and a fwmark', () => {
    assert.deepEqual(parseWgDump('(none)\t(none)\t0\t0xca6c\n'), { ok: true, value: { privateKey: undefined, listenPort: 0, fwmark: 0xca6c, peers: [] } });
  });

  const bad: Array<[string, string]> = [
    ['empty', ''],
    ['short interface line', `${PRIV}\t${PUB}\t51820\n`],
    ['bad port', `${PRIV}\t${PUB}\t65536\toff\n`],
    ['bad fwmark', `${PRIV}\t${PUB}\t1\t12\n`],
    ['short peer line', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\n`],
    ['bad peer key', `${PRIV}\t${PUB}\t1\toff\n${P1.slice(1)}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n`],
    ['bad endpoint', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\t1.2.3.4\t(none)\t0\t0\t0\toff\n`],
    ['bad allowed ip', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\t(none)\t10.0.0.0/40\t0\t0\t0\toff\n`],
    ['bad counter', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\t(none)\t(none)\t0\t-1\t0\toff\n`],
    ['bad keepalive', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\t(none)\t(none)\t0\t0\t0\t70000\n`],
    ['peer twice', `${PRIV}\t${PUB}\t1\toff\n${P1}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n${P1}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n`],
  ];
  for (const [name, text] of bad) {
    it(`rejects: ${name}`, () => assert.equal(parseWgDump(text).ok, false));
  }
});
