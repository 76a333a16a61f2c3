// The UAPI socket shell against a unix-socket server in a temp directory that
// replies byte-for-byte as scripted: framing across chunks, the reply bound,
// the timeout, early hang-ups and errno handling. (The real wireguard-go is
// exercised by test/lab/engine-wireguard-go.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  assertInterfaceName, uapiAnswers, uapiExchange, uapiGet, uapiSet, uapiSocketPath, waitForUapiSocket,
} from '../../../agent/engine/uapi-socket.js';

describe('uapi socket shell', () => {
  let dir: string;
  let server: Server;
  let path: string;
  let script: (sock: Socket, request: string) => void = () => {};
  const open = new Set<Socket>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'knit-uapi-'));
    path = join(dir, 'wgtest.sock');
    server = createServer((sock) => {
      open.add(sock);
      sock.on('close', () => open.delete(sock));
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString('latin1');
        if (buf.endsWith('\n\n')) script(sock, buf);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });

  after(async () => {
    for (const s of open) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a reply split across writes and leaves the connection to us to close', async () => {
    const seen: string[] = [];
    script = (sock, req) => {
      seen.push(req);
      sock.write('listen_port=51820\ner');
      setImmediate(() => sock.write('rno=0\n\n')); // and never closes, like wireguard-go
    };
    assert.deepEqual(await uapiGet(path), { listenPort: 51820, peers: [] });
    assert.deepEqual(seen, ['get=1\n\n']);
  });

  it('turns a non-zero errno from a set into KNIT_ERR_ENGINE', async () => {
    script = (sock) => sock.write('errno=-22\n\n');
    await assert.rejects(uapiSet(path, 'set=1\nlisten_port=1\n\n'), { code: 'KNIT_ERR_ENGINE' });
    script = (sock) => sock.write('errno=0\n\n');
    await uapiSet(path, 'set=1\nlisten_port=1\n\n');
  });

  it('bounds the reply size', async () => {
    script = (sock) => sock.write('x'.repeat(4096));
    await assert.rejects(uapiExchange(path, 'get=1\n\n', { maxReplyBytes: 1024 }), { code: 'KNIT_ERR_ENGINE' });
  });

  it('gives up on a silent peer', async () => {
    script = () => {};
    await assert.rejects(uapiExchange(path, 'get=1\n\n', { timeoutMs: 50 }), { code: 'KNIT_ERR_ENGINE' });
  });

  it('fails on a hang-up before the reply ends, and on a malformed reply', async () => {
    script = (sock) => sock.end('listen_port=1\n');
    await assert.rejects(uapiGet(path), { code: 'KNIT_ERR_ENGINE' });
    script = (sock) => sock.write('nonsense\n\n');
    await assert.rejects(uapiGet(path), { code: 'KNIT_ERR_ENGINE' });
    assert.equal(await uapiAnswers(path), false);
  });

  it('fails cleanly when nothing listens, and the wait stops when told the process died', async () => {
    const missing = join(dir, 'absent.sock');
    await assert.rejects(uapiExchange(missing, 'get=1\n\n'), { code: 'KNIT_ERR_ENGINE' });
    assert.equal(await uapiAnswers(missing), false);
    let polls = 0;
    await assert.rejects(
      waitForUapiSocket(missing, { timeoutMs: 5_000, gaveUp: () => (++polls >= 3 ? 'exited' : undefined) }),
      { code: 'KNIT_ERR_ENGINE', message: 'exited' },
    );
    assert.equal(polls, 3);
  });

  it('validates interface names before building a path', () => {
    assert.equal(uapiSocketPath('wg0'), '/var/run/wireguard/wg0.sock');
    assert.equal(uapiSocketPath('kn12', '/tmp/x'), '/tmp/x/kn12.sock');
    for (const bad of ['', '../etc', 'a/b', 'x'.repeat(16), 'wg 0', '..']) assert.throws(() => assertInterfaceName(bad), RangeError);
  });
});
