/**
 * The hard side's extra-socket shell (agent/net/birthday-sockets.ts) on fake
 * sockets: lazy opening, disco handed to the core, WireGuard forwarded between
 * the socket and the engine through a loopback stand-in only for the peer's
 * endpoint, everything else dropped and counted, release and close.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UdpEndpoint, UdpMessageHandler, UdpSocket } from '../../../shared/udp.js';
import { DISCO_MAGIC } from '../../../shared/wire/disco.js';
import { BirthdaySockets } from '../../../agent/net/birthday-sockets.js';

class FakeSocket implements UdpSocket {
  sent: { data: Uint8Array; to: UdpEndpoint }[] = [];
  closed = false;
  private handlers: UdpMessageHandler[] = [];
  constructor(readonly port: number) {}
  send(data: Uint8Array, to: UdpEndpoint): void { if (!this.closed) this.sent.push({ data, to }); }
  onMessage(h: UdpMessageHandler): void { this.handlers.push(h); }
  localPort(): number { return this.port; }
  close(): void { this.closed = true; }
  deliver(data: Uint8Array, from: UdpEndpoint): void { for (const h of this.handlers) h(data, from); }
}

const PEER = { address: '203.0.113.5', port: 41641 };
const TUNNEL_PORT = 41641;
const wg = (type = 4) => Uint8Array.from([type, 0, 0, 0, ...new Array(60).fill(7)]);
const disco = () => { const b = new Uint8Array(120); b.set(DISCO_MAGIC); return b; };

function setup() {
  const opened: FakeSocket[] = [];
  const loopbacks: FakeSocket[] = [];
  const discoSeen: { id: number; from: UdpEndpoint }[] = [];
  let next = 50_000;
  const b = new BirthdaySockets({
    open: () => { const s = new FakeSocket(next++); opened.push(s); return s; },
    openLoopback: async () => { const s = new FakeSocket(next++); loopbacks.push(s); return s; },
    forwardPort: () => TUNNEL_PORT,
    onDisco: (id, _bytes, from) => discoSeen.push({ id, from }),
  });
  return { b, opened, loopbacks, discoSeen };
}

test('sockets open on first send, one per id; disco on them goes to the core with the id', () => {
  const { b, opened, discoSeen } = setup();
  b.send(3, disco(), PEER);
  b.send(3, disco(), PEER);
  b.send(4, disco(), PEER);
  assert.equal(opened.length, 2);
  assert.equal(opened[0]!.sent.length, 2);
  opened[1]!.deliver(disco(), PEER);
  assert.deepEqual(discoSeen, [{ id: 4, from: PEER }]);
  assert.equal(b.counters.opened, 2);
});

test('a path on socket N: WireGuard flows peer ⇄ socket ⇄ stand-in ⇄ engine, and nothing else does', async () => {
  const { b, opened, loopbacks } = setup();
  b.send(9, disco(), PEER);
  await b.prepare([{ nodeKey: 'k', via: 9, peer: PEER }]);
  await b.prepare([{ nodeKey: 'k', via: 9, peer: PEER }]); // idempotent
  assert.equal(loopbacks.length, 1);
  const standIn = loopbacks[0]!;
  assert.equal(b.standIn('k'), `127.0.0.1:${standIn.port}`);
  assert.ok(b.isStandIn(`127.0.0.1:${standIn.port}`));
  const sock = opened[0]!;
  // In from the peer: to the engine on loopback.
  sock.deliver(wg(), PEER);
  assert.deepEqual(standIn.sent.map((x) => x.to), [{ address: '127.0.0.1', port: TUNNEL_PORT }]);
  // Out from the engine: to the peer through socket N.
  standIn.deliver(wg(), { address: '127.0.0.1', port: TUNNEL_PORT });
  assert.deepEqual(sock.sent.at(-1)!.to, PEER);
  // Dropped and counted: WireGuard from another source, non-WireGuard from the peer, the stand-in used by anyone but the engine.
  sock.deliver(wg(), { address: '203.0.113.6', port: 41641 });
  sock.deliver(Uint8Array.from([9, 9, 9, 9, 9]), PEER);
  standIn.deliver(wg(), { address: '127.0.0.1', port: 1234 });
  standIn.deliver(wg(), { address: '198.51.100.1', port: TUNNEL_PORT });
  assert.equal(b.counters.toEngine, 1);
  assert.equal(b.counters.toNetwork, 1);
  assert.equal(b.counters.dropUnknownSource, 3);
  assert.equal(b.counters.dropNotWireguard, 1);
});

test('release closes the socket and its route; prepare without it drops the stand-in; close closes everything', async () => {
  const { b, opened, loopbacks } = setup();
  b.send(1, disco(), PEER);
  b.send(2, disco(), PEER);
  await b.prepare([{ nodeKey: 'k', via: 1, peer: PEER }]);
  await b.prepare([{ nodeKey: 'j', via: 5, peer: PEER }]); // socket 5 was never opened: no route
  assert.equal(b.standIn('k'), undefined, 'k no longer listed');
  assert.equal(b.standIn('j'), undefined);
  assert.ok(loopbacks[0]!.closed);
  await b.prepare([{ nodeKey: 'k', via: 1, peer: PEER }]);
  b.release([1]);
  assert.ok(opened[0]!.closed && loopbacks[1]!.closed);
  assert.equal(b.standIn('k'), undefined);
  b.close();
  assert.ok(opened.every((s) => s.closed));
  assert.equal(b.size, 0);
});
