/**
 * The control protocol between agent and coordinator.
 *
 * HTTP
 *   POST /v1/join  JoinRequest → JoinResponse      (one-token enrollment)
 *
 * WebSocket /v1/control, JSON text frames, one message per frame:
 *
 *   coordinator                                agent
 *   challenge {serverNonce, coordinatorKey} →
 *                                           ← hello {nodeKey, discoKey, clientNonce, proof, lastVersion}
 *   welcome {node, serverProof, stun, relays?, loopbackEndpoints?} → (agent checks serverProof against the pinned key)
 *   snapshot {version, peers} | delta {from, version, changes} →   (then deltas as the mesh changes)
 *                                           ← endpoints {endpoints, natType}
 *                                           ← call-me-maybe {to, endpoints}
 *   call-me-maybe {from, endpoints}         →
 *
 * Proof of key possession (both directions): K = HKDF(X25519(node, coordinator),
 * "control-auth"). The agent sends MAC(K, "hello", serverNonce, clientNonce,
 * nodeKey, discoKey); the coordinator answers MAC(K, "welcome", clientNonce,
 * serverNonce). Only holders of one of the two private keys can compute K, so
 * no bearer secret lets one node speak as another and a look-alike server can't
 * pass as the pinned coordinator.
 *
 * Validation is strict: every decoder returns a typed message or an error
 * string; callers close the connection (4400) on an error. Policy is per item:
 * a well-formed endpoint the coordinator won't pass on (loopback, multicast…)
 * is dropped from its list and the rest of the message stands. The peer map
 * includes the receiving node itself; agents skip their own entry. That lets
 * the coordinator encode each snapshot and delta once for every client.
 */
import { decodeKey, isKeyText } from '../crypto/keys.js';
import { deriveSharedKey, equalBytes, mac } from '../crypto/seal.js';
import { parseEndpoint } from '../net/addr.js';

export const CONTROL_PROTOCOL_VERSION = 1;
/** A node reports at most this many endpoints; more is a protocol error (bounds fan-out size). */
export const MAX_ENDPOINTS = 16;
/** Largest frame an agent may send; the coordinator's ws server enforces it as maxPayload. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Largest frame the coordinator may send (a snapshot of a 10,000-node mesh is a few MB). */
export const MAX_SERVER_FRAME_BYTES = 64 * 1024 * 1024;
export const NONCE_BYTES = 32;
export const MAX_HOSTNAME_LEN = 63;
export const MAX_TAGS = 16;

export const NAT_TYPES = ['unknown', 'none', 'endpoint-independent', 'endpoint-dependent', 'blocked'] as const;
export type NatType = (typeof NAT_TYPES)[number];

export interface PeerInfo {
  id: number;
  name: string;
  nodeKey: string;
  discoKey: string; // '' until the node has connected once
  addresses: string[]; // mesh addresses in CIDR form: ["100.96.0.2/32", "fd7a:…/128"]
  endpoints: string[];
  natType: NatType;
  online: boolean;
  lastSeen: number; // wall ms, 0 = never
  tags: string[];
}

export type PeerChange =
  | { op: 'upsert'; peer: PeerInfo }
  | { op: 'remove'; id: number }
  | { op: 'endpoints'; id: number; endpoints: string[]; natType: NatType }
  | { op: 'online'; id: number; online: boolean; lastSeen: number }
  | { op: 'disco'; id: number; discoKey: string };

// ---- HTTP join ------------------------------------------------------------

export interface JoinRequest {
  token: string;
  nodeKey: string;
  discoKey?: string;
  hostname: string;
}

export interface JoinResponse {
  node: { id: number; name: string; addresses: string[]; tags: string[]; ephemeral: boolean };
  mesh: { ipv4Prefix: string; ipv6Prefix: string };
  coordinatorKey: string;
  /** MAC(K_join, "join", nodeKey, id, addresses…): proves the coordinator holds the pinned key. */
  coordinatorProof: string;
}

// ---- WebSocket --------------------------------------------------------------

export interface ChallengeMsg { type: 'challenge'; v: number; serverNonce: string; coordinatorKey: string }
export interface HelloMsg { type: 'hello'; v: number; nodeKey: string; discoKey: string; clientNonce: string; proof: string; lastVersion: number }
/**
 * `loopbackEndpoints`: the coordinator accepts loopback endpoints (single-machine tests only);
 * absent, it drops them from reports, so an agent doesn't send them.
 */
export interface WelcomeMsg { type: 'welcome'; node: { id: number; name: string; addresses: string[] }; serverProof: string; stun: number[]; relays?: RelayInfo[]; loopbackEndpoints?: boolean }
/**
 * A relay the agent may use (docs/relay.md): its X25519 key, its UDP control port, its
 * address (absent: the coordinator's host) and the URL of its WebSocket fallback, if any.
 */
export interface RelayInfo { key: string; port: number; host?: string; ws?: string }
export const MAX_RELAYS = 8;
export interface SnapshotMsg { type: 'snapshot'; version: number; peers: PeerInfo[] }
export interface DeltaMsg { type: 'delta'; from: number; version: number; changes: PeerChange[] }
export interface EndpointsMsg { type: 'endpoints'; endpoints: string[]; natType: NatType }
export interface CallMeMaybeOut { type: 'call-me-maybe'; to: string; endpoints: string[] }
export interface CallMeMaybeIn { type: 'call-me-maybe'; from: string; endpoints: string[] }
export interface ErrorMsg { type: 'error'; code: string; message: string }

export type ServerMessage = ChallengeMsg | WelcomeMsg | SnapshotMsg | DeltaMsg | CallMeMaybeIn | ErrorMsg;
/** What an agent sees of its path to one peer (sampled, for the console and `knit nodes`). */
export interface PathReport {
  peer: string; // the peer's node key
  kind: PathReportKind;
  rttMs?: number;
  lastHandshake: number; // wall ms of the last WireGuard handshake, 0 = never
  /** The path is handed to WireGuard but has no handshake over it yet (shown as "direct (handshaking)"). */
  handshaking?: true;
}
export const PATH_REPORT_KINDS = ['lan', 'direct', 'relay', 'none'] as const;
export type PathReportKind = (typeof PATH_REPORT_KINDS)[number];
/** Peers per report: a big mesh reports its connected peers first and the rest are dropped. */
export const MAX_PATH_REPORTS = 256;
export interface PathsMsg { type: 'paths'; paths: PathReport[] }

export type ClientMessage = HelloMsg | EndpointsMsg | CallMeMaybeOut | PathsMsg;

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

const ok = <T>(value: T): Decoded<T> => ({ ok: true, value });
const bad = (error: string): Decoded<never> => ({ ok: false, error });

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const isNonNegInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isB64 = (v: unknown, maxLen = 128): v is string => typeof v === 'string' && v.length <= maxLen && /^[A-Za-z0-9+/]+={0,2}$/.test(v);

export function isValidHostname(v: unknown): v is string {
  return typeof v === 'string' && /^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(v);
}

export function isValidTag(v: unknown): v is string {
  return typeof v === 'string' && /^[a-z0-9][a-z0-9_-]{0,31}$/.test(v);
}

/** Validates an endpoint list: at most MAX_ENDPOINTS well-formed "ip:port" strings, no duplicates. */
export function validateEndpointList(v: unknown): Decoded<string[]> {
  if (!Array.isArray(v)) return bad('endpoints must be an array');
  if (v.length > MAX_ENDPOINTS) return bad(`at most ${MAX_ENDPOINTS} endpoints`);
  const seen = new Set<string>();
  for (const e of v) {
    if (!parseEndpoint(e)) return bad('malformed endpoint');
    if (seen.has(e as string)) return bad('duplicate endpoint');
    seen.add(e as string);
  }
  return ok(v as string[]);
}

function parseJsonFrame(raw: string | Uint8Array, maxBytes: number): Decoded<Record<string, unknown>> {
  const text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
  if (text.length > maxBytes) return bad('frame too large');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return bad('frame is not JSON');
  }
  if (!isObj(v) || typeof v.type !== 'string') return bad('frame has no type');
  return ok(v);
}

export function validateJoinRequest(v: unknown): Decoded<JoinRequest> {
  if (!isObj(v)) return bad('body must be an object');
  if (typeof v.token !== 'string' || v.token.length > 1024) return bad('token must be a string');
  if (!isKeyText(v.nodeKey)) return bad('nodeKey must be a base64 X25519 public key');
  if (v.discoKey !== undefined && !isKeyText(v.discoKey)) return bad('discoKey must be a base64 X25519 public key');
  if (!isValidHostname(v.hostname)) return bad('hostname must be 1-63 letters, digits or hyphens');
  return ok({ token: v.token, nodeKey: v.nodeKey, discoKey: v.discoKey as string | undefined, hostname: v.hostname });
}

/** Decodes a frame sent by an agent. */
export function decodeClientMessage(raw: string | Uint8Array): Decoded<ClientMessage> {
  const f = parseJsonFrame(raw, MAX_FRAME_BYTES);
  if (!f.ok) return f;
  const m = f.value;
  switch (m.type) {
    case 'hello':
      if (m.v !== CONTROL_PROTOCOL_VERSION) return bad('unsupported protocol version');
      if (!isKeyText(m.nodeKey) || !isKeyText(m.discoKey)) return bad('hello needs nodeKey and discoKey');
      if (!isB64(m.clientNonce) || !isB64(m.proof)) return bad('hello needs clientNonce and proof');
      if (!isNonNegInt(m.lastVersion)) return bad('lastVersion must be a non-negative integer');
      return ok({ type: 'hello', v: m.v, nodeKey: m.nodeKey, discoKey: m.discoKey, clientNonce: m.clientNonce, proof: m.proof, lastVersion: m.lastVersion });
    case 'endpoints': {
      const eps = validateEndpointList(m.endpoints);
      if (!eps.ok) return eps;
      const natType = m.natType ?? 'unknown';
      if (!NAT_TYPES.includes(natType as NatType)) return bad('unknown natType');
      return ok({ type: 'endpoints', endpoints: eps.value, natType: natType as NatType });
    }
    case 'call-me-maybe': {
      if (!isKeyText(m.to)) return bad('call-me-maybe needs a peer key in "to"');
      const eps = validateEndpointList(m.endpoints);
      if (!eps.ok) return eps;
      return ok({ type: 'call-me-maybe', to: m.to, endpoints: eps.value });
    }
    case 'paths': {
      if (!Array.isArray(m.paths) || m.paths.length > MAX_PATH_REPORTS) return bad(`paths must be a list of at most ${MAX_PATH_REPORTS}`);
      const paths: PathReport[] = [];
      for (const r of m.paths as unknown[]) {
        if (!isObj(r) || !isKeyText(r.peer) || !PATH_REPORT_KINDS.includes(r.kind as PathReportKind) || !isNonNegInt(r.lastHandshake)) return bad('each path needs peer, kind and lastHandshake');
        if (r.rttMs !== undefined && !(typeof r.rttMs === 'number' && Number.isFinite(r.rttMs) && r.rttMs >= 0 && r.rttMs <= 600_000)) return bad('rttMs must be 0..600000');
        if (r.handshaking !== undefined && (r.handshaking !== true || r.kind === 'none')) return bad('handshaking is true or absent, and never with kind none');
        paths.push({
          peer: r.peer, kind: r.kind as PathReportKind, lastHandshake: r.lastHandshake,
          ...(r.rttMs !== undefined ? { rttMs: r.rttMs as number } : {}), ...(r.handshaking ? { handshaking: true as const } : {}),
        });
      }
      return ok({ type: 'paths', paths });
    }
    default:
      return bad('unknown message type');
  }
}

function validatePeer(p: unknown): p is PeerInfo {
  if (!isObj(p)) return false;
  return isNonNegInt(p.id) && typeof p.name === 'string' && isKeyText(p.nodeKey) &&
    (p.discoKey === '' || isKeyText(p.discoKey)) &&
    Array.isArray(p.addresses) && p.addresses.every((a) => typeof a === 'string' && a.length < 64) &&
    validateEndpointList(p.endpoints).ok && NAT_TYPES.includes(p.natType as NatType) &&
    typeof p.online === 'boolean' && isNonNegInt(p.lastSeen) &&
    Array.isArray(p.tags) && p.tags.every(isValidTag);
}

function validateChange(c: unknown): c is PeerChange {
  if (!isObj(c)) return false;
  switch (c.op) {
    case 'upsert': return validatePeer(c.peer);
    case 'remove': return isNonNegInt(c.id);
    case 'endpoints': return isNonNegInt(c.id) && validateEndpointList(c.endpoints).ok && NAT_TYPES.includes(c.natType as NatType);
    case 'online': return isNonNegInt(c.id) && typeof c.online === 'boolean' && isNonNegInt(c.lastSeen);
    case 'disco': return isNonNegInt(c.id) && isKeyText(c.discoKey);
    default: return false;
  }
}

function validateRelayInfo(r: unknown): boolean {
  if (!isObj(r) || !isKeyText(r.key) || !Number.isInteger(r.port) || (r.port as number) < 1 || (r.port as number) > 65535) return false;
  if (r.host !== undefined && (typeof r.host !== 'string' || !parseEndpoint(`${r.host.includes(':') ? `[${r.host}]` : r.host}:1`))) return false;
  return r.ws === undefined || (typeof r.ws === 'string' && r.ws.length <= 256 && /^wss?:\/\/[^\s/?#]+\/[^\s]*$/.test(r.ws));
}

/** Decodes a frame sent by the coordinator (the agent trusts only the pinned key, not the content). */
export function decodeServerMessage(raw: string | Uint8Array): Decoded<ServerMessage> {
  const f = parseJsonFrame(raw, MAX_SERVER_FRAME_BYTES);
  if (!f.ok) return f;
  const m = f.value;
  switch (m.type) {
    case 'challenge':
      if (!isB64(m.serverNonce) || !isKeyText(m.coordinatorKey) || !isNonNegInt(m.v)) return bad('malformed challenge');
      return ok(m as unknown as ChallengeMsg);
    case 'welcome': {
      const n = m.node;
      if (!isObj(n) || !isNonNegInt(n.id) || typeof n.name !== 'string' || !Array.isArray(n.addresses)) return bad('malformed welcome');
      if (!isB64(m.serverProof) || !Array.isArray(m.stun) || !m.stun.every((p) => isNonNegInt(p) && p <= 65535)) return bad('malformed welcome');
      if (m.loopbackEndpoints !== undefined && typeof m.loopbackEndpoints !== 'boolean') return bad('malformed welcome');
      if (m.relays !== undefined && (!Array.isArray(m.relays) || m.relays.length > MAX_RELAYS || !m.relays.every(validateRelayInfo))) return bad('malformed welcome');
      return ok(m as unknown as WelcomeMsg);
    }
    case 'snapshot':
      if (!isNonNegInt(m.version) || !Array.isArray(m.peers) || !m.peers.every(validatePeer)) return bad('malformed snapshot');
      return ok(m as unknown as SnapshotMsg);
    case 'delta':
      if (!isNonNegInt(m.from) || !isNonNegInt(m.version) || m.version < m.from || !Array.isArray(m.changes) || !m.changes.every(validateChange)) return bad('malformed delta');
      return ok(m as unknown as DeltaMsg);
    case 'call-me-maybe': {
      if (!isKeyText(m.from)) return bad('malformed call-me-maybe');
      const eps = validateEndpointList(m.endpoints);
      if (!eps.ok) return eps;
      return ok({ type: 'call-me-maybe', from: m.from, endpoints: eps.value });
    }
    case 'error':
      if (typeof m.code !== 'string' || typeof m.message !== 'string') return bad('malformed error');
      return ok({ type: 'error', code: m.code.slice(0, 64), message: m.message.slice(0, 512) });
    default:
      return bad('unknown message type');
  }
}

// ---- proofs of key possession ------------------------------------------------

const AUTH_PURPOSE = 'control-auth';
const JOIN_PURPOSE = 'join-proof';

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

/** The shared auth key; `ownPrivate` is the node's key on the agent, the coordinator's on the server. */
export function controlAuthKey(ownPrivate: Uint8Array, otherPublicText: string): Uint8Array | undefined {
  const pub = decodeKey(otherPublicText);
  if (!pub) return undefined;
  try {
    return deriveSharedKey(ownPrivate, pub, AUTH_PURPOSE);
  } catch {
    return undefined; // low-order point
  }
}

export function helloProof(k: Uint8Array, serverNonce: string, clientNonce: string, nodeKey: string, discoKey: string): string {
  return b64(mac(k, 'hello', serverNonce, clientNonce, nodeKey, discoKey));
}

export function welcomeProof(k: Uint8Array, clientNonce: string, serverNonce: string): string {
  return b64(mac(k, 'welcome', clientNonce, serverNonce));
}

export function joinProof(ownPrivate: Uint8Array, otherPublicText: string, nodeKey: string, id: number, addresses: string[]): string | undefined {
  const pub = decodeKey(otherPublicText);
  if (!pub) return undefined;
  try {
    return b64(mac(deriveSharedKey(ownPrivate, pub, JOIN_PURPOSE), 'join', nodeKey, String(id), ...addresses));
  } catch {
    return undefined;
  }
}

/** Constant-time comparison of two base64 proofs. */
export function proofsEqual(a: string, b: string): boolean {
  return equalBytes(Buffer.from(a, 'base64'), Buffer.from(b, 'base64'));
}
