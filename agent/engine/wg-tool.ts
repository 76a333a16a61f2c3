/**
 * The `wg` command line as a pure codec: a diff becomes one `wg set` argument
 * vector, and `wg show <iface> dump` output becomes a value. The kernel adapter
 * (kernel.ts) runs these; `wg` itself talks netlink to kernel WireGuard or,
 * for a userspace interface, the UAPI socket — which is how this path is tested
 * on machines without the kernel module.
 *
 * `wg show <iface> dump` is tab-separated, one line for the interface, then one
 * per peer (wireguard-tools src/show.c, dump_print):
 *
 *   private-key  public-key  listen-port  fwmark
 *   public-key  preshared-key  endpoint  allowed-ips  latest-handshake  rx  tx  keepalive
 *
 * with "(none)" for an unset key, endpoint or empty allowed-ips list, "off" for
 * fwmark 0 or keepalive 0, latest-handshake in seconds since the epoch (0 = never),
 * allowed-ips comma-separated. The private key is a secret: kept only to be
 * compared, never logged.
 */
import { isKeyText } from '../../shared/crypto/keys.js';
import type { Decoded } from '../../shared/wire/control.js';
import { endpointFromEngine, type EngineDiff } from './diff.js';
import { canonicalAllowedIp } from './prefix.js';

/**
 * The `wg set` argv for the WireGuard part of a diff, or undefined when there is
 * none. A new private key is read by `wg` from `privateKeyPath` (a 0600 file the
 * caller writes and removes), so the key never sits in argv. (`/dev/stdin` is not
 * an option: Node hands a child a socket, not a pipe, and `wg` cannot fopen it.)
 * `wg` has no update_only: naming an existing peer changes only the fields
 * given, and `allowed-ips` replaces the whole list, as the diff wants.
 */
export function wgSetArgv(iface: string, diff: EngineDiff, privateKeyPath?: string): string[] | undefined {
  const argv = ['wg', 'set', iface];
  if (diff.privateKey !== undefined) {
    if (!privateKeyPath) throw new TypeError('a private key change needs privateKeyPath');
    argv.push('private-key', privateKeyPath);
  }
  if (diff.listenPort !== undefined) argv.push('listen-port', String(diff.listenPort));
  for (const key of diff.removePeers) argv.push('peer', key, 'remove');
  for (const u of diff.upsertPeers) {
    argv.push('peer', u.publicKey);
    if (u.endpoint !== undefined) argv.push('endpoint', u.endpoint);
    if (u.persistentKeepaliveS !== undefined) {
      argv.push('persistent-keepalive', u.persistentKeepaliveS === 0 ? 'off' : String(u.persistentKeepaliveS));
    }
    if (u.allowedIps !== undefined) argv.push('allowed-ips', u.allowedIps.join(','));
  }
  return argv.length === 3 ? undefined : argv;
}

export interface WgDumpPeer {
  publicKey: string;
  endpoint?: string;
  allowedIps: string[];
  latestHandshakeS: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveS: number;
}

export interface WgDump {
  privateKey?: string;
  listenPort: number;
  fwmark: number;
  peers: WgDumpPeer[];
}

const NONE = '(none)';

function uint(text: string, max: number): number | undefined {
  if (!/^[0-9]{1,20}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function parsePeerLine(fields: string[], lineNo: number): Decoded<WgDumpPeer> {
  const bad = (what: string): Decoded<WgDumpPeer> => ({ ok: false, error: `line ${lineNo}: bad ${what}` });
  if (fields.length !== 8) return { ok: false, error: `line ${lineNo}: a peer line has 8 fields, not ${fields.length}` };
  const [pub, psk, ep, ips, hs, rx, tx, ka] = fields as [string, string, string, string, string, string, string, string];
  if (!isKeyText(pub)) return bad('public key');
  if (psk !== NONE && !isKeyText(psk)) return bad('preshared key');
  const endpoint = ep === NONE ? undefined : endpointFromEngine(ep);
  if (ep !== NONE && !endpoint) return bad('endpoint');
  const allowedIps: string[] = [];
  if (ips !== NONE) {
    for (const cidr of ips.split(',')) {
      const c = canonicalAllowedIp(cidr);
      if (!c) return bad('allowed IP');
      allowedIps.push(c);
    }
  }
  const latestHandshakeS = uint(hs, Number.MAX_SAFE_INTEGER);
  const rxBytes = uint(rx, Number.MAX_SAFE_INTEGER);
  const txBytes = uint(tx, Number.MAX_SAFE_INTEGER);
  const persistentKeepaliveS = ka === 'off' ? 0 : uint(ka, 65535);
  if (latestHandshakeS === undefined) return bad('latest handshake');
  if (rxBytes === undefined || txBytes === undefined) return bad('transfer counter');
  if (persistentKeepaliveS === undefined) return bad('persistent keepalive');
  return { ok: true, value: { publicKey: pub, endpoint, allowedIps, latestHandshakeS, rxBytes, txBytes, persistentKeepaliveS } };
}

/** Parses `wg show <iface> dump` output strictly; never throws. */
export function parseWgDump(text: string): Decoded<WgDump> {
  if (typeof text !== 'string') return { ok: false, error: 'dump is not text' };
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  const head = lines[0]?.split('\t') ?? [];
  if (head.length !== 4) return { ok: false, error: 'line 1: the interface line has 4 fields' };
  const [priv, pub, port, mark] = head as [string, string, string, string];
  if (priv !== NONE && !isKeyText(priv)) return { ok: false, error: 'line 1: bad private key' };
  if (pub !== NONE && !isKeyText(pub)) return { ok: false, error: 'line 1: bad public key' };
  const listenPort = uint(port, 65535);
  if (listenPort === undefined) return { ok: false, error: 'line 1: bad listen port' };
  let fwmark: number | undefined = 0;
  if (mark !== 'off') fwmark = /^0x[0-9a-f]{1,8}$/.test(mark) ? parseInt(mark, 16) : undefined;
  if (fwmark === undefined) return { ok: false, error: 'line 1: bad fwmark' };
  const peers: WgDumpPeer[] = [];
  const seen = new Set<string>();
  for (let i = 1; i < lines.length; i++) {
    const r = parsePeerLine(lines[i]!.split('\t'), i + 1);
    if (!r.ok) return r;
    if (seen.has(r.value.publicKey)) return { ok: false, error: `line ${i + 1}: peer listed twice` };
    seen.add(r.value.publicKey);
    peers.push(r.value);
  }
  return { ok: true, value: { privateKey: priv === NONE ? undefined : priv, listenPort, fwmark, peers } };
}
