/**
 * WireGuard's cross-platform configuration protocol ("UAPI",
 * https://www.wireguard.com/xplatform/), as a pure codec. wireguard-go speaks it
 * on /var/run/wireguard/<iface>.sock; uapi-socket.ts carries the text, this
 * module only writes requests and reads replies.
 *
 * The grammar is lines of `key=value`, a request or reply ending in an empty
 * line. Keys are device-wide until the first `public_key`, which opens a peer
 * block that runs to the next `public_key`:
 *
 *   set=1                          get=1
 *   private_key=<64 hex>           (empty line)
 *   listen_port=51820
 *   replace_peers=true             reply:
 *   public_key=<64 hex>            private_key=<64 hex>
 *   remove=true                    listen_port=51820
 *   public_key=<64 hex>            fwmark=…            (only when set)
 *   update_only=true               public_key=<64 hex>
 *   endpoint=198.18.0.7:51820      preshared_key=<64 hex>
 *   persistent_keepalive_interval=25  protocol_version=1
 *   replace_allowed_ips=true       endpoint=[2001:db8::1]:51820
 *   allowed_ip=100.96.0.2/32       last_handshake_time_sec=…
 *   (empty line)                   last_handshake_time_nsec=…
 *                                  tx_bytes=… rx_bytes=… (one per line)
 *   reply: errno=0                 persistent_keepalive_interval=25
 *          (empty line)            allowed_ip=100.96.0.2/32
 *                                  errno=0
 *                                  (empty line)
 *
 * Keys travel in hex here, not base64 as everywhere else in Knit. `errno` is 0
 * on success; wireguard-go writes failures as a negated errno (e.g. -22).
 *
 * Requests are built from validated engine state, so a bad value there is a
 * programmer error (TypeError). Replies come from another process and are
 * parsed strictly into a value-or-error, never a throw; keys this code does not
 * know are skipped so a newer wireguard-go does not break stats.
 */
import { decodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint, parseEndpoint } from '../../shared/net/addr.js';
import type { Decoded } from '../../shared/wire/control.js';
import { endpointFromEngine, type EngineDiff } from './diff.js';
import { canonicalAllowedIp } from './prefix.js';

export const UAPI_GET_REQUEST = 'get=1\n\n';
/** The only protocol version that exists (xplatform: "protocol_version=1"). */
export const UAPI_PROTOCOL_VERSION = 1;

const HEX_KEY = /^[0-9a-f]{64}$/;
const U64_MAX = 2n ** 64n - 1n;

export interface UapiPeerSet {
  publicKeyHex: string;
  /** Remove the peer; nothing else is written for it. */
  remove?: boolean;
  /** Change the peer only if it exists (never create a half-configured one). */
  updateOnly?: boolean;
  endpoint?: string;
  persistentKeepaliveS?: number;
  /** Drop the peer's allowed IPs before adding `allowedIps`. */
  replaceAllowedIps?: boolean;
  allowedIps?: string[];
}

export interface UapiSetRequest {
  privateKeyHex?: string;
  listenPort?: number;
  replacePeers?: boolean;
  peers: UapiPeerSet[];
}

export interface UapiPeerState {
  publicKeyHex: string;
  endpoint?: string;
  lastHandshakeTimeSec: number;
  lastHandshakeTimeNsec: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveS: number;
  allowedIps: string[];
}

export interface UapiDevice {
  /** Present when a key is set. A secret: callers compare it, never log it. */
  privateKeyHex?: string;
  listenPort?: number;
  fwmark?: number;
  peers: UapiPeerState[];
}

export function keyBase64ToHex(text: string): string {
  const key = decodeKey(text);
  if (!key) throw new TypeError('not a base64 X25519 key');
  return Buffer.from(key).toString('hex');
}

export function keyHexToBase64(hex: string): string {
  if (!HEX_KEY.test(hex)) throw new TypeError('not a 64-digit lower-case hex key');
  return Buffer.from(hex, 'hex').toString('base64');
}

function checkInt(v: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} must be an integer 0..${max}`);
  return v;
}

/** Writes a `set=1` request. Throws on values no valid engine state can hold. */
export function encodeUapiSet(req: UapiSetRequest): string {
  const lines = ['set=1'];
  if (req.privateKeyHex !== undefined) {
    if (!HEX_KEY.test(req.privateKeyHex)) throw new TypeError('private key must be 64 lower-case hex digits');
    lines.push(`private_key=${req.privateKeyHex}`);
  }
  if (req.listenPort !== undefined) lines.push(`listen_port=${checkInt(req.listenPort, 65535, 'listen_port')}`);
  if (req.replacePeers) lines.push('replace_peers=true');
  for (const p of req.peers) {
    if (!HEX_KEY.test(p.publicKeyHex)) throw new TypeError('public key must be 64 lower-case hex digits');
    lines.push(`public_key=${p.publicKeyHex}`);
    if (p.remove) {
      lines.push('remove=true');
      continue;
    }
    if (p.updateOnly) lines.push('update_only=true');
    if (p.endpoint !== undefined) {
      const ep = parseEndpoint(p.endpoint);
      if (!ep) throw new TypeError('endpoint must be "ip:port"');
      lines.push(`endpoint=${formatEndpoint(ep)}`);
    }
    if (p.persistentKeepaliveS !== undefined) {
      lines.push(`persistent_keepalive_interval=${checkInt(p.persistentKeepaliveS, 65535, 'persistent_keepalive_interval')}`);
    }
    if (p.replaceAllowedIps) lines.push('replace_allowed_ips=true');
    for (const cidr of p.allowedIps ?? []) {
      const c = canonicalAllowedIp(cidr);
      if (!c) throw new TypeError('allowed_ip must be a prefix');
      lines.push(`allowed_ip=${c}`);
    }
  }
  return lines.join('\n') + '\n\n';
}

/**
 * The UAPI request for the WireGuard part of a diff, or undefined when the diff
 * only touches addresses and routes. Existing peers are written with
 * update_only so a peer removed behind our back is not resurrected half-built;
 * a changed allowed-IP list replaces the old one whole.
 */
export function uapiSetFromDiff(diff: EngineDiff): UapiSetRequest | undefined {
  const req: UapiSetRequest = { peers: [] };
  if (diff.privateKey !== undefined) req.privateKeyHex = keyBase64ToHex(diff.privateKey);
  if (diff.listenPort !== undefined) req.listenPort = diff.listenPort;
  for (const key of diff.removePeers) req.peers.push({ publicKeyHex: keyBase64ToHex(key), remove: true });
  for (const u of diff.upsertPeers) {
    req.peers.push({
      publicKeyHex: keyBase64ToHex(u.publicKey),
      updateOnly: !u.create,
      endpoint: u.endpoint,
      persistentKeepaliveS: u.persistentKeepaliveS,
      replaceAllowedIps: u.allowedIps !== undefined && !u.create,
      allowedIps: u.allowedIps,
    });
  }
  const empty = req.privateKeyHex === undefined && req.listenPort === undefined && req.peers.length === 0;
  return empty ? undefined : req;
}

type Line = [key: string, value: string];
const LINE = /^([a-z_]+)=([\x20-\x7e]*)$/;

/** Splits a reply into lines and its errno; the frame must be exact (one final empty line). */
function splitReply(text: string): Decoded<{ lines: Line[]; errno: number }> {
  if (typeof text !== 'string' || !text.endsWith('\n\n')) return { ok: false, error: 'reply is not terminated by an empty line' };
  const raw = text.slice(0, -2).split('\n');
  const lines: Line[] = [];
  for (const [i, l] of raw.entries()) {
    const m = LINE.exec(l);
    if (!m) return { ok: false, error: `line ${i + 1} is not key=value` };
    lines.push([m[1]!, m[2]!]);
  }
  const last = lines.pop();
  if (!last || last[0] !== 'errno') return { ok: false, error: 'reply does not end with errno' };
  if (!/^-?[0-9]{1,10}$/.test(last[1])) return { ok: false, error: 'errno is not a number' };
  if (lines.some(([k]) => k === 'errno')) return { ok: false, error: 'errno appears twice' };
  return { ok: true, value: { lines, errno: Number(last[1]) } };
}

function parseUint(text: string, max: bigint): number | undefined {
  if (!/^[0-9]{1,20}$/.test(text)) return undefined;
  const n = BigInt(text);
  return n <= max ? Number(n) : undefined; // byte counters past 2^53 lose precision, harmlessly
}

/** Parses the reply to a set (or any request): the errno (0 = success). */
export function parseUapiErrno(text: string): Decoded<number> {
  const r = splitReply(text);
  return r.ok ? { ok: true, value: r.value.errno } : r;
}

const DEVICE_KEYS = new Set(['private_key', 'listen_port', 'fwmark']);
/** Peer keys holding unsigned numbers: the field they fill and their largest value. */
const PEER_NUMERIC = new Map<string, [keyof UapiPeerState, bigint]>([
  ['last_handshake_time_sec', ['lastHandshakeTimeSec', U64_MAX]],
  ['last_handshake_time_nsec', ['lastHandshakeTimeNsec', 999_999_999n]],
  ['rx_bytes', ['rxBytes', U64_MAX]],
  ['tx_bytes', ['txBytes', U64_MAX]],
  ['persistent_keepalive_interval', ['persistentKeepaliveS', 65535n]],
]);

/** Parses the reply to `get=1`. A non-zero errno is an error too. */
export function parseUapiGet(text: string): Decoded<UapiDevice> {
  const split = splitReply(text);
  if (!split.ok) return split;
  if (split.value.errno !== 0) return { ok: false, error: `errno=${split.value.errno}` };
  const device: UapiDevice = { peers: [] };
  const seenDevice = new Set<string>();
  let peer: UapiPeerState | undefined;
  let seenPeer = new Set<string>();
  const peerKeys = new Set<string>();
  const bad = (key: string, i: number): Decoded<UapiDevice> => ({ ok: false, error: `line ${i + 1}: bad ${key}` });

  for (const [i, [key, value]] of split.value.lines.entries()) {
    if (DEVICE_KEYS.has(key)) {
      if (peer) return { ok: false, error: `line ${i + 1}: ${key} inside a peer block` };
      if (seenDevice.has(key)) return { ok: false, error: `line ${i + 1}: ${key} repeated` };
      seenDevice.add(key);
      if (key === 'private_key') {
        if (!HEX_KEY.test(value)) return bad(key, i);
        device.privateKeyHex = value;
      } else if (key === 'listen_port') {
        device.listenPort = parseUint(value, 65535n);
        if (device.listenPort === undefined) return bad(key, i);
      } else {
        device.fwmark = parseUint(value, 0xffffffffn);
        if (device.fwmark === undefined) return bad(key, i);
      }
      continue;
    }
    if (key === 'public_key') {
      if (!HEX_KEY.test(value)) return bad(key, i);
      if (peerKeys.has(value)) return { ok: false, error: `line ${i + 1}: peer listed twice` };
      peerKeys.add(value);
      peer = {
        publicKeyHex: value, lastHandshakeTimeSec: 0, lastHandshakeTimeNsec: 0, rxBytes: 0, txBytes: 0, persistentKeepaliveS: 0, allowedIps: [],
      };
      seenPeer = new Set();
      device.peers.push(peer);
      continue;
    }
    if (key === 'allowed_ip') {
      if (!peer) return { ok: false, error: `line ${i + 1}: allowed_ip before any public_key` };
      const c = canonicalAllowedIp(value);
      if (!c) return bad(key, i);
      peer.allowedIps.push(c);
      continue;
    }
    const known = PEER_NUMERIC.has(key) || key === 'endpoint' || key === 'preshared_key' || key === 'protocol_version';
    if (!known) continue; // a newer wireguard-go's key: skip it
    if (!peer) return { ok: false, error: `line ${i + 1}: ${key} before any public_key` };
    if (seenPeer.has(key)) return { ok: false, error: `line ${i + 1}: ${key} repeated` };
    seenPeer.add(key);
    if (key === 'endpoint') {
      peer.endpoint = endpointFromEngine(value);
      if (!peer.endpoint) return bad(key, i);
    } else if (key === 'preshared_key') {
      if (!HEX_KEY.test(value)) return bad(key, i); // validated, never kept: it is a secret
    } else if (key === 'protocol_version') {
      if (parseUint(value, 0xffffffffn) !== UAPI_PROTOCOL_VERSION) return { ok: false, error: `line ${i + 1}: unsupported protocol_version` };
    } else {
      const [field, max] = PEER_NUMERIC.get(key)!;
      const n = parseUint(value, max);
      if (n === undefined) return bad(key, i);
      (peer[field] as number) = n;
    }
  }
  return { ok: true, value: device };
}
