/**
 * The relay shell on real loopback sockets: two nodes allocate and bind with the
 * agent's own relay client core, a WireGuard-shaped packet crosses, a stranger is
 * ignored, and a WebSocket node (challenge, sealed hello) talks to a UDP-bound one.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { test } from 'node:test';
import WebSocket from 'ws';
import { encodeKey, generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { parseEndpoint } from '../../shared/net/addr.js';
import { decodeWsData, encodeWsData, openRelay, relaySharedKey, sealRelay } from '../../shared/wire/relay.js';
import { RelayClient } from '../../agent/relay/core.js';
import { createRelayServer } from '../../relay/index.js';
import { until } from '../helpers/until.js';

const wg = (n: number) => { const p = Buffer.alloc(n); p[0] = 4; return p; };

async function bindNode(kp: KeyPair, peer: KeyPair, relayKey: string, port: number): Promise<{ sock: Socket; endpoint: string }> {
  const sock = createSocket({ type: 'udp4' });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const c = new RelayClient({ nodePublicKey: kp.publicKey, nodePrivateKey: kp.privateKey, random: defaultRandomBytes });
  let endpoint: string | undefined;
  const run = (acts: ReturnType<RelayClient['handle']>) => {
    for (const a of acts) {
      if (a.type === 'send-udp') sock.send(a.bytes, a.to.port, a.to.address);
      else if (a.type === 'relay-endpoint') endpoint = a.endpoint;
    }
  };
  const onMsg = (msg: Buffer, rinfo: { address: string; port: number }) => run(c.handle({ type: 'udp', from: { address: rinfo.address, port: rinfo.port }, bytes: new Uint8Array(msg) }, Date.now()));
  sock.on('message', onMsg);
  run(c.handle({ type: 'relays', relays: [{ key: relayKey, endpoint: { address: '127.0.0.1', port } }] }, Date.now()));
  run(c.handle({ type: 'need', nodeKey: encodeKey(peer.publicKey), needed: true }, Date.now()));
  await until('bound', () => { run(c.handle({ type: 'tick' }, Date.now())); return endpoint; }, { timeoutMs: 5000, intervalMs: 20 });
  sock.off('message', onMsg);
  return { sock, endpoint: endpoint! };
}

test('relay shell: UDP pair forwarding, strangers ignored, WebSocket node to UDP node', async () => {
  const relayKeys = generateKeyPair();
  const [a, b, c] = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
  const members = new Set([a, b, c].map((k) => encodeKey(k.publicKey)));
  const relay = createRelayServer({ host: '127.0.0.1', port: 0, ws: { host: '127.0.0.1', port: 0 }, privateKey: relayKeys.privateKey, publicKey: relayKeys.publicKey, isMember: (k) => members.has(k) });
  const socks: Socket[] = [];
  let ws: WebSocket | undefined;
  try {
    const { port, wsPort } = await relay.start();
    const relayKey = encodeKey(relayKeys.publicKey);
    const na = await bindNode(a, b, relayKey, port);
    const nb = await bindNode(b, a, relayKey, port);
    socks.push(na.sock, nb.sock);
    const got: Buffer[] = [];
    nb.sock.on('message', (m) => got.push(m));
    const ep = parseEndpoint(na.endpoint)!;
    na.sock.send(wg(100), ep.port, ep.address);
    await until('b gets a packet through the relay', () => got.length >= 1, { timeoutMs: 3000 });
    assert.equal(got[0]!.length, 100);
    // A stranger sending to a's port is dropped.
    const stranger = createSocket({ type: 'udp4' });
    socks.push(stranger);
    await new Promise<void>((r) => stranger.bind(0, '127.0.0.1', () => r()));
    stranger.send(wg(100), ep.port, ep.address);
    await until('counted', () => relay.stats().dropUnknownSource >= 1, { timeoutMs: 3000 });
    assert.equal(got.length, 1);
    // c over WebSocket to b (UDP): challenge, sealed hello, data frames both ways.
    const nbc = await bindNode(b, c, relayKey, port);
    socks.push(nbc.sock);
    const toB: Buffer[] = [];
    nbc.sock.on('message', (m) => toB.push(m));
    ws = new WebSocket(`ws://127.0.0.1:${wsPort}/v1/relay`);
    const frames: Buffer[] = [];
    ws.on('message', (d) => frames.push(d as Buffer));
    await until('challenge', () => frames.length >= 1, { timeoutMs: 3000 });
    const box = relaySharedKey(c.privateKey, relayKeys.publicKey)!;
    ws.send(sealRelay({ type: 'ws-hello', challenge: new Uint8Array(frames[0]!) }, c.publicKey, box, defaultRandomBytes(24)));
    await until('ws-ok', () => frames.length >= 2, { timeoutMs: 3000 });
    assert.equal(openRelay(new Uint8Array(frames[1]!), box)?.type, 'ws-ok');
    ws.send(encodeWsData(b.publicKey, wg(80)));
    await until('b gets c\'s packet', () => toB.length >= 1, { timeoutMs: 3000 });
    const back = parseEndpoint(nbc.endpoint)!;
    nbc.sock.send(wg(60), back.port, back.address);
    await until('c gets b\'s packet over the WebSocket', () => frames.length >= 3, { timeoutMs: 3000 });
    const d = decodeWsData(new Uint8Array(frames[2]!))!;
    assert.equal(encodeKey(d.peer), encodeKey(b.publicKey));
    assert.equal(d.packet.length, 60);
  } finally {
    ws?.terminate();
    for (const s of socks) s.close();
    await relay.stop();
  }
});
