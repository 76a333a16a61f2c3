/**
 * A tiny UDP tool for lab tests, run inside a namespace: it binds one port,
 * sends what the test tells it (JSON lines on stdin), reports every datagram it
 * receives (JSON lines on stdout), and in echo mode answers each sender with the
 * address and port it saw — a STUN-like mirror, so a test reads the NAT
 * mapping a packet got. The same file is the test-side driver
 * (startUdpProbe) and, when run by node directly, the probe itself.
 *
 *   stdin : {"id":1,"to":"198.18.1.10:7000","data":"hello"}
 *   stdout: {"ready":40000} | {"sent":1} | {"from":"198.18.1.11:40000","data":"hello"}
 *   echo  : replies {"observed":"198.18.1.11:40000","data":"hello"} to the sender
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Lab } from './netlab.js';

export interface ProbeMessage {
  from: string;
  data: string;
}

export interface UdpProbe {
  readonly port: number;
  send(to: string, data: string): Promise<void>;
  received(): ProbeMessage[];
  /** The first message (already received or still to come) that matches; rejects after timeoutMs. */
  next(match: (m: ProbeMessage) => boolean, timeoutMs?: number): Promise<ProbeMessage>;
  stop(): Promise<void>;
}

/** How long a lab test waits for one datagram that should come: generous, it only bounds failures. */
export const PROBE_WAIT_MS = 5_000;

export async function startUdpProbe(lab: Lab, ns: string, port: number, options: { echo?: boolean } = {}): Promise<UdpProbe> {
  const proc = lab.spawn(ns, [process.execPath, fileURLToPath(import.meta.url), String(port), options.echo ? 'echo' : 'quiet']);
  const got: ProbeMessage[] = [];
  const waiters: Array<() => void> = [];
  const sent = new Map<number, () => void>();
  let ready: (() => void) | undefined;
  proc.onLine((line) => {
    let msg: { ready?: number; sent?: number; from?: string; data?: string };
    try { msg = JSON.parse(line); } catch { return; }
    if (msg.ready !== undefined) ready?.();
    if (msg.sent !== undefined) sent.get(msg.sent)?.();
    if (msg.from !== undefined) {
      got.push({ from: msg.from, data: msg.data ?? '' });
      for (const w of waiters.splice(0)) w();
    }
  });
  const within = <T>(p: Promise<T>, ms: number, what: string) =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`udp probe in ${ns}: ${what} timed out; output: ${proc.output().slice(-500)}`)), ms);
      p.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
    });
  await within(new Promise<void>((r) => { ready = r; }), PROBE_WAIT_MS, 'start');
  let nextId = 1;
  return {
    port,
    send(to, data) {
      const id = nextId++;
      const done = new Promise<void>((r) => sent.set(id, r));
      proc.child.stdin!.write(JSON.stringify({ id, to, data }) + '\n');
      return within(done, PROBE_WAIT_MS, `send ${id}`);
    },
    received: () => [...got],
    next(match, timeoutMs = PROBE_WAIT_MS) {
      const find = () => got.find(match);
      const wait = new Promise<ProbeMessage>((resolve) => {
        const check = () => {
          const m = find();
          if (m) resolve(m);
          else waiters.push(check);
        };
        check();
      });
      return within(wait, timeoutMs, 'wait for a datagram');
    },
    stop: () => proc.stop(),
  };
}

function runProbe(port: number, echo: boolean): void {
  const sock = createSocket('udp4');
  const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
  sock.on('message', (msg, rinfo) => {
    const from = `${rinfo.address}:${rinfo.port}`;
    const data = msg.toString('utf8');
    say({ from, data });
    if (echo) sock.send(JSON.stringify({ observed: from, data }), rinfo.port, rinfo.address);
  });
  sock.bind(port, () => say({ ready: port }));
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const cmd = JSON.parse(line) as { id: number; to: string; data: string };
    const colon = cmd.to.lastIndexOf(':');
    sock.send(cmd.data, Number(cmd.to.slice(colon + 1)), cmd.to.slice(0, colon), () => say({ sent: cmd.id }));
  });
  rl.on('close', () => sock.close());
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  runProbe(Number(process.argv[2]), process.argv[3] === 'echo');
}
