/**
 * `knit relay`: a relay as its own process, for scale (docs/relay.md). It
 * has its own X25519 key (a file, 0600, made on first start) and learns who
 * may use it from the coordinator: it reads the member list
 * (GET /v1/admin/nodes) with the admin token from KNIT_ADMIN_TOKEN every
 * MEMBERS_REFRESH_MS, and at once (at most every MEMBERS_MIN_REFRESH_MS) when
 * an unknown key knocks. The coordinator announces it to agents with
 * `knit coordinator --external-relay KEY@HOST:PORT[@WS-URL]` (printed at start).
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { systemClock } from '../shared/clock.js';
import { decodeKey, encodeKey, generateKeyPair, isKeyText, publicKeyOf } from '../shared/crypto/keys.js';
import { KnitError, isKnitError } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import { parseFlags } from '../shared/cli/args.js';
import { createRelayServer, RELAY_WS_PATH } from './index.js';

/** The member list is re-read this often… */
export const MEMBERS_REFRESH_MS = 30_000;
/** …and at once when an unknown key knocks, at most this often. */
export const MEMBERS_MIN_REFRESH_MS = 5000;

const USAGE = `usage: knit relay --coordinator URL [flags]      (admin token in KNIT_ADMIN_TOKEN)
  --listen HOST:PORT      UDP control port; allocation ports bind on HOST too (default 0.0.0.0:3480)
  --ws HOST:PORT|off      WebSocket fallback listener, TCP (default: the --listen address and port)
  --tls-cert FILE         serve the WebSocket over TLS (wss) with this certificate…
  --tls-key FILE          …and key
  --key FILE              the relay's private key, created on first start (default ./knit-relay.key)
  --public HOST           the address agents reach this relay at (default: the --listen host)`;

function hostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  if (!m || !host || !isIP(host) || Number(m[3]) > 65535) throw new KnitError('KNIT_ERR_USAGE', `--${flag} must be HOST:PORT with a numeric IP (got "${text}")`);
  return { host, port: Number(m[3]) };
}

function loadOrCreateKey(path: string): Uint8Array {
  if (existsSync(path)) {
    const k = decodeKey(readFileSync(path, 'utf8').trim());
    if (!k) throw new KnitError('KNIT_ERR_USAGE', `${path} does not hold a relay key`);
    return k;
  }
  const kp = generateKeyPair();
  writeFileSync(path, encodeKey(kp.privateKey) + '\n', { mode: 0o600 });
  chmodSync(path, 0o600);
  return kp.privateKey;
}

/** Reads the coordinator's member keys with the admin token (never logged). */
async function fetchMembers(base: string, token: string): Promise<Set<string>> {
  const res = await fetch(base.replace(/\/$/, '') + '/v1/admin/nodes', { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new KnitError(res.status === 401 ? 'KNIT_ERR_ADMIN_UNAUTHORIZED' : 'KNIT_ERR_UNREACHABLE', `the coordinator answered HTTP ${res.status} for the member list`);
  const body = (await res.json()) as { nodes?: unknown };
  if (!Array.isArray(body.nodes)) throw new KnitError('KNIT_ERR_PROTOCOL', 'the member list is malformed');
  const keys = new Set<string>();
  for (const n of body.nodes) {
    const k = (n as { nodeKey?: unknown } | null)?.nodeKey;
    if (isKeyText(k)) keys.add(k);
  }
  return keys;
}

export async function runRelayCli(argv: string[]): Promise<number> {
  try {
    const { values } = parseFlags(argv.slice(1), {
      coordinator: { type: 'string' }, listen: { type: 'string' }, ws: { type: 'string' }, 'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' },
      key: { type: 'string' }, public: { type: 'string' },
    });
    if (values.help) return console.log(USAGE), 0;
    const base = values.coordinator;
    if (!base || !/^https?:\/\/[^\s/?#]+\/?$/.test(base)) throw new KnitError('KNIT_ERR_USAGE', '--coordinator URL is required (like http://198.18.0.1:8080)');
    const token = process.env.KNIT_ADMIN_TOKEN;
    if (!token) throw new KnitError('KNIT_ERR_USAGE', 'the relay reads the member list with the admin token: set KNIT_ADMIN_TOKEN');
    const listen = hostPort(values.listen ?? '0.0.0.0:3480', 'listen');
    const ws = values.ws === 'off' ? undefined : values.ws ? hostPort(values.ws, 'ws') : listen;
    if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new KnitError('KNIT_ERR_USAGE', '--tls-cert and --tls-key go together');
    const tls = values['tls-cert'] ? { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']!) } : undefined;
    if (values.public !== undefined && !isIP(values.public)) throw new KnitError('KNIT_ERR_USAGE', '--public must be an IP address');
    const privateKey = loadOrCreateKey(values.key ?? './knit-relay.key');
    const logger = createLogger({ base: { component: 'relay' } });

    let members = await fetchMembers(base, token).catch((err: unknown) => {
      throw isKnitError(err) ? err : new KnitError('KNIT_ERR_UNREACHABLE', `cannot read the member list from ${base}`, { cause: err });
    });
    let lastFetch = Date.now();
    let fetching = false;
    const refresh = () => {
      if (fetching || Date.now() - lastFetch < MEMBERS_MIN_REFRESH_MS) return;
      fetching = true;
      lastFetch = Date.now();
      fetchMembers(base, token)
        .then((m) => { members = m; })
        .catch((err: unknown) => logger.warn('member list refresh failed', { err: (err as Error).message }))
        .finally(() => { fetching = false; });
    };
    const isMember = (k: string) => {
      if (members.has(k)) return true;
      refresh(); // a node that joined since the last read
      return false;
    };
    const relay = createRelayServer({
      host: listen.host, port: listen.port, ws: ws && { ...ws, tls }, privateKey, publicKey: publicKeyOf(privateKey), isMember,
      clock: systemClock, logger,
    });
    const poll = setInterval(refresh, MEMBERS_REFRESH_MS);
    let signalled!: (name: string) => void;
    const stopRequested = new Promise<string>((resolve) => { signalled = resolve; });
    process.once('SIGINT', signalled);
    process.once('SIGTERM', signalled);
    try {
      const bound = await relay.start();
      const host = values.public ?? (listen.host === '0.0.0.0' || listen.host === '::' ? '<this host\'s address>' : listen.host);
      const wsUrl = bound.wsPort !== undefined ? `@${tls ? 'wss' : 'ws'}://${host.includes(':') ? `[${host}]` : host}:${bound.wsPort}${RELAY_WS_PATH}` : '';
      console.log(`knit relay ${relay.core.publicKey} listening on udp ${listen.host}:${bound.port}${bound.wsPort !== undefined ? `, ws ${bound.wsPort}` : ''}; ${members.size} members`);
      console.log(`announce it with:  knit coordinator … --external-relay ${relay.core.publicKey}@${host}:${bound.port}${wsUrl}`);
      logger.info('relay stopping', { signal: await stopRequested });
    } finally {
      clearInterval(poll);
      process.off('SIGINT', signalled);
      process.off('SIGTERM', signalled);
      await relay.stop();
    }
    return 0;
  } catch (err) {
    if (!isKnitError(err)) {
      console.error(`knit relay: internal error: ${(err as Error).message}`);
      return 1;
    }
    console.error(`knit relay: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}
