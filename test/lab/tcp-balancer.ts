/**
 * A tiny TCP load balancer for lab tests, run inside a namespace: each new
 * connection goes to the first backend that accepts it, trying the next one
 * when a backend refuses (a replica killed outright leaves a closed port, and
 * the kernel answers with a reset), and the client's side is closed when the
 * backend's side closes, so a client behind it sees its backend die. No health
 * checks, no stickiness: just what agents need to fail over to a live replica
 * behind one URL. The same file is the test-side driver (startTcpBalancer) and,
 * when run by node directly, the balancer itself.
 *
 *   node tcp-balancer.js LISTEN_HOST:PORT BACKEND_HOST:PORT [BACKEND_HOST:PORT …]
 *   stdout: {"msg":"balancer ready"} | {"msg":"forward","backend":"…","ms":…} |
 *           {"msg":"refused","backend":"…"} | {"msg":"no backend"}
 */
import { connect, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { until } from '../helpers/until.js';
import type { Lab, LabProcess } from './netlab.js';

export interface TcpBalancer {
  readonly proc: LabProcess;
  /** http://LISTEN_HOST:PORT */
  readonly url: string;
  /** Its log lines, parsed. */
  events(): Array<{ msg: string; backend?: string; ms?: number; at: number }>;
}

/** Starts the balancer in `ns` and waits until it listens. */
export async function startTcpBalancer(lab: Lab, ns: string, listen: string, backends: string[]): Promise<TcpBalancer> {
  const proc = lab.spawn(ns, [process.execPath, fileURLToPath(import.meta.url), listen, ...backends]);
  const seen: Array<{ msg: string; backend?: string; ms?: number; at: number }> = [];
  proc.onLine((line) => {
    try {
      seen.push({ ...(JSON.parse(line) as { msg: string }), at: performance.now() });
    } catch { /* not ours */ }
  });
  await until('the balancer listens', () => seen.some((e) => e.msg === 'balancer ready'), {
    timeoutMs: 10_000,
    explain: () => proc.output().slice(-1000),
  });
  return { proc, url: `http://${listen}`, events: () => [...seen] };
}

function splitHostPort(text: string): { host: string; port: number } {
  const colon = text.lastIndexOf(':');
  return { host: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
}

function runBalancer(listen: string, backends: string[]): void {
  const say = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
  const srv = createServer((client) => {
    // Nothing reads the client until the backend is connected: its bytes wait in the socket.
    client.pause();
    client.on('error', () => client.destroy());
    const started = performance.now();
    const tryBackend = (i: number) => {
      if (i >= backends.length) {
        say({ msg: 'no backend' });
        client.destroy();
        return;
      }
      const at = splitHostPort(backends[i]!);
      const upstream: Socket = connect(at.port, at.host);
      upstream.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') {
          say({ msg: 'refused', backend: backends[i] });
          tryBackend(i + 1);
        } else {
          client.destroy();
        }
      });
      upstream.once('connect', () => {
        if (client.destroyed) {
          upstream.destroy();
          return;
        }
        say({ msg: 'forward', backend: backends[i], ms: Math.round(performance.now() - started) });
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        upstream.on('error', end);
        client.on('close', end);
        upstream.on('close', end);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryBackend(0);
  });
  const { host, port } = splitHostPort(listen);
  srv.listen(port, host, () => say({ msg: 'balancer ready' }));
  // Live connections would hold a graceful close open; a balancer that stops drops them, like a dead one.
  process.once('SIGTERM', () => process.exit(0));
  process.once('SIGINT', () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [listen, ...backends] = process.argv.slice(2);
  if (!listen || backends.length === 0) {
    console.error('usage: node tcp-balancer.js LISTEN_HOST:PORT BACKEND_HOST:PORT [BACKEND_HOST:PORT …]');
    process.exit(2);
  }
  runBalancer(listen, backends);
}
