import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { test } from 'node:test';
import { createStunObserver } from '../../../coordinator/observer/index.js';
import { encodeBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN } from '../../../shared/wire/stun.js';
import { ManualClock, seededBytes } from '../../helpers/manual-clock.js';
import { until } from '../../helpers/until.js';

const random = seededBytes(11);

async function client(type: 'udp4' | 'udp6', host: string): Promise<{ sock: Socket; port: number; received: Uint8Array[] }> {
  const sock = createSocket(type);
  const received: Uint8Array[] = [];
  sock.on('message', (m) => received.push(new Uint8Array(m)));
  await new Promise<void>((resolve) => sock.bind(0, host, resolve));
  return { sock, port: sock.address().port, received };
}

test('real UDP on 127.0.0.1: answers with the client\'s address, drops garbage, rate-limits small requests', async (t) => {
  const clock = new ManualClock(); // time stands still: the rate limit is exact
  const observer = createStunObserver({ host: '127.0.0.1', port: 0, clock, rateLimitPerSec: 5 });
  t.after(() => observer.stop());
  const { port } = await observer.start();
  assert.deepEqual(await observer.start(), { port }, 'start is idempotent');
  const c = await client('udp4', '127.0.0.1');
  t.after(() => c.sock.close());

  const txid = random(12);
  c.sock.send(encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN }), port, '127.0.0.1');
  await until('the Knit request is answered', () => c.received.length === 1);
  const res = parseBindingResponse(c.received[0]!);
  assert.deepEqual(res?.txid, txid);
  assert.deepEqual(res?.mapped, { address: '127.0.0.1', port: c.port });

  c.sock.send(Buffer.from('garbage that is not stun'), port, '127.0.0.1');
  for (let i = 0; i < 20; i++) c.sock.send(encodeBindingRequest(random(12)), port, '127.0.0.1'); // 28-byte standard requests
  await until('every datagram is accounted for', () => observer.stats().requests === 22);
  assert.deepEqual(observer.stats(), { requests: 22, responses: 6, dropped: 1, rateLimited: 15 });
  await until('the 5 allowed small answers arrive', () => c.received.length === 6);
  for (const b of c.received) assert.deepEqual(parseBindingResponse(b)?.mapped, { address: '127.0.0.1', port: c.port });

  await observer.stop();
  await observer.stop(); // idempotent
});

test('udp6 on ::1 when the host is an IPv6 address', async (t) => {
  const probe = createSocket('udp6');
  const hasV6 = await new Promise<boolean>((resolve) => {
    probe.once('error', () => resolve(false));
    probe.bind(0, '::1', () => resolve(true));
  });
  probe.close();
  if (!hasV6) return t.skip('skipped: no IPv6 loopback on this machine');
  const observer = createStunObserver({ host: '::1', port: 0 });
  t.after(() => observer.stop());
  const { port } = await observer.start();
  const c = await client('udp6', '::1');
  t.after(() => c.sock.close());
  c.sock.send(encodeBindingRequest(random(12), { padTo: STUN_KNIT_REQUEST_LEN }), port, '::1');
  await until('the IPv6 request is answered', () => c.received.length === 1);
  assert.deepEqual(parseBindingResponse(c.received[0]!)?.mapped, { address: '::1', port: c.port });
});

test('a port already in use fails start() clearly, and start can be retried', async (t) => {
  const a = createStunObserver({ host: '127.0.0.1', port: 0 });
  t.after(() => a.stop());
  const { port } = await a.start();
  const b = createStunObserver({ host: '127.0.0.1', port });
  await assert.rejects(b.start(), /EADDRINUSE/);
  await a.stop();
  assert.deepEqual(await b.start(), { port }, 'retried after the port was freed');
  await b.stop();
});
