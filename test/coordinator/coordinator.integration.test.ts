/**
 * The coordinator over real sockets on loopback: HTTP join, the control
 * WebSocket with the agent's own client, the STUN port, and kill -9 of a real
 * coordinator process during a join burst.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { systemClock } from '../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { silentLogger } from '../../shared/log.js';
import { encodeBindingRequest, parseStun, STUN_KNIT_REQUEST_LEN } from '../../shared/wire/stun.js';
import { createCoordinator } from '../../coordinator/index.js';
import { ControlClient } from '../../agent/control/client.js';
import { wsTransport } from '../../agent/control/ws-transport.js';
import type { Netmap } from '../../agent/control/netmap.js';
import { until } from '../helpers/until.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'knit-int-'));
  dirs.push(d);
  return d;
}

async function startCoordinator() {
  const c = createCoordinator({ dataDir: tmp(), listen: { host: '127.0.0.1', port: 0 }, stun: [{ host: '127.0.0.1', port: 0 }] }, { logger: silentLogger });
  const admin = c.ensureAdmin()!;
  const ports = await c.start();
  const base = `http://127.0.0.1:${ports.httpPort}`;
  const newToken = async (body: object = {}) => {
    const r = await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return ((await r.json()) as { token: string }).token;
  };
  return { c, base, ports, admin, newToken };
}

async function joinNode(base: string, token: string, name: string) {
  const kp = generateKeyPair();
  const r = await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, nodeKey: encodeKey(kp.publicKey), hostname: name }) });
  return { kp, status: r.status, body: (await r.json()) as { node: { id: number } } };
}

function connect(base: string, coordinatorKey: string, kp: { privateKey: Uint8Array; publicKey: Uint8Array }) {
  const maps: Netmap[] = [];
  const client = new ControlClient(
    { url: base, coordinatorKey, nodePrivateKey: kp.privateKey, nodeKey: encodeKey(kp.publicKey), discoKey: encodeKey(generateKeyPair().publicKey) },
    { transport: wsTransport, clock: systemClock, random: defaultRandomBytes, logger: silentLogger, events: { onNetmap: (m) => maps.push(m), onCallMeMaybe() {}, onWelcome() {}, onStatus() {} } },
  );
  client.start();
  return { client, maps };
}

test('two nodes join with one token each and see each other within a second', async () => {
  const { c, base, newToken } = await startCoordinator();
  const token = await newToken({ reusable: true });
  const a = await joinNode(base, token, 'alpha');
  assert.equal(a.status, 200);
  const ca = connect(base, c.registry.coordinatorKey, a.kp);
  await until('snapshot', () => ca.maps.length > 0);
  const t0 = Date.now();
  const b = await joinNode(base, token, 'beta');
  const cb = connect(base, c.registry.coordinatorKey, b.kp);
  await until('alpha sees beta', () => ca.client.netmap.peers.get(b.body.node.id));
  await until('beta sees alpha', () => cb.client.netmap.peers.get(a.body.node.id));
  const elapsed = Date.now() - t0;
  assert.ok(elapsed < 1000, `took ${elapsed} ms`);
  await until('beta online at alpha', () => ca.client.netmap.peers.get(b.body.node.id)?.online);
  ca.client.stop();
  cb.client.stop();
  await c.stop();
});

test('a pinned key that does not match the coordinator is refused by the agent (4403, no retry storm)', async () => {
  const { c, base, newToken } = await startCoordinator();
  const a = await joinNode(base, await newToken(), 'alpha');
  const statuses: string[] = [];
  const client = new ControlClient(
    { url: base, coordinatorKey: encodeKey(generateKeyPair().publicKey), nodePrivateKey: a.kp.privateKey, nodeKey: encodeKey(a.kp.publicKey), discoKey: encodeKey(generateKeyPair().publicKey) },
    { transport: wsTransport, clock: systemClock, random: defaultRandomBytes, logger: silentLogger, events: { onNetmap() {}, onCallMeMaybe() {}, onWelcome() {}, onStatus: (s, d) => statuses.push(`${s}:${d ?? ''}`) } },
  );
  client.start();
  await until('refusal', () => statuses.find((s) => s.includes('pinned')));
  assert.equal(client.netmap.peers.size, 0);
  client.stop();
  await c.stop();
});

test('100 concurrent joins racing one single-use token yield exactly one node', async () => {
  const { c, base, newToken } = await startCoordinator();
  const token = await newToken();
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => joinNode(base, token, `racer-${i}`)));
  const ok = results.filter((r) => r.status === 200);
  assert.equal(ok.length, 1);
  assert.equal(c.registry.nodeCount, 1);
  // The rest were refused as used or rate-limited, never a 5xx.
  assert.ok(results.every((r) => r.status === 200 || r.status === 401 || r.status === 429));
  await c.stop();
});

test('STUN on the real UDP port answers with the source address, never larger than a Knit request', async () => {
  const { c, ports, base } = await startCoordinator();
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const txid = defaultRandomBytes(12);
  const req = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN });
  const reply = new Promise<Buffer>((r) => sock.once('message', (m) => r(m)));
  sock.send(req, ports.stunPorts[0]!, '127.0.0.1');
  const res = await reply;
  const m = parseStun(new Uint8Array(res));
  assert.deepEqual(m?.mapped, { address: '127.0.0.1', port: sock.address().port });
  assert.ok(res.length <= req.length);
  sock.send(Buffer.from('garbage that is not stun'), ports.stunPorts[0]!, '127.0.0.1');
  await until('the malformed packet is dropped and counted', async () => (await (await fetch(`${base}/metrics`)).text()).includes('knit_stun_dropped_total 1'));
  sock.close();
  await c.stop();
});

test('kill -9 during a join burst loses no acknowledged join; the coordinator restarts cleanly', async () => {
  const dataDir = tmp();
  const bin = join(process.cwd(), 'bin', 'knit.js');
  const port = 20000 + (process.pid % 20000);
  const start = () => {
    const child = spawn(process.execPath, [bin, 'coordinator', '--listen', `127.0.0.1:${port}`, '--stun', 'off', '--data', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    return { child, exited, out: () => out, err: () => err };
  };
  const first = start();
  const admin = await until('admin token', () => /Admin token[^\n]*\n\n\s+(knit_\S+)/.exec(first.out())?.[1], { timeoutMs: 10_000 });
  await until('ready', () => first.err().includes('coordinator ready'), { timeoutMs: 10_000 });
  const base = `http://127.0.0.1:${port}`;
  const tr = await fetch(`${base}/v1/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ reusable: true }) });
  const token = ((await tr.json()) as { token: string }).token;

  const acked: string[] = [];
  let stop = false;
  const worker = async (w: number) => {
    for (let i = 0; !stop && i < 200; i++) {
      const kp = generateKeyPair();
      const nodeKey = encodeKey(kp.publicKey);
      try {
        const r = await fetch(`${base}/v1/join`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': `w${w}` }, body: JSON.stringify({ token, nodeKey, hostname: `burst-${w}-${i}` }) });
        if (r.status === 200) acked.push(nodeKey);
        else if (r.status === 429) break; // the per-source limit: this worker is done
      } catch {
        return; // connection reset by the kill
      }
    }
  };
  const workers = Promise.all(Array.from({ length: 4 }, (_, w) => worker(w)));
  await until('some joins acknowledged', () => acked.length >= 20, { timeoutMs: 10_000 });
  first.child.kill('SIGKILL');
  stop = true;
  await workers;
  await first.exited;

  const second = start();
  await until('restarted', () => second.err().includes('coordinator ready'), { timeoutMs: 10_000 });
  assert.ok(!second.out().includes('Admin token'), 'the admin token is not printed again');
  const nodes = (await (await fetch(`${base}/v1/admin/nodes`, { headers: { authorization: `Bearer ${admin}` } })).json()) as { nodes: { nodeKey: string }[] };
  const present = new Set(nodes.nodes.map((n) => n.nodeKey));
  const lost = acked.filter((k) => !present.has(k));
  assert.deepEqual(lost, [], `${lost.length} of ${acked.length} acknowledged joins lost`);
  second.child.kill('SIGTERM');
  await second.exited;
  assert.equal(second.child.exitCode, 0, 'SIGTERM is a clean stop');
});
