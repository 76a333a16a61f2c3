/**
 * Proxy mode over real loopback sockets: a fake "engine" socket stands where
 * wireguard-go listens; packets flow both ways through the per-peer stand-in,
 * and packets from unknown sources are dropped and counted.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { test } from 'node:test';
import { WireguardProxy } from '../../../agent/net/proxy.js';
import { openUdpSocket } from '../../../agent/net/udp-socket.js';

function nextMessage(sock: ReturnType<typeof createSocket>): Promise<{ data: string; port: number }> {
  return new Promise((r) => sock.once('message', (m, rinfo) => r({ data: m.toString(), port: rinfo.port })));
}

test('WireGuard packets go through the stand-in both ways; unknown sources are dropped', async () => {
  const engine = createSocket('udp4');
  await new Promise<void>((r) => engine.bind(0, '127.0.0.1', () => r()));
  const peer = createSocket('udp4');
  await new Promise<void>((r) => peer.bind(0, '127.0.0.1', () => r()));
  const stranger = createSocket('udp4');
  await new Promise<void>((r) => stranger.bind(0, '127.0.0.1', () => r()));
  const pub = await openUdpSocket({ port: 0, host: '127.0.0.1' });
  const proxy = new WireguardProxy({ publicSocket: pub, enginePort: engine.address().port, openLoopback: () => openUdpSocket({ port: 0, host: '127.0.0.1', ipv6: false }) });
  pub.onMessage((bytes, from) => proxy.fromNetwork(bytes, from));
  try {
    await proxy.prepare(['peerA']);
    const wanted: string[] = [];
    proxy.onWant = (k) => wanted.push(k);
    // Before any path: WireGuard's packet is held and the peer is wanted (on-demand punching).
    const early = proxy.engineEndpoint('peerA', undefined)!;
    assert.match(early, /^127\.0\.0\.1:\d+$/, 'WireGuard always gets the stand-in, path or not');
    engine.send('early-init', Number(early.split(':')[1]), '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(wanted, ['peerA']);
    const flushed = nextMessage(peer);
    const standIn = proxy.engineEndpoint('peerA', `127.0.0.1:${peer.address().port}`)!;
    assert.equal(standIn, early, 'the stand-in never changes');
    assert.equal((await flushed).data, 'early-init', 'the held packet goes out as soon as a path exists');
    assert.match(standIn, /^127\.0\.0\.1:\d+$/);
    const standInPort = Number(standIn.split(':')[1]);

    // engine → stand-in → public port → peer
    const atPeer = nextMessage(peer);
    engine.send('handshake-init', standInPort, '127.0.0.1');
    const got = await atPeer;
    assert.equal(got.data, 'handshake-init');
    assert.equal(got.port, pub.localPort(), 'the peer sees the tunnel port');

    // peer → public port → stand-in → engine
    const atEngine = nextMessage(engine);
    peer.send('handshake-resp', pub.localPort(), '127.0.0.1');
    const back = await atEngine;
    assert.equal(back.data, 'handshake-resp');
    assert.equal(back.port, standInPort, 'WireGuard always sees the peer at its stand-in');

    // A stranger's packet goes nowhere.
    stranger.send('junk', pub.localPort(), '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(proxy.counters.dropUnknownSource, 1);

    // A peer removed from the map loses its stand-in.
    await proxy.prepare([]);
    assert.equal(proxy.engineEndpoint('peerA', '127.0.0.1:1'), undefined);
  } finally {
    proxy.close();
    pub.close();
    engine.close();
    peer.close();
    stranger.close();
  }
});
