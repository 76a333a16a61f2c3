// The engine diff, as tables: config validation, then current → desired → diff.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeKey, publicKeyOf } from '../../../shared/crypto/keys.js';
import {
  EMPTY_ENGINE_STATE, computeEngineDiff, diffAddsFamily, isEmptyDiff, normalizeEngineConfig, withoutSkippedAdditions, type EngineDiff, type EngineState,
} from '../../../agent/engine/diff.js';
import type { ApplyOptions, EngineConfig } from '../../../agent/engine/types.js';

const privBytes = new Uint8Array(32).fill(9);
const PRIV = encodeKey(privBytes);
const OWN_PUB = encodeKey(publicKeyOf(privBytes));
const K = (n: number) => Buffer.alloc(32, n).toString('base64');

const config = (over: Partial<EngineConfig> = {}): EngineConfig => ({
  privateKey: PRIV,
  listenPort: 51820,
  addresses: ['100.96.0.1/10'],
  peers: [
    { publicKey: K(1), allowedIps: ['100.96.0.2/32'], endpoint: '198.18.0.2:51820' },
    { publicKey: K(2), allowedIps: ['100.96.0.3/32', '10.9.0.7/24'], persistentKeepaliveS: 25 },
  ],
  ...over,
});

const norm = (c: EngineConfig): EngineState => {
  const r = normalizeEngineConfig(c);
  if (!r.ok) throw new Error(r.error);
  return r.value;
};

describe('normalizeEngineConfig', () => {
  it('canonicalises and sorts, and derives the routes', () => {
    assert.deepEqual(norm(config()), {
      privateKey: PRIV,
      listenPort: 51820,
      addresses: ['100.96.0.1/10'],
      peers: [
        { publicKey: K(1), allowedIps: ['100.96.0.2/32'], endpoint: '198.18.0.2:51820', persistentKeepaliveS: 0 },
        { publicKey: K(2), allowedIps: ['10.9.0.0/24', '100.96.0.3/32'], endpoint: undefined, persistentKeepaliveS: 25 },
      ].sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1)),
      routes: ['10.9.0.0/24', '100.96.0.2/32', '100.96.0.3/32'],
    });
  });

  it('never routes a default route into the tunnel', () => {
    const s = norm(config({ peers: [{ publicKey: K(1), allowedIps: ['0.0.0.0/0', '::/0', '100.96.0.2/32'] }] }));
    assert.deepEqual(s.routes, ['100.96.0.2/32']);
  });

  it('remembers checked lists by their text, and a list that joins to the same text is still checked', () => {
    const list = ['10.1.0.0/16', '10.0.0.0/8'];
    const first = norm(config({ peers: [{ publicKey: K(1), allowedIps: list }] }));
    assert.deepEqual(first.peers[0]!.allowedIps, ['10.0.0.0/8', '10.1.0.0/16']);
    assert.equal(norm(config({ peers: [{ publicKey: K(1), allowedIps: [...list] }] })).peers[0]!.allowedIps, first.peers[0]!.allowedIps, 'the same canonical list');
    for (const smuggled of [['10.1.0.0/16 10.0.0.0/8'], ['10.1.0.0/16', '10.0.0.0/8 ']]) {
      assert.equal(normalizeEngineConfig(config({ peers: [{ publicKey: K(1), allowedIps: smuggled }] })).ok, false, JSON.stringify(smuggled));
    }
    const notText = [10, '10.0.0.0/8'] as unknown as string[];
    assert.equal(normalizeEngineConfig(config({ peers: [{ publicKey: K(1), allowedIps: notText }] })).ok, false);
  });

  const bad: Array<[string, (c: EngineConfig) => void]> = [
    ['a bad private key', (c) => { c.privateKey = 'x'; }],
    ['a listen port past 65535', (c) => { c.listenPort = 65536; }],
    ['a fractional listen port', (c) => { c.listenPort = 1.5; }],
    ['a bad address', (c) => { c.addresses = ['100.96.0.1/33']; }],
    ['a bad peer key', (c) => { c.peers[0]!.publicKey = K(1).slice(1); }],
    ['a bad allowed IP', (c) => { c.peers[0]!.allowedIps = ['10.0.0.0/8,10.1.0.0/16']; }],
    ['a bad endpoint', (c) => { c.peers[0]!.endpoint = '198.18.0.2'; }],
    ['an endpoint with a newline', (c) => { c.peers[0]!.endpoint = '198.18.0.2:1\n'; }],
    ['a negative keepalive', (c) => { c.peers[0]!.persistentKeepaliveS = -1; }],
    ['a keepalive past 65535', (c) => { c.peers[0]!.persistentKeepaliveS = 65536; }],
    ['a peer listed twice', (c) => { c.peers[1]!.publicKey = K(1); }],
    ['an allowed IP claimed twice', (c) => { c.peers[1]!.allowedIps = ['100.96.0.2/32']; }],
    ['an allowed IP claimed twice once masked', (c) => { c.peers[0]!.allowedIps = ['10.9.0.1/24']; }],
    ['our own key as a peer', (c) => { c.peers[0]!.publicKey = OWN_PUB; }],
    ['peers not a list', (c) => { (c as unknown as { peers: unknown }).peers = {}; }],
    ['a route MTU below IPv4\'s minimum', (c) => { c.peers[0]!.mtu = 575; }],
    ['a route MTU past jumbo frames', (c) => { c.peers[0]!.mtu = 9001; }],
    ['a fractional route MTU', (c) => { c.peers[0]!.mtu = 1280.5; }],
  ];
  for (const [name, mutate] of bad) {
    it(`rejects ${name}, without echoing the private key`, () => {
      const c = structuredClone(config());
      mutate(c);
      const r = normalizeEngineConfig(c);
      assert.equal(r.ok, false);
      if (!r.ok) assert.ok(!r.error.includes(PRIV));
    });
  }
});

describe('computeEngineDiff', () => {
  const empty = (): EngineDiff => ({ removePeers: [], upsertPeers: [], addAddresses: [], removeAddresses: [], addRoutes: [], removeRoutes: [] });
  const steps: Array<{ name: string; current: EngineState; desired: EngineConfig; options?: ApplyOptions; want: EngineDiff }> = [
    {
      name: 'from nothing: everything is new',
      current: EMPTY_ENGINE_STATE,
      desired: config(),
      want: {
        ...empty(),
        privateKey: PRIV,
        listenPort: 51820,
        upsertPeers: [
          { publicKey: K(1), create: true, endpoint: '198.18.0.2:51820', persistentKeepaliveS: 0, allowedIps: ['100.96.0.2/32'] },
          { publicKey: K(2), create: true, endpoint: undefined, persistentKeepaliveS: 25, allowedIps: ['10.9.0.0/24', '100.96.0.3/32'] },
        ],
        addAddresses: ['100.96.0.1/10'],
        addRoutes: ['10.9.0.0/24', '100.96.0.2/32', '100.96.0.3/32'],
      },
    },
    { name: 'same config: nothing', current: norm(config()), desired: config(), want: empty() },
    {
      name: 'one endpoint moves',
      current: norm(config()),
      desired: config({ peers: [{ ...config().peers[0]!, endpoint: '198.18.5.5:1' }, config().peers[1]!] }),
      want: { ...empty(), upsertPeers: [{ publicKey: K(1), create: false, endpoint: '198.18.5.5:1' }] },
    },
    {
      name: 'an unset endpoint keeps the old one: nothing',
      current: norm(config()),
      desired: config({ peers: [{ ...config().peers[0]!, endpoint: undefined }, config().peers[1]!] }),
      want: empty(),
    },
    {
      name: 'reassert: every known endpoint again',
      current: norm(config()),
      desired: config({ peers: [{ ...config().peers[0]!, endpoint: undefined }, config().peers[1]!] }),
      options: { reassertEndpoints: true },
      want: { ...empty(), upsertPeers: [{ publicKey: K(1), create: false, endpoint: '198.18.0.2:51820' }] },
    },
    {
      name: 'rehandshake: the peer removed and created again whole, in one write',
      current: norm(config()),
      desired: config(),
      options: { rehandshake: new Set([K(1)]) },
      want: {
        ...empty(), removePeers: [K(1)],
        upsertPeers: [{ publicKey: K(1), create: true, endpoint: '198.18.0.2:51820', persistentKeepaliveS: 0, allowedIps: ['100.96.0.2/32'] }],
      },
    },
    {
      name: 'rehandshake of a peer with no endpoint known: nothing (it could not initiate)',
      current: norm(config()),
      desired: config(),
      options: { rehandshake: new Set([K(2)]) },
      want: empty(),
    },
    {
      name: 'a peer goes: removed with its routes',
      current: norm(config()),
      desired: config({ peers: [config().peers[0]!] }),
      want: { ...empty(), removePeers: [K(2)], removeRoutes: ['10.9.0.0/24', '100.96.0.3/32'] },
    },
    {
      name: 'allowed IPs change: the whole list, and the route difference',
      current: norm(config()),
      desired: config({ peers: [{ ...config().peers[0]!, allowedIps: ['100.96.0.2/32', '100.96.8.0/24'] }, config().peers[1]!] }),
      want: { ...empty(), upsertPeers: [{ publicKey: K(1), create: false, allowedIps: ['100.96.0.2/32', '100.96.8.0/24'] }], addRoutes: ['100.96.8.0/24'] },
    },
    {
      name: 'renumbered interface: address swap only',
      current: norm(config()),
      desired: config({ addresses: ['100.96.0.9/10'] }),
      want: { ...empty(), addAddresses: ['100.96.0.9/10'], removeAddresses: ['100.96.0.1/10'] },
    },
    {
      name: 'port 0 keeps the port the engine has',
      current: { ...norm(config()), listenPort: 44249 },
      desired: config({ listenPort: 0 }),
      want: empty(),
    },
    {
      name: 'a new port is written',
      current: norm(config()),
      desired: config({ listenPort: 41641 }),
      want: { ...empty(), listenPort: 41641 },
    },
    {
      name: 'a peer gets a path MTU: its routes are replaced in place with it, WireGuard is not touched',
      current: norm(config()),
      desired: config({ peers: [config().peers[0]!, { ...config().peers[1]!, mtu: 1216 }] }),
      want: { ...empty(), addRoutes: ['10.9.0.0/24 mtu 1216', '100.96.0.3/32 mtu 1216'] },
    },
    {
      name: 'its MTU changes, then goes (the interface\'s again): replaced in place, never deleted first',
      current: norm(config({ peers: [config().peers[0]!, { ...config().peers[1]!, mtu: 1216 }] })),
      desired: config({ peers: [config().peers[0]!, { ...config().peers[1]!, mtu: 1420 }] }),
      want: { ...empty(), addRoutes: ['10.9.0.0/24 mtu 1420', '100.96.0.3/32 mtu 1420'] },
    },
    {
      name: 'a peer with an MTU goes: its routes are removed as they were written',
      current: norm(config({ peers: [config().peers[0]!, { ...config().peers[1]!, mtu: 1216 }] })),
      desired: config({ peers: [config().peers[0]!] }),
      want: { ...empty(), removePeers: [K(2)], removeRoutes: ['10.9.0.0/24 mtu 1216', '100.96.0.3/32 mtu 1216'] },
    },
    {
      name: 'a peer loses its MTU: plain routes replace the old ones in place',
      current: norm(config({ peers: [{ ...config().peers[0]!, mtu: 1296 }, config().peers[1]!] })),
      desired: config(),
      want: { ...empty(), addRoutes: ['100.96.0.2/32'] },
    },
  ];
  for (const s of steps) {
    it(s.name, () => {
      const { diff, next } = computeEngineDiff(s.current, norm(s.desired), s.options);
      assert.deepEqual(diff, s.want);
      // Whatever was written, the engine now holds `next`, and applying the same again writes nothing.
      assert.equal(isEmptyDiff(computeEngineDiff(next, norm(s.desired)).diff), true);
    });
  }
});

describe('withoutSkippedAdditions', () => {
  const base = { privateKey: '', listenPort: 0, peers: [] };
  const next = { ...base, addresses: ['100.96.0.1/24', 'fd7a:115c:a1e0::1/64'], routes: ['100.96.0.2/32', 'fd7a:115c:a1e0::2/128', 'fd7a:115c:a1e0::3/128'] };
  const diff = {
    removePeers: [], upsertPeers: [], addAddresses: ['fd7a:115c:a1e0::1/64', '100.96.0.1/24'], removeAddresses: [],
    addRoutes: ['fd7a:115c:a1e0::2/128'], removeRoutes: [],
  };
  const cases: Array<{ name: string; families: Array<4 | 6>; want: { addresses: string[]; routes: string[] } }> = [
    { name: 'nothing skipped: next as it is', families: [], want: { addresses: next.addresses, routes: next.routes } },
    {
      name: 'IPv6 skipped: its additions are not held (held before, ::3 stays)', families: [6],
      want: { addresses: ['100.96.0.1/24'], routes: ['100.96.0.2/32', 'fd7a:115c:a1e0::3/128'] },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const held = withoutSkippedAdditions(next, diff, c.families);
      assert.deepEqual({ addresses: held.addresses, routes: held.routes }, c.want);
    });
  }
  it('diffAddsFamily sees each family added', () => {
    assert.deepEqual([diffAddsFamily(diff, 4), diffAddsFamily(diff, 6)], [true, true]);
    assert.deepEqual([diffAddsFamily({ ...diff, addAddresses: [] }, 4), diffAddsFamily({ ...diff, addAddresses: [] }, 6)], [false, true]);
  });
});
