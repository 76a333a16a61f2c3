// @ts-check
/**
 * The console's two channels to the coordinator it was served by (same
 * origin only — the CSP allows nothing else):
 *
 * - `api(token, method, path, body)`: the admin HTTP API with
 *   `Authorization: Bearer <admin token>`; errors become `ApiError` with the
 *   coordinator's `{error:{code,message}}`.
 * - `openFeed(...)`: the live feed, WebSocket /v1/admin/feed. The token goes in
 *   the first frame, never in the URL. Reconnects with full-jitter backoff
 *   (0.5 s doubling to 15 s, as agents do) and starts over from a fresh
 *   `state` each time; a refused token (4401) ends it for good.
 */

export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * @param {string} token the admin token
 * @param {'GET' | 'POST' | 'DELETE'} method
 * @param {string} path
 * @param {unknown} [body]
 */
export async function api(token, method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'omit' });
  } catch {
    throw new ApiError(0, 'KNIT_ERR_UNREACHABLE', 'The coordinator does not answer.');
  }
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = {};
  }
  if (!res.ok) throw new ApiError(res.status, json?.error?.code ?? 'KNIT_ERR_INTERNAL', json?.error?.message ?? `HTTP ${res.status}`);
  return json;
}

export const FEED_CLOSE_BAD_TOKEN = 4401;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;

/**
 * @param {{ token: string, onMessage: (msg: any) => void, onStatus: (s: 'connecting' | 'live' | 'offline') => void,
 *   onUnauthorized: () => void }} o
 * @returns {{ close(): void, resync(): void }}
 */
export function openFeed(o) {
  const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/v1/admin/feed`;
  /** @type {WebSocket | undefined} */
  let ws;
  let stopped = false;
  let attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;

  const connect = () => {
    timer = undefined;
    if (stopped) return;
    o.onStatus('connecting');
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => sock.send(JSON.stringify({ type: 'auth', token: o.token }));
    sock.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      if (msg.type === 'state') {
        attempt = 0;
        o.onStatus('live');
      }
      o.onMessage(msg);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = undefined;
      if (stopped) return;
      if (ev.code === FEED_CLOSE_BAD_TOKEN) {
        stopped = true;
        o.onStatus('offline');
        o.onUnauthorized();
        return;
      }
      o.onStatus('offline');
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt++);
      timer = setTimeout(connect, Math.max(100, Math.random() * cap));
    };
  };
  connect();

  return {
    close() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      ws?.close(1000, 'signed out');
      ws = undefined;
    },
    /** Drops the connection and comes back with a fresh state (after a delta we couldn't place). */
    resync() {
      if (stopped) return;
      const old = ws;
      ws = undefined;
      old?.close(1000, 'resync');
      if (timer === undefined) timer = setTimeout(connect, 0);
    },
  };
}
