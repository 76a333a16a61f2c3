// The UAPI codec: golden text (the get reply is what wireguard-go 0.0.20220316 wrote
// for a peer configured with `wg set`), framing errors, and property/fuzz runs
// with a seeded generator so a failure names the seed that reproduces it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EngineDiff } from '../../../agent/engine/diff.js';
import {
  UAPI_GET_REQUEST, encodeUapiSet, keyBase64ToHex, keyHexToBase64, parseUapiErrno, parseUapiGet, uapiSetFromDiff, type UapiDevice,
} from '../../../agent/engine/uapi.js';

const PRIV_HEX = '48f69abccc354422bb061730b0a2579616102ed1321929a6e252b35666cd076d';
const PEER_HEX = 'd7b8d35de9ba795baf82562f61b8846507e57738c2b202c377e253ccbdc9185d';
const PEER_B64 = '17jTXem6eVuvglYvYbiEZQfldzjCsgLDd+JTzL3JGF0=';
const ZERO_HEX = '0'.repeat(64);

const GOLDEN_GET = [
  `private_key=${PRIV_HEX}`,
  'listen_port=51820',
  `public_key=${PEER_HEX}`,
  `preshared_key=${ZERO_HEX}`,
  'protocol_version=1',
  'endpoint=198.18.1.2:51820',
  'last_handshake_time_sec=1700000000',
  'last_handshake_time_nsec=250000000',
  'tx_bytes=1184',
  'rx_bytes=92',
  'persistent_keepalive_interval=25',
  'allowed_ip=10.0.0.2/32',
  'allowed_ip=fd00::/64',
  'errno=0',
  '',
  '',
].join('\n');

/** mulberry32: a tiny seeded PRNG, so fuzz runs are reproducible. */
function rng(seed: number): () => number {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), 1 | t);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

describe('uapi get reply', () => {
  it('parses the golden reply', () => {
    const r = parseUapiGet(GOLDEN_GET);
    assert.deepEqual(r, {
      ok: true,
      value: {
        privateKeyHex: PRIV_HEX,
        listenPort: 51820,
        peers: [{
          publicKeyHex: PEER_HEX, endpoint: '198.18.1.2:51820', lastHandshakeTimeSec: 1700000000, lastHandshakeTimeNsec: 250000000,
          rxBytes: 92, txBytes: 1184, persistentKeepaliveS: 25, allowedIps: ['10.0.0.2/32', 'fd00::/64'],
        }],
      },
    });
  });

  it('parses an empty device and a v6 endpoint with a zone', () => {
    assert.deepEqual(parseUapiGet('listen_port=44249\nerrno=0\n\n'), { ok: true, value: { listenPort: 44249, peers: [] } });
    const r = parseUapiGet(`public_key=${PEER_HEX}\nendpoint=[FE80::1%eth0]:51820\nerrno=0\n\n`);
    assert.ok(r.ok);
    assert.equal(r.value.peers[0]!.endpoint, '[fe80::1]:51820');
  });

  it('skips unknown keys named like object prototype members', () => {
    const r = parseUapiGet(`public_key=${PEER_HEX}\nconstructor=1\n__proto__=2\ntostring=3\nerrno=0\n\n`);
    assert.equal(r.ok, true);
  });

  it('skips keys it does not know, wherever they are', () => {
    const text = GOLDEN_GET.replace('listen_port=51820\n', 'listen_port=51820\nfuture_device_thing=x\n')
      .replace('tx_bytes=1184\n', 'tx_bytes=1184\nfuture_peer_thing=y y\n');
    assert.deepEqual(parseUapiGet(text), parseUapiGet(GOLDEN_GET));
  });

  const bad: Array<[string, string]> = [
    ['unterminated', GOLDEN_GET.slice(0, -1)],
    ['truncated mid-line', GOLDEN_GET.slice(0, 100)],
    ['empty', ''],
    ['no errno', 'listen_port=1\n\n'],
    ['errno not last', 'errno=0\nlisten_port=1\n\n'],
    ['non-zero errno', 'errno=-22\n\n'],
    ['an empty line inside', 'listen_port=1\n\nerrno=0\n\n'],
    ['not key=value', 'listen_port 1\nerrno=0\n\n'],
    ['CR in a line', 'listen_port=1\r\nerrno=0\n\n'],
    ['port too large', 'listen_port=65536\nerrno=0\n\n'],
    ['device key twice', 'listen_port=1\nlisten_port=2\nerrno=0\n\n'],
    ['device key in a peer block', `public_key=${PEER_HEX}\nlisten_port=1\nerrno=0\n\n`],
    ['peer key before a peer', 'endpoint=1.2.3.4:5\nerrno=0\n\n'],
    ['allowed_ip before a peer', 'allowed_ip=10.0.0.0/8\nerrno=0\n\n'],
    ['short public key', `public_key=${PEER_HEX.slice(2)}\nerrno=0\n\n`],
    ['peer twice', `public_key=${PEER_HEX}\npublic_key=${PEER_HEX}\nerrno=0\n\n`],
    ['bad endpoint', `public_key=${PEER_HEX}\nendpoint=1.2.3.4\nerrno=0\n\n`],
    ['bad allowed ip', `public_key=${PEER_HEX}\nallowed_ip=10.0.0.0/33\nerrno=0\n\n`],
    ['nsec out of range', `public_key=${PEER_HEX}\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n`],
    ['bytes past 2^64', `public_key=${PEER_HEX}\nrx_bytes=18446744073709551616\nerrno=0\n\n`],
    ['negative bytes', `public_key=${PEER_HEX}\nrx_bytes=-1\nerrno=0\n\n`],
    ['protocol version 2', `public_key=${PEER_HEX}\nprotocol_version=2\nerrno=0\n\n`],
  ];
  for (const [name, text] of bad) {
    it(`rejects: ${name}`, () => {
      const r = parseUapiGet(text);
      assert.equal(r.ok, false);
    });
  }

  it('reads the errno of a set reply', () => {
    assert.deepEqual(parseUapiErrno('errno=0\n\n'), { ok: true, value: 0 });
    assert.deepEqual(parseUapiErrno('errno=-22\n\n'), { ok: true, value: -22 });
    assert.equal(parseUapiErrno('errno=0\n').ok, false);
    assert.equal(UAPI_GET_REQUEST, 'get=1\n\n');
  });

  /** Writes a device the way wireguard-go does, for the round trip below. */
  function writeGetReply(d: UapiDevice): string {
    const lines: string[] = [];
    if (d.privateKeyHex) lines.push(`private_key=${d.privateKeyHex}`);
    if (d.listenPort !== undefined) lines.push(`listen_port=${d.listenPort}`);
    if (d.fwmark !== undefined) lines.push(`fwmark=${d.fwmark}`);
    for (const p of d.peers) {
      lines.push(`public_key=${p.publicKeyHex}`, `preshared_key=${ZERO_HEX}`, 'protocol_version=1');
      if (p.endpoint) lines.push(`endpoint=${p.endpoint}`);
      lines.push(
        `last_handshake_time_sec=${p.lastHandshakeTimeSec}`, `last_handshake_time_nsec=${p.lastHandshakeTimeNsec}`,
        `tx_bytes=${p.txBytes}`, `rx_bytes=${p.rxBytes}`, `persistent_keepalive_interval=${p.persistentKeepaliveS}`,
        ...p.allowedIps.map((c) => `allowed_ip=${c}`),
      );
    }
    return lines.join('\n') + (lines.length ? '\n' : '') + 'errno=0\n\n';
  }

  it('round-trips random devices (property, 300 seeded cases)', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const int = (n: number) => Math.floor(r() * n);
      const hex = () => Array.from({ length: 64 }, () => '0123456789abcdef'[int(16)]).join('');
      const device: UapiDevice = { peers: [] };
      if (r() < 0.8) device.privateKeyHex = hex();
      if (r() < 0.9) device.listenPort = int(65536);
      if (r() < 0.2) device.fwmark = int(2 ** 32);
      const keys = new Set<string>();
      for (let i = int(6); i > 0; i--) {
        const key = hex();
        if (keys.has(key)) continue;
        keys.add(key);
        const v4 = () => `198.18.${int(256)}.${int(256)}`;
        const endpoint = r() < 0.3 ? undefined : r() < 0.7 ? `${v4()}:${1 + int(65535)}` : `[2001:db8::${int(65536).toString(16)}]:${1 + int(65535)}`;
        device.peers.push({
          publicKeyHex: key,
          ...(endpoint ? { endpoint } : {}),
          lastHandshakeTimeSec: int(2 ** 31),
          lastHandshakeTimeNsec: int(1e9),
          rxBytes: int(2 ** 40),
          txBytes: int(2 ** 40),
          persistentKeepaliveS: int(65536),
          allowedIps: Array.from({ length: int(4) }, (_, k) => `10.${int(256)}.${k}.0/24`),
        });
      }
      assert.deepEqual(parseUapiGet(writeGetReply(device)), { ok: true, value: device }, `seed ${seed}`);
    }
  });

  it('never throws on mutated replies (fuzz, 3000 seeded cases)', () => {
    const alphabet = '=\n_0123456789abcdefx:[]/.%-';
    for (let seed = 1; seed <= 3000; seed++) {
      const r = rng(seed);
      const chars = [...GOLDEN_GET];
      for (let n = 1 + Math.floor(r() * 4); n > 0; n--) {
        const at = Math.floor(r() * chars.length);
        const op = r();
        if (op < 0.4) chars[at] = alphabet[Math.floor(r() * alphabet.length)]!;
        else if (op < 0.7) chars.splice(at, 1);
        else chars.splice(at, 0, alphabet[Math.floor(r() * alphabet.length)]!);
      }
      const text = r() < 0.1 ? chars.join('').slice(0, Math.floor(r() * chars.length)) : chars.join('');
      let result;
      assert.doesNotThrow(() => { result = parseUapiGet(text); }, `seed ${seed}`);
      const res = result as unknown as ReturnType<typeof parseUapiGet>;
      if (res.ok) for (const p of res.value.peers) assert.match(p.publicKeyHex, /^[0-9a-f]{64}$/, `seed ${seed}`);
      else assert.equal(typeof res.error, 'string');
    }
  });
});

describe('uapi set request', () => {
  const key = (n: number) => Buffer.alloc(32, n).toString('base64');

  it('encodes a diff as the golden request', () => {
    const diff: EngineDiff = {
      privateKey: Buffer.from(PRIV_HEX, 'hex').toString('base64'),
      listenPort: 51820,
      removePeers: [key(1)],
      upsertPeers: [
        { publicKey: PEER_B64, create: true, endpoint: '198.18.0.7:51820', persistentKeepaliveS: 25, allowedIps: ['100.96.0.2/32', 'fd7a::2/128'] },
        { publicKey: key(3), create: false, endpoint: '[2001:db8::3]:41641' },
        { publicKey: key(4), create: false, persistentKeepaliveS: 0, allowedIps: [] },
      ],
      addAddresses: ['100.96.0.1/24'], removeAddresses: [], addRoutes: [], removeRoutes: [],
    };
    assert.equal(encodeUapiSet(uapiSetFromDiff(diff)!), [
      'set=1',
      `private_key=${PRIV_HEX}`,
      'listen_port=51820',
      `public_key=${'01'.repeat(32)}`,
      'remove=true',
      `public_key=${PEER_HEX}`,
      'endpoint=198.18.0.7:51820',
      'persistent_keepalive_interval=25',
      'allowed_ip=100.96.0.2/32',
      'allowed_ip=fd7a::2/128',
      `public_key=${'03'.repeat(32)}`,
      'update_only=true',
      'endpoint=[2001:db8::3]:41641',
      `public_key=${'04'.repeat(32)}`,
      'update_only=true',
      'persistent_keepalive_interval=0',
      'replace_allowed_ips=true',
      '',
      '',
    ].join('\n'));
  });

  it('has nothing to say for an interface-only diff', () => {
    const diff: EngineDiff = { removePeers: [], upsertPeers: [], addAddresses: ['100.96.0.1/24'], removeAddresses: [], addRoutes: [], removeRoutes: [] };
    assert.equal(uapiSetFromDiff(diff), undefined);
  });

  it('encodes replace_peers and refuses values that could break the framing', () => {
    assert.equal(encodeUapiSet({ replacePeers: true, peers: [] }), 'set=1\nreplace_peers=true\n\n');
    assert.throws(() => encodeUapiSet({ peers: [{ publicKeyHex: PEER_HEX, endpoint: '1.2.3.4:5\nremove=true' }] }), TypeError);
    assert.throws(() => encodeUapiSet({ peers: [{ publicKeyHex: PEER_HEX.toUpperCase() }] }), TypeError);
    assert.throws(() => encodeUapiSet({ peers: [{ publicKeyHex: PEER_HEX, allowedIps: ['10.0.0.0/8\nx=1'] }] }), TypeError);
    assert.throws(() => encodeUapiSet({ listenPort: 70000, peers: [] }), RangeError);
    assert.throws(() => encodeUapiSet({ peers: [{ publicKeyHex: PEER_HEX, persistentKeepaliveS: 1.5 }] }), RangeError);
  });

  it('converts keys between base64 and hex', () => {
    assert.equal(keyHexToBase64(PEER_HEX), PEER_B64);
    assert.equal(keyBase64ToHex(PEER_B64), PEER_HEX);
    assert.throws(() => keyBase64ToHex('short'), TypeError);
  });

  it('writes well-framed requests for random diffs (property, 300 seeded cases)', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const int = (n: number) => Math.floor(r() * n);
      const keys = Array.from({ length: 6 }, () => Buffer.from(Array.from({ length: 32 }, () => int(256))).toString('base64'));
      const diff: EngineDiff = {
        privateKey: r() < 0.5 ? keys[0] : undefined,
        listenPort: r() < 0.5 ? int(65536) : undefined,
        removePeers: keys.slice(1, 1 + int(3)),
        upsertPeers: keys.slice(3).map((k) => ({
          publicKey: k, create: r() < 0.5,
          endpoint: r() < 0.5 ? `198.18.${int(256)}.${int(256)}:${1 + int(65535)}` : undefined,
          persistentKeepaliveS: r() < 0.5 ? int(65536) : undefined,
          allowedIps: r() < 0.5 ? [`10.${int(256)}.0.0/16`, `fd00:${int(65536).toString(16)}::/32`] : undefined,
        })),
        addAddresses: [], removeAddresses: [], addRoutes: [], removeRoutes: [],
      };
      const req = uapiSetFromDiff(diff);
      if (!req) continue;
      const text = encodeUapiSet(req);
      assert.ok(text.startsWith('set=1\n') && text.endsWith('\n\n') && text.indexOf('\n\n') === text.length - 2, `seed ${seed}`);
      const lines = text.slice(0, -2).split('\n');
      let inPeer = false;
      const touched: string[] = [];
      for (const line of lines.slice(1)) {
        const m = /^([a-z_]+)=([\x21-\x7e]+)$/.exec(line);
        assert.ok(m, `seed ${seed}: ${line}`);
        if (m[1] === 'public_key') { inPeer = true; touched.push(keyHexToBase64(m[2]!)); continue; }
        const deviceKey = m[1] === 'private_key' || m[1] === 'listen_port';
        assert.equal(deviceKey, !inPeer, `seed ${seed}: ${m[1]} in the wrong place`);
      }
      assert.deepEqual(touched, [...diff.removePeers, ...diff.upsertPeers.map((u) => u.publicKey)], `seed ${seed}`);
    }
  });
});
