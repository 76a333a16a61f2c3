/**
 * Request/response over a forked child's IPC channel, for the benchmark's
 * processes (the coordinator under test and the load generators). One command
 * at a time per call id; every call has a deadline, and a child that exits
 * fails its pending calls with the tail of its stderr instead of hanging.
 */
import type { ChildProcess } from 'node:child_process';

interface Request { id: number; cmd: string; args?: unknown }
type Response = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

export type IpcHandlers = Record<string, (args: any) => unknown>;

/** The child side: answers each request with its handler's (awaited) value or error; then say ready with `readyIpc`. */
export function serveIpc(handlers: IpcHandlers): void {
  if (!process.send) throw new Error('serveIpc needs an IPC channel (run under child_process.fork)');
  process.on('message', (m: Request) => {
    const handler = handlers[m.cmd];
    void (async () => {
      try {
        if (!handler) throw new Error(`unknown command ${m.cmd}`);
        process.send!({ id: m.id, ok: true, value: (await handler(m.args)) ?? null } satisfies Response);
      } catch (err) {
        process.send!({ id: m.id, ok: false, error: (err as Error).stack ?? String(err) } satisfies Response);
      }
    })();
  });
}

/** Tells the parent the child is ready (the message IpcClient.ready waits for), with a value. */
export function readyIpc(value: unknown): void {
  process.send!({ id: 0, ok: true, value } satisfies Response);
}

/** The parent side of one child. */
export class IpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private stderrTail = '';
  private exited: string | undefined;

  /** Resolves with the child's first message (id 0), which it sends once it is ready to serve. */
  readonly ready: Promise<unknown>;

  constructor(readonly name: string, readonly child: ChildProcess, readyTimeoutMs = 60_000) {
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(0);
        reject(new Error(`${name} was not ready within ${readyTimeoutMs} ms: ${this.stderrTail.trim()}`));
      }, readyTimeoutMs);
      this.pending.set(0, { resolve, reject, timer });
    });
    child.stderr?.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + d.toString()).slice(-2000); });
    child.on('message', (m: Response) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(`${name}: ${m.error}`));
    });
    child.on('exit', (code, signal) => {
      this.exited = `${name} exited (${signal ?? code})${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(this.exited));
      }
      this.pending.clear();
    });
  }

  call<T>(cmd: string, args?: unknown, timeoutMs = 60_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: ${cmd} took longer than ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.send({ id, cmd, args } satisfies Request);
    });
  }

  /** Asks nicely (`stop`), then kills after a grace period; resolves once the child is gone. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.call('stop', undefined, graceMs).catch(() => {});
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }
}
