/**
 * The agent's local API: HTTP over a unix socket in the state dir, mode 0600,
 * so only the agent's own user (root) can ask it anything and nothing listens
 * on TCP. `knit status`, `knit down` and `knit ping` talk to it.
 *
 *   GET  /v1/status          self + peers (JSON, the same document `knit status --json` prints)
 *   POST /v1/ping?peer=NAME  one disco ping round to the peer; the reply says which path answered
 *   POST /v1/down            leave cleanly: the agent stops and removes its interface
 */
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';

export type ApiHandler = (query: URLSearchParams) => Promise<unknown> | unknown;

export interface ApiRoutes {
  [route: string]: ApiHandler; // "GET /v1/status"
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Is another live agent answering on this socket? A stale file from a crash is not. */
async function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export async function startApiServer(path: string, routes: ApiRoutes): Promise<{ close(): Promise<void> }> {
  if (existsSync(path)) {
    if (await socketAnswers(path)) throw new Error(`another agent is already running (its socket ${path} answers)`);
    unlinkSync(path);
  }
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://knit');
    const handler = routes[`${req.method} ${url.pathname}`];
    if (!handler) return send(res, 404, { error: { code: 'KNIT_ERR_NOT_FOUND', message: `no such endpoint ${url.pathname}` } });
    req.resume();
    Promise.resolve()
      .then(() => handler(url.searchParams))
      .then((body) => send(res, 200, body))
      .catch((err: { code?: string; status?: number; message?: string }) =>
        send(res, err.status ?? 500, { error: { code: err.code ?? 'KNIT_ERR_INTERNAL', message: err.message ?? 'internal error' } }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return {
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      try { unlinkSync(path); } catch { /* already gone */ }
    }),
  };
}
