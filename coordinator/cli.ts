/**
 * The coordinator's commands:
 *
 *   knit coordinator [--listen HOST:PORT] [--stun HOST:PORT|off] [--stun2 HOST:PORT|off] [--data DIR] [--url URL] …
 *   knit token create [--reusable] [--uses N] [--ephemeral] [--expires 24h] [--tags a,b]
 *   knit token list | knit token revoke ID
 *   knit nodes [list] [--json] | knit nodes remove ID
 *
 * Admin commands work on a local data dir (`--data DIR`, the default
 * ./knit-data: SQLite in WAL mode is safe to share with a running coordinator)
 * or a remote coordinator (`--coordinator URL` with KNIT_ADMIN_TOKEN).
 * Exit codes: 0 ok, 1 operational failure, 2 usage error.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { systemClock } from '../shared/clock.js';
import { ERROR_TABLE, KnitError, isKnitError, type KnitErrorCode } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import { parseDuration } from '../shared/duration.js';
import { isValidTag, MAX_TAGS, type RelayInfo } from '../shared/wire/control.js';
import { isKeyText } from '../shared/crypto/keys.js';
import { parseFlags, intFlag } from '../shared/cli/args.js';
import { createCoordinator, DEFAULT_EPHEMERAL_TIMEOUT_MS, type CoordinatorOptions, type HostPort } from './index.js';
import { Registry } from './registry/registry.js';
import { canonicalIpv4Prefix, DEFAULT_IPV4_PREFIX } from './registry/join-rows.js';
import { databasePath, openStore, storeSpecProblem } from './store/open.js';
import { runningCoordinatorPid } from './store/pidfile.js';
import type { PathEdge } from './control/path-reports.js';

/** Help text per command, for `knit help <command>` (cli/main.ts) and `--help`. */
export const COORDINATOR_COMMANDS: Record<'coordinator' | 'token' | 'nodes', string> = {
  coordinator: `usage: knit coordinator [flags]
  --listen HOST:PORT          HTTP + control WebSocket (default 0.0.0.0:8080)
  --stun HOST:PORT|off        STUN observer on UDP (default 0.0.0.0:3478; off turns both ports off)
  --stun2 HOST:PORT|off       the second STUN port, which lets agents tell endpoint-dependent NAT mapping
                              (default: the --stun host, its port + 1; one that can't be bound is skipped with a warning)
  --relay HOST:PORT|off       relay for pairs that can't go direct, UDP (default: the listen host, port 3480)
  --relay-ws HOST:PORT|off    the relay's WebSocket fallback, TCP (default: the --relay address and port)
  --relay-tls-cert FILE       serve the relay's WebSocket over TLS (wss), with --relay-tls-key FILE
  --external-relay LIST       relays run with \`knit relay\`, announced to agents: KEY@HOST:PORT[@WS-URL],…
  --data DIR                  where the SQLite store lives (default ./knit-data)
  --store URL                 a postgres:// database shared by several replicas instead of SQLite
                              (or KNIT_STORE; the in-process relay is then off unless --relay is given)
  --url URL                   public URL written into join tokens (default: the listen address;
                              when listening on 0.0.0.0, this machine's first non-loopback IPv4)
  --ipv4-prefix CIDR          mesh IPv4 prefix, fixed at first start (default ${DEFAULT_IPV4_PREFIX})
  --ephemeral-timeout DUR     remove ephemeral nodes offline this long (default 10m)
  --allow-loopback-endpoints  accept loopback endpoints (single-machine tests only)`,
  token: `usage: knit token create [--reusable] [--uses N] [--ephemeral] [--expires 24h] [--tags a,b]
       knit token list [--json]
       knit token revoke ID
  --data DIR | --store URL | --coordinator URL (with KNIT_ADMIN_TOKEN)
  create prints only the token, so TOKEN=$(knit token create) works`,
  nodes: `usage: knit nodes [list] [--json]
       knit nodes remove ID
  --data DIR | --store URL | --coordinator URL (with KNIT_ADMIN_TOKEN)`,
};

export function parseHostPort(text: string, flag: string): HostPort {
  // IPv6 only in brackets ("[::1]:8080"): without them the port can't be told from the address.
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  if (!m || !host || isIP(host) !== (m[1] ? 6 : 4) || Number(m[3]) > 65535) throw new KnitError('KNIT_ERR_USAGE', `--${flag} must be HOST:PORT with a numeric IP (got "${text}")`);
  return { host, port: Number(m[3]) };
}

async function runCoordinator(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    listen: { type: 'string' }, stun: { type: 'string' }, stun2: { type: 'string' }, data: { type: 'string' }, store: { type: 'string' }, url: { type: 'string' },
    'ipv4-prefix': { type: 'string' }, 'ephemeral-timeout': { type: 'string' }, 'allow-loopback-endpoints': { type: 'boolean' },
    relay: { type: 'string' }, 'relay-ws': { type: 'string' }, 'relay-tls-cert': { type: 'string' }, 'relay-tls-key': { type: 'string' }, 'external-relay': { type: 'string' },
  });
  if (values.help) return console.log(COORDINATOR_COMMANDS.coordinator), 0;
  const listen = parseHostPort(values.listen ?? '0.0.0.0:8080', 'listen');
  const stun = stunOptions(values);
  if (values['ipv4-prefix'] !== undefined && !canonicalIpv4Prefix(values['ipv4-prefix'])) {
    throw new KnitError('KNIT_ERR_USAGE', '--ipv4-prefix must be an IPv4 prefix between /8 and /30, like 100.96.0.0/16');
  }
  if (values.url !== undefined && !/^https?:\/\/[^\s/?#]+$/.test(values.url)) throw new KnitError('KNIT_ERR_USAGE', '--url must look like http://host:port');
  const ephemeral = values['ephemeral-timeout'] === undefined ? DEFAULT_EPHEMERAL_TIMEOUT_MS : parseDuration(values['ephemeral-timeout']);
  if (ephemeral === undefined) throw new KnitError('KNIT_ERR_USAGE', '--ephemeral-timeout must be a duration like 90s, 10m, 24h');
  const store = storeFlag(values.store);
  // Replicas behind one address can't each run their own relay: a pair relayed through two
  // different relays never meets. With a shared store the relay runs apart (`knit relay`).
  const relay = store !== undefined && values.relay === undefined ? undefined : relayOptions(values, listen);
  const externalRelays = values['external-relay'] === undefined ? undefined : values['external-relay'].split(',').map(parseExternalRelay);
  const logger = createLogger({ base: { component: 'coordinator' } });
  const c = await createCoordinator({
    relay, externalRelays, store,
    dataDir: values.data ?? './knit-data', listen, stun, url: values.url, ipv4Prefix: values['ipv4-prefix'],
    allowLoopbackEndpoints: values['allow-loopback-endpoints'], ephemeralTimeoutMs: ephemeral,
  }, { logger });
  // Signals are taken from here on, so one that arrives while starting still stops cleanly.
  let signalled!: (name: string) => void;
  const stopRequested = new Promise<string>((resolve) => { signalled = resolve; });
  const onSignal = (name: NodeJS.Signals) => signalled(name);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const ports = await c.start(); // a failed start has closed everything and throws a KnitError
    const admin = await c.ensureAdmin(); // after listening: the token carries the coordinator's URL
    if (admin) {
      // Printed once, on stdout, never logged: only its hash is stored.
      const where = store === undefined ? `--data ${values.data ?? './knit-data'}` : '--store "$KNIT_STORE"';
      console.log(`\nAdmin token (shown only this once; keep it secret):\n\n  ${admin}\n\nCreate a join token with:  npx knit token create ${where}\n`);
    }
    logger.info('coordinator ready', {
      http: `${listen.host}:${ports.httpPort}`, stun: ports.stunPorts, url: c.registry.publicUrl, nodes: c.registry.nodeCount,
      store: c.store.where, replica: c.registry.replica,
    });
    logger.info('coordinator stopping', { signal: await stopRequested });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await c.stop();
  }
  return 0;
}

/** The first STUN port when --stun isn't given. */
export const DEFAULT_STUN = '0.0.0.0:3478';

/**
 * The STUN observer ports from --stun and --stun2 (docs/coordinator.md). Both are on by
 * default: an agent needs two answers to classify its NAT, and without that classification
 * hard-NAT traversal never starts (a default that disables a feature). The default second
 * port is the first one's host at port + 1 (ephemeral when the first is, as in tests) and is
 * optional: a busy port warns instead of stopping the coordinator. A second port asked for
 * by name is required, like the first.
 */
export function stunOptions(values: { stun?: string; stun2?: string }): NonNullable<CoordinatorOptions['stun']> {
  if (values.stun === 'off') {
    if (values.stun2 !== undefined && values.stun2 !== 'off') throw new KnitError('KNIT_ERR_USAGE', '--stun2 is a second STUN port: it needs --stun');
    return [];
  }
  const first = parseHostPort(values.stun ?? DEFAULT_STUN, 'stun');
  if (values.stun2 === 'off') return [first];
  if (values.stun2 !== undefined) return [first, parseHostPort(values.stun2, 'stun2')];
  // Port 65535 has no port + 1: any free one does, since the welcome tells agents the ports.
  const port = first.port === 0 || first.port === 65535 ? 0 : first.port + 1;
  return [first, { host: first.host, port, optional: true }];
}

/** The in-process relay (docs/relay.md): on by default at the listen host, UDP and TCP port 3480. */
function relayOptions(values: { relay?: string; 'relay-ws'?: string; 'relay-tls-cert'?: string; 'relay-tls-key'?: string }, listen: HostPort): CoordinatorOptions['relay'] {
  if (values.relay === 'off') return undefined;
  // Default: port 3480 beside the coordinator (ephemeral when the HTTP port is, as in tests), and a
  // relay that can't bind there is skipped with a warning rather than stopping the coordinator.
  const udp = values.relay === undefined ? { host: listen.host, port: listen.port === 0 ? 0 : 3480 } : parseHostPort(values.relay, 'relay');
  const ws = values['relay-ws'] === 'off' ? undefined : values['relay-ws'] === undefined ? udp : parseHostPort(values['relay-ws'], 'relay-ws');
  if ((values['relay-tls-cert'] === undefined) !== (values['relay-tls-key'] === undefined)) throw new KnitError('KNIT_ERR_USAGE', '--relay-tls-cert and --relay-tls-key go together');
  const tls = values['relay-tls-cert'] ? { cert: readFileSync(values['relay-tls-cert']), key: readFileSync(values['relay-tls-key']!) } : undefined;
  return { udp, ws, tls, optional: values.relay === undefined };
}

/** KEY@HOST:PORT[@WS-URL], as `knit relay` prints it. */
function parseExternalRelay(text: string): RelayInfo {
  const [key, hp, ws] = text.split('@');
  const r: RelayInfo = { key: key ?? '', port: 0 };
  if (!isKeyText(key) || hp === undefined) throw new KnitError('KNIT_ERR_USAGE', `--external-relay must be KEY@HOST:PORT[@WS-URL] (got "${text.slice(0, 80)}")`);
  const at = parseHostPort(hp, 'external-relay');
  r.host = at.host;
  r.port = at.port;
  if (ws !== undefined) {
    if (!/^wss?:\/\/[^\s/?#]+\/[^\s]*$/.test(ws)) throw new KnitError('KNIT_ERR_USAGE', '--external-relay: the WebSocket URL must look like ws://host:port/v1/relay');
    r.ws = ws;
  }
  return r;
}

/** Admin operations, local (store) or remote (HTTP). */
interface Admin {
  createToken(body: { reusable?: boolean; uses?: number; ephemeral?: boolean; expiresInS?: number; tags?: string[] }): Promise<{ token: string }>;
  listTokens(): Promise<unknown[]>;
  revokeToken(id: string): Promise<void>;
  listNodes(): Promise<Record<string, unknown>[]>;
  /** The agents' last path reports; undefined without a running coordinator (they live in its memory). */
  listPaths(): Promise<PathEdge[] | undefined>;
  removeNode(id: number): Promise<void>;
  close(): Promise<void>;
}

/** `--store`, else KNIT_STORE (keeps a password out of `ps`), checked; undefined = SQLite in --data. */
function storeFlag(flag: string | undefined): string | undefined {
  const spec = flag ?? (process.env.KNIT_STORE || undefined);
  const problem = spec === undefined ? undefined : storeSpecProblem(spec);
  if (problem) throw new KnitError('KNIT_ERR_USAGE', problem);
  return spec;
}

async function localAdmin(dataDir: string, storeSpec: string | undefined): Promise<Admin> {
  if (storeSpec === undefined && !existsSync(databasePath(dataDir))) {
    // Allowed (a token made before the first start works: the coordinator adopts the key made
    // here), but a typo in --data would otherwise silently mint tokens for a mesh nobody runs.
    console.error(`knit: no coordinator has used ${dataDir} yet; creating a new mesh there`);
  }
  const store = await openStore({ store: storeSpec, dataDir });
  let registry: Registry;
  try {
    // The URL in tokens: what the running coordinator would write (stored at its start).
    const url = await store.getMeta('public_url') ?? 'http://127.0.0.1:8080';
    registry = await Registry.open(store, { clock: systemClock, url, serves: false });
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  return {
    createToken: (b) => registry.createToken({ ...b, expiresInMs: b.expiresInS === undefined ? undefined : b.expiresInS * 1000 }),
    listTokens: () => registry.listTokens(),
    revokeToken: async (id) => { if (!await registry.revokeToken(id)) throw new KnitError('KNIT_ERR_NOT_FOUND', 'no such token'); },
    listNodes: async () => [...registry.peers()] as unknown as Record<string, unknown>[],
    listPaths: async () => undefined,
    removeNode: async (id) => {
      // A running coordinator holds the node's live session in memory; removing it from the
      // store behind its back would leave the node connected, so that goes through its API.
      // (Replicas on a shared store follow the feed, so there a removal here reaches them.)
      const pid = storeSpec === undefined ? runningCoordinatorPid(dataDir) : undefined;
      if (pid) throw new KnitError('KNIT_ERR_USAGE', `a coordinator (pid ${pid}) is running on ${dataDir}: remove through it with --coordinator URL and KNIT_ADMIN_TOKEN`);
      if (!await registry.remove(id)) throw new KnitError('KNIT_ERR_NODE_UNKNOWN');
    },
    close: () => store.close(),
  };
}

function remoteAdmin(base: string): Admin {
  if (!/^https?:\/\/[^\s/?#]+\/?$/.test(base)) throw new KnitError('KNIT_ERR_USAGE', '--coordinator must look like http://host:port');
  const token = process.env.KNIT_ADMIN_TOKEN;
  if (!token) throw new KnitError('KNIT_ERR_USAGE', '--coordinator needs the admin token in the KNIT_ADMIN_TOKEN environment variable');
  const call = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    let res: Response;
    try {
      res = await fetch(base.replace(/\/$/, '') + path, {
        method, signal: AbortSignal.timeout(10_000),
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new KnitError('KNIT_ERR_UNREACHABLE', `cannot reach the coordinator at ${base}`, { cause: err });
    }
    const json = (await res.json().catch(() => ({}))) as Record<string, unknown> & { error?: { code: string; message: string } };
    if (!res.ok) {
      const code = json.error?.code;
      const known = typeof code === 'string' && Object.hasOwn(ERROR_TABLE, code) ? (code as KnitErrorCode) : 'KNIT_ERR_INTERNAL';
      throw new KnitError(known, typeof json.error?.message === 'string' ? json.error.message.slice(0, 300) : `HTTP ${res.status}`);
    }
    return json;
  };
  return {
    createToken: async (b) => (await call('POST', '/v1/admin/tokens', b)) as unknown as { token: string },
    listTokens: async () => (await call('GET', '/v1/admin/tokens')).tokens as unknown[],
    revokeToken: async (id) => { await call('DELETE', `/v1/admin/tokens/${encodeURIComponent(id)}`); },
    listNodes: async () => (await call('GET', '/v1/admin/nodes')).nodes as Record<string, unknown>[],
    listPaths: async () => (await call('GET', '/v1/admin/paths')).paths as PathEdge[],
    removeNode: async (id) => { await call('DELETE', `/v1/admin/nodes/${id}`); },
    close: async () => {},
  };
}

/** The longest token lifetime, the same bound as the HTTP API's. */
const MAX_TOKEN_TTL_MS = 365 * 86_400_000;

const adminFlags = { data: { type: 'string' }, store: { type: 'string' }, coordinator: { type: 'string' }, json: { type: 'boolean' } } as const;

async function openAdmin(values: { data?: string; store?: string; coordinator?: string }): Promise<Admin> {
  if ([values.data, values.store, values.coordinator].filter((v) => v !== undefined).length > 1) {
    throw new KnitError('KNIT_ERR_USAGE', 'use one of --data, --store or --coordinator');
  }
  return values.coordinator ? remoteAdmin(values.coordinator) : localAdmin(values.data ?? './knit-data', storeFlag(values.store));
}

/** "lan 1 direct 2 relay 1 none 0" (+ "handshaking 1": handed to WireGuard, not carrying yet), or "no report" before the node's first. */
function summarizePaths(edges: Pick<PathEdge, 'kind' | 'handshaking'>[]): string {
  if (edges.length === 0) return 'no report';
  const working = (['lan', 'direct', 'relay', 'none'] as const).map((k) => `${k} ${edges.filter((e) => e.kind === k && !e.handshaking).length}`);
  const handshaking = edges.filter((e) => e.handshaking).length;
  return [...working, ...(handshaking > 0 ? [`handshaking ${handshaking}`] : [])].join(' ');
}

async function runToken(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...adminFlags, reusable: { type: 'boolean' }, uses: { type: 'string' }, ephemeral: { type: 'boolean' },
    expires: { type: 'string' }, tags: { type: 'string' },
  }, true);
  if (values.help) return console.log(COORDINATOR_COMMANDS.token), 0;
  if (positionals.length === 0) throw new KnitError('KNIT_ERR_USAGE', 'say what to do: create, list or revoke ID (knit help token)');
  const [sub, arg, extra] = positionals;
  const wantArgs = sub === 'revoke' ? 1 : 0;
  if (!['create', 'list', 'revoke'].includes(sub!)) throw new KnitError('KNIT_ERR_USAGE', `unknown token command "${sub}" (create, list, revoke)`);
  if ((wantArgs === 1 && (!arg || extra !== undefined)) || (wantArgs === 0 && arg !== undefined)) {
    throw new KnitError('KNIT_ERR_USAGE', sub === 'revoke' ? 'usage: knit token revoke ID (an id from knit token list)' : `knit token ${sub} takes no arguments`);
  }
  if (sub === 'create') {
    // Everything is checked before the store or the network is touched.
    const expires = values.expires === undefined ? undefined : parseDuration(values.expires);
    if (values.expires !== undefined && (expires === undefined || expires > MAX_TOKEN_TTL_MS)) throw new KnitError('KNIT_ERR_USAGE', '--expires must be a duration like 30m, 24h, 7d (at most 365d)');
    if (values.uses !== undefined && !values.reusable) throw new KnitError('KNIT_ERR_USAGE', '--uses needs --reusable');
    const uses = values.uses === undefined ? undefined : intFlag(values.uses, 'uses', 1, 1_000_000, 1);
    const tags = values.tags?.split(',').map((t) => t.trim()).filter(Boolean);
    if (tags && (tags.length > MAX_TAGS || !tags.every(isValidTag))) throw new KnitError('KNIT_ERR_USAGE', `--tags must be up to ${MAX_TAGS} lowercase words (a-z, 0-9, _ and -) separated by commas`);
    const admin = await openAdmin(values);
    try {
      const r = await admin.createToken({
        reusable: values.reusable, ephemeral: values.ephemeral, tags, uses,
        expiresInS: expires === undefined ? undefined : expires / 1000,
      });
      console.log(r.token);
    } finally {
      await admin.close();
    }
    return 0;
  }
  if (sub === 'list' || sub === 'revoke') {
    const admin = await openAdmin(values);
    try {
      if (sub === 'list') printTokens(await admin.listTokens() as TokenListing[], values.json === true);
      else {
        await admin.revokeToken(arg!);
        console.log(`revoked ${arg}`);
      }
    } finally {
      await admin.close();
    }
    return 0;
  }
  throw new KnitError('KNIT_ERR_USAGE', `unknown token command "${sub}" (create, list, revoke)`);
}

type TokenListing = { id: string; reusable: boolean; usesLeft: number | null; ephemeral: boolean; expires: number | null; tags: string[]; revoked: boolean; joins: number };

function printTokens(tokens: TokenListing[], json: boolean): void {
  if (json) return console.log(JSON.stringify(tokens, null, 2));
  if (tokens.length === 0) return console.log('no tokens yet');
  console.log('ID                KIND        USES LEFT  JOINS  EXPIRES                   TAGS');
  for (const t of tokens) {
    const kind = t.revoked ? 'revoked' : `${t.reusable ? 'reusable' : 'single'}${t.ephemeral ? '+eph' : ''}`;
    const expires = t.expires === null ? 'never' : new Date(t.expires).toISOString();
    console.log(`${t.id.padEnd(18)}${kind.padEnd(12)}${String(t.usesLeft ?? 'unlimited').padEnd(11)}${String(t.joins).padEnd(7)}${expires.padEnd(26)}${t.tags.join(',')}`);
  }
}

async function runNodes(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, adminFlags, true);
  if (values.help) return console.log(COORDINATOR_COMMANDS.nodes), 0;
  const [sub = 'list', arg] = positionals;
  if (sub !== 'list' && sub !== 'remove') throw new KnitError('KNIT_ERR_USAGE', `unknown nodes command "${sub}" (list, remove)`);
  if (positionals.length > (sub === 'remove' ? 2 : 1)) throw new KnitError('KNIT_ERR_USAGE', `too many arguments: ${positionals.join(' ')}`);
  if (sub === 'remove' && (!arg || !/^[0-9]{1,15}$/.test(arg))) throw new KnitError('KNIT_ERR_USAGE', 'usage: knit nodes remove ID (a number from knit nodes list)');
  const admin = await openAdmin(values);
  try {
    if (sub === 'remove') {
      await admin.removeNode(Number(arg));
      console.log(`removed node ${arg}`);
      return 0;
    }
    const nodes = await admin.listNodes();
    const paths = await admin.listPaths();
    const pathsOf = (id: unknown) => paths?.filter((e) => e.from === id).map(({ from: _, ...e }) => e);
    if (values.json) console.log(JSON.stringify(paths ? nodes.map((n) => ({ ...n, paths: pathsOf(n.id) })) : nodes, null, 2));
    else if (nodes.length === 0) console.log('no nodes yet');
    else {
      // PATHS is what the node's agent last reported (the mesh as it is), not what it was told.
      console.log(`ID    NAME                IP               ONLINE  NAT                    ${paths ? 'PATHS                      ' : ''}ENDPOINTS`);
      for (const n of nodes) {
        const ip = String((n.addresses as string[])[0] ?? '').replace(/\/32$/, '');
        const summary = paths ? summarizePaths(pathsOf(n.id) ?? []).padEnd(27) : '';
        console.log(`${String(n.id).padEnd(6)}${String(n.name).padEnd(20)}${ip.padEnd(17)}${(n.online ? 'yes' : 'no').padEnd(8)}${String(n.natType).padEnd(23)}${summary}${(n.endpoints as string[]).join(' ')}`);
      }
      if (!paths) console.log('(paths: ask the running coordinator with --coordinator URL)');
    }
    return 0;
  } finally {
    await admin.close();
  }
}

export async function runCoordinatorCli(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'coordinator') return await runCoordinator(rest);
    if (cmd === 'token') return await runToken(rest);
    if (cmd === 'nodes') return await runNodes(rest);
    throw new KnitError('KNIT_ERR_USAGE', `unknown command ${cmd}`);
  } catch (err) {
    if (!isKnitError(err)) {
      // A bug, not an operational failure; still one line and exit 1, with the details in the log.
      createLogger({ base: { component: cmd } }).error('unexpected failure', { err: (err as Error).stack ?? String(err) });
      console.error(`knit ${cmd}: internal error: ${(err as Error).message}`);
      return 1;
    }
    console.error(`knit ${cmd}: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}
