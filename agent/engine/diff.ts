/**
 * The engine diff: the pure heart of every adapter. A desired EngineConfig is
 * validated and normalised into an EngineState (canonical keys, addresses,
 * endpoints, sorted lists, and the routes the interface needs), then compared
 * with the state the engine is known to hold. The result says exactly what to
 * write — changed peers only, removed peers by key, address and route changes —
 * and what state the engine holds afterwards. Adapters only translate an
 * EngineDiff into their own language (UAPI text, `wg set` argv, `ip` batches).
 *
 * Two rules that are deliberate, not accidents:
 * - An endpoint of `undefined` means "no opinion", not "clear": neither UAPI nor
 *   `wg` can unset an endpoint short of removing the peer (which would drop its
 *   session), and WireGuard roams on authenticated packets anyway.
 * - The diff is taken against what was last applied, not against read-back
 *   stats: WireGuard moves a peer's endpoint when it roams, and re-writing our
 *   older opinion on every apply would fight that roaming.
 */
import { BoundedMap } from '../../shared/bounded-map.js';
import { decodeKey, publicKeyOf, encodeKey } from '../../shared/crypto/keys.js';
import { formatEndpoint, parseEndpoint } from '../../shared/net/addr.js';
import type { Decoded } from '../../shared/wire/control.js';
import { canonicalAddress, canonicalAllowedIp, prefixListKey } from './prefix.js';
import type { ApplyOptions, EngineConfig, EnginePeerConfig, IpFamily } from './types.js';

/** Persistent keepalive is a 16-bit field in WireGuard's configuration protocol. */
export const KEEPALIVE_MAX_S = 65535;
/** A peer's route MTU: IPv4's minimum datagram every host must take (RFC 791) up to jumbo frames. */
export const ROUTE_MTU_MIN = 576;
export const ROUTE_MTU_MAX = 9000;

/** A normalised peer: keepalive always a number (0 = off), lists sorted and canonical. */
export interface EnginePeerState {
  publicKey: string;
  allowedIps: string[];
  endpoint?: string;
  persistentKeepaliveS: number;
  /** The MTU of the routes to its allowed IPs; undefined = the interface's. */
  mtu?: number;
}

/** What an engine holds: the normalised config plus the routes pointing into the interface. */
export interface EngineState {
  privateKey: string; // base64; '' = none set yet
  listenPort: number; // 0 = let the engine pick
  addresses: string[];
  peers: EnginePeerState[]; // sorted by publicKey
  /** "prefix", or "prefix mtu N" for a peer with its own MTU (routeText): as `ip route` takes them. */
  routes: string[];
}

export const EMPTY_ENGINE_STATE: EngineState = Object.freeze({
  privateKey: '', listenPort: 0, addresses: [], peers: [], routes: [],
}) as EngineState;

/** One peer block to write. Fields are present only when they are to be written. */
export interface PeerUpdate {
  publicKey: string;
  /** true: the peer is new. false: it exists and only the listed fields change. */
  create: boolean;
  endpoint?: string;
  persistentKeepaliveS?: number;
  /** The complete new list (WireGuard replaces allowed IPs as a whole). */
  allowedIps?: string[];
}

export interface EngineDiff {
  privateKey?: string;
  listenPort?: number;
  removePeers: string[];
  upsertPeers: PeerUpdate[];
  addAddresses: string[];
  removeAddresses: string[];
  addRoutes: string[];
  removeRoutes: string[];
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortedUnique = (xs: Iterable<string>) => [...new Set(xs)].sort(byText);
const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * The routes an interface needs for its peers: every allowed IP except a
 * default route. A /0 would capture the host's whole traffic (and the tunnel's
 * own packets); full-tunnel mode needs policy routing, which is not this job.
 */
export function routesForPeers(peers: readonly EnginePeerState[]): string[] {
  return sortedUnique(peers.flatMap((p) => p.allowedIps.filter((cidr) => !cidr.endsWith('/0')).map((cidr) => routeText(cidr, p.mtu))));
}

/** A route as the state holds it and `ip route` takes it: the prefix, then its MTU if it has one. */
export function routeText(prefix: string, mtu?: number): string {
  return mtu === undefined ? prefix : `${prefix} mtu ${mtu}`;
}

/** The prefix of a route text. */
export function routePrefix(route: string): string {
  const space = route.indexOf(' ');
  return space < 0 ? route : route.slice(0, space);
}

function isPort(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
}

/**
 * Every apply names every peer, and a peer's key and allowed IPs rarely change: what was
 * already checked is remembered by its text (shared by every engine in the process, so the
 * simulator's thousand agents, which all list the same peers, check each once).
 */
const checkedKeys = new BoundedMap<string, true>(16_384);
const canonicalLists = new BoundedMap<string, string[]>(16_384);

function normalizePeer(p: EnginePeerConfig, index: number): Decoded<EnginePeerState> {
  const where = `peers[${index}]`;
  if (typeof p !== 'object' || p === null) return { ok: false, error: `${where} is not an object` };
  if (!checkedKeys.has(p.publicKey)) {
    if (!decodeKey(p.publicKey)) return { ok: false, error: `${where}.publicKey is not a base64 X25519 key` };
    checkedKeys.set(p.publicKey, true);
  }
  if (!Array.isArray(p.allowedIps)) return { ok: false, error: `${where}.allowedIps is not a list` };
  const text = prefixListKey(p.allowedIps);
  let allowed = text === undefined ? undefined : canonicalLists.get(text);
  if (!allowed) {
    const list: string[] = [];
    for (const cidr of p.allowedIps) {
      const c = canonicalAllowedIp(cidr);
      if (!c) return { ok: false, error: `${where}.allowedIps has a bad prefix ${JSON.stringify(String(cidr)).slice(0, 70)}` };
      list.push(c);
    }
    allowed = sortedUnique(list);
    if (text !== undefined) canonicalLists.set(text, allowed);
  }
  let endpoint: string | undefined;
  if (p.endpoint !== undefined) {
    const ep = parseEndpoint(p.endpoint);
    if (!ep) return { ok: false, error: `${where}.endpoint is not "ip:port"` };
    endpoint = formatEndpoint(ep);
  }
  const keepalive = p.persistentKeepaliveS ?? 0;
  if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > KEEPALIVE_MAX_S) {
    return { ok: false, error: `${where}.persistentKeepaliveS must be an integer 0..${KEEPALIVE_MAX_S}` };
  }
  if (p.mtu !== undefined && (!Number.isInteger(p.mtu) || p.mtu < ROUTE_MTU_MIN || p.mtu > ROUTE_MTU_MAX)) {
    return { ok: false, error: `${where}.mtu must be an integer ${ROUTE_MTU_MIN}..${ROUTE_MTU_MAX}` };
  }
  // `allowed` may be shared with other peers' states and engines: nothing changes one in place.
  return { ok: true, value: { publicKey: p.publicKey, allowedIps: allowed, endpoint, persistentKeepaliveS: keepalive, ...(p.mtu !== undefined && { mtu: p.mtu }) } };
}

/**
 * Validates and normalises a desired config. Errors name the field, never a
 * key's value. Rejected: bad keys, ports, prefixes or endpoints; a peer listed
 * twice; an allowed IP claimed by two peers (WireGuard would give it to
 * whichever was written last, so the result would depend on history); a peer
 * carrying our own public key.
 */
export function normalizeEngineConfig(config: EngineConfig): Decoded<EngineState> {
  if (typeof config !== 'object' || config === null) return { ok: false, error: 'config is not an object' };
  const priv = decodeKey(config.privateKey);
  if (!priv) return { ok: false, error: 'privateKey is not a base64 X25519 key' };
  if (!isPort(config.listenPort)) return { ok: false, error: 'listenPort must be an integer 0..65535' };
  if (!Array.isArray(config.addresses)) return { ok: false, error: 'addresses is not a list' };
  const addresses: string[] = [];
  for (const a of config.addresses) {
    const c = canonicalAddress(a);
    if (!c) return { ok: false, error: `addresses has a bad prefix ${JSON.stringify(String(a)).slice(0, 70)}` };
    addresses.push(c);
  }
  if (!Array.isArray(config.peers)) return { ok: false, error: 'peers is not a list' };
  const ownPublic = encodeKey(publicKeyOf(priv));
  const peers: EnginePeerState[] = [];
  const seenKeys = new Set<string>();
  const claimedBy = new Map<string, number>();
  for (let i = 0; i < config.peers.length; i++) {
    const r = normalizePeer(config.peers[i]!, i);
    if (!r.ok) return r;
    const peer = r.value;
    if (peer.publicKey === ownPublic) return { ok: false, error: `peers[${i}] is this interface's own key` };
    if (seenKeys.has(peer.publicKey)) return { ok: false, error: `peers[${i}] repeats a public key` };
    seenKeys.add(peer.publicKey);
    for (const cidr of peer.allowedIps) {
      const other = claimedBy.get(cidr);
      if (other !== undefined) return { ok: false, error: `allowed IP ${cidr} is claimed by peers[${other}] and peers[${i}]` };
      claimedBy.set(cidr, i);
    }
    peers.push(peer);
  }
  peers.sort((a, b) => byText(a.publicKey, b.publicKey));
  return {
    ok: true,
    value: { privateKey: config.privateKey, listenPort: config.listenPort, addresses: sortedUnique(addresses), peers, routes: routesForPeers(peers) },
  };
}

/**
 * Compares the state an engine holds with the desired state. Returns the diff
 * to write and the state the engine holds once it is written (which differs
 * from `desired` where the rules above keep an old endpoint or listen port).
 */
export function computeEngineDiff(
  current: EngineState,
  desired: EngineState,
  options: ApplyOptions = {},
): { diff: EngineDiff; next: EngineState } {
  const diff: EngineDiff = {
    removePeers: [], upsertPeers: [], addAddresses: [], removeAddresses: [], addRoutes: [], removeRoutes: [],
  };
  if (desired.privateKey !== current.privateKey) diff.privateKey = desired.privateKey;
  // Port 0 asks the engine to choose: whatever port it already has is its choice, so keep it
  // rather than re-randomise (which would break every NAT mapping peers know).
  const listenPort = desired.listenPort === 0 ? current.listenPort : desired.listenPort;
  if (listenPort !== current.listenPort) diff.listenPort = listenPort;

  const had = new Map(current.peers.map((p) => [p.publicKey, p]));
  const want = new Set(desired.peers.map((p) => p.publicKey));
  diff.removePeers = current.peers.filter((p) => !want.has(p.publicKey)).map((p) => p.publicKey);

  const nextPeers: EnginePeerState[] = [];
  for (const d of desired.peers) {
    const old = had.get(d.publicKey);
    const endpoint = d.endpoint ?? old?.endpoint; // undefined = no opinion: keep what the engine has
    nextPeers.push({ ...d, endpoint });
    if (!old) {
      diff.upsertPeers.push({
        publicKey: d.publicKey, create: true, endpoint: d.endpoint, persistentKeepaliveS: d.persistentKeepaliveS, allowedIps: d.allowedIps,
      });
      continue;
    }
    if (options.rehandshake?.has(d.publicKey) && endpoint !== undefined) {
      // Re-created in the same write: removal first, then the whole peer (ApplyOptions.rehandshake).
      diff.removePeers.push(d.publicKey);
      diff.upsertPeers.push({ publicKey: d.publicKey, create: true, endpoint, persistentKeepaliveS: d.persistentKeepaliveS, allowedIps: d.allowedIps });
      continue;
    }
    const u: PeerUpdate = { publicKey: d.publicKey, create: false };
    if (d.endpoint !== undefined && (d.endpoint !== old.endpoint || options.reassertEndpoints)) u.endpoint = d.endpoint;
    else if (options.reassertEndpoints && old.endpoint !== undefined) u.endpoint = old.endpoint;
    if (d.persistentKeepaliveS !== old.persistentKeepaliveS) u.persistentKeepaliveS = d.persistentKeepaliveS;
    if (!sameList(d.allowedIps, old.allowedIps)) u.allowedIps = d.allowedIps;
    if (u.endpoint !== undefined || u.persistentKeepaliveS !== undefined || u.allowedIps !== undefined) diff.upsertPeers.push(u);
  }

  // Sets: a big mesh has a route per peer, and `includes` in a loop made each apply quadratic.
  const diffLists = (from: string[], to: string[]) => {
    const f = new Set(from);
    const t = new Set(to);
    return { add: to.filter((x) => !f.has(x)), remove: from.filter((x) => !t.has(x)) };
  };
  const addrs = diffLists(current.addresses, desired.addresses);
  diff.addAddresses = addrs.add;
  diff.removeAddresses = addrs.remove;
  const routes = diffLists(current.routes, desired.routes);
  diff.addRoutes = routes.add;
  // A route whose MTU changed is replaced in place (`route replace`): deleting it first would
  // leave its prefix to the default route, outside the tunnel, for a moment.
  const added = new Set(routes.add.map(routePrefix));
  diff.removeRoutes = routes.remove.filter((r) => !added.has(routePrefix(r)));

  const next: EngineState = {
    privateKey: desired.privateKey,
    listenPort,
    addresses: [...desired.addresses],
    peers: nextPeers,
    routes: [...desired.routes],
  };
  return { diff, next };
}

/** An endpoint as an engine reports it, canonical; a v6 zone ("[fe80::1%eth0]:51820") is local detail and dropped. */
export function endpointFromEngine(text: string): string | undefined {
  const ep = parseEndpoint(text.replace(/%[^\]]*\]/, ']'));
  return ep && formatEndpoint(ep);
}

/** What an engine reported, in the normalised form the diff compares (peers sorted, allowed IPs sorted and unique). */
export function stateFromReadBack(s: EngineState): EngineState {
  const peers = s.peers
    .map((p) => ({ ...p, allowedIps: sortedUnique(p.allowedIps) }))
    .sort((a, b) => byText(a.publicKey, b.publicKey));
  return { ...s, addresses: sortedUnique(s.addresses), peers, routes: sortedUnique(s.routes) };
}

/** Whether the diff writes anything to WireGuard itself (keys, port, peers). */
export function diffTouchesWireGuard(d: EngineDiff): boolean {
  return d.privateKey !== undefined || d.listenPort !== undefined || d.removePeers.length > 0 || d.upsertPeers.length > 0;
}

/** Whether the diff changes interface addresses or routes. */
export function diffTouchesInterface(d: EngineDiff): boolean {
  return d.addAddresses.length + d.removeAddresses.length + d.addRoutes.length + d.removeRoutes.length > 0;
}

export function isEmptyDiff(d: EngineDiff): boolean {
  return !diffTouchesWireGuard(d) && !diffTouchesInterface(d);
}

/** The family of a canonical prefix (only IPv6 text holds a colon). */
export function familyOfPrefix(prefix: string): IpFamily {
  return prefix.includes(':') ? 6 : 4;
}

/** Whether the diff adds an interface address or route of `family`. */
export function diffAddsFamily(d: EngineDiff, family: IpFamily): boolean {
  return d.addAddresses.some((a) => familyOfPrefix(a) === family) || d.addRoutes.some((r) => familyOfPrefix(r) === family);
}

/**
 * The state an engine holds after a push that skipped whole families (the host has them
 * switched off): `next` without the addresses and routes of those families that the diff
 * added. Left out of the held state, they are in the next diff again: pending, not lost.
 */
export function withoutSkippedAdditions(next: EngineState, d: EngineDiff, families: readonly IpFamily[]): EngineState {
  if (families.length === 0) return next;
  const skipped = new Set([...d.addAddresses, ...d.addRoutes].filter((x) => families.includes(familyOfPrefix(x))));
  return { ...next, addresses: next.addresses.filter((a) => !skipped.has(a)), routes: next.routes.filter((r) => !skipped.has(r)) };
}

/** Counts for a log line: never keys, never endpoints. */
export function summarizeDiff(d: EngineDiff): Record<string, number | boolean> {
  return {
    key: d.privateKey !== undefined,
    port: d.listenPort ?? false,
    peersAdded: d.upsertPeers.filter((u) => u.create).length,
    peersChanged: d.upsertPeers.filter((u) => !u.create).length,
    peersRemoved: d.removePeers.length,
    addresses: d.addAddresses.length + d.removeAddresses.length,
    routes: d.addRoutes.length + d.removeRoutes.length,
  };
}
