// @ts-check
/**
 * The console's model of the mesh, pure: the live feed's messages in, plain
 * data out. No DOM, no fetch, no clock — `now` is a parameter — so Node's test
 * runner checks it directly (test/coordinator/ui/model.test.ts).
 *
 * Feed messages (docs/console.md): `state` replaces everything, `delta` is the
 * agents' own peer-map delta (upsert / remove / endpoints / online / disco, each
 * a "set"), `paths` replaces one node's path report.
 */

/**
 * @typedef {{ id: number, name: string, nodeKey: string, discoKey: string, addresses: string[],
 *   endpoints: string[], natType: string, online: boolean, lastSeen: number, tags: string[] }} PeerInfo
 * @typedef {{ from: number, to: number, kind: 'lan' | 'direct' | 'relay' | 'none', rttMs?: number,
 *   lastHandshake: number, reportedAt: number, handshaking?: true }} PathEdge
 * @typedef {{ version: number, nodes: Map<number, PeerInfo>, paths: Map<number, PathEdge[]> }} Model
 */

export const PATH_KINDS = /** @type {const} */ (['lan', 'direct', 'relay', 'none']);

/** The matrix shows at most this many nodes (online first): a bigger grid is unreadable anyway. */
export const MATRIX_MAX_NODES = 48;

/** @returns {Model} */
export function createModel() {
  return { version: 0, nodes: new Map(), paths: new Map() };
}

/**
 * Applies one feed message. Returns what changed ('nodes', 'paths') so the view
 * redraws only that, or 'resync' when a delta doesn't follow the version we hold
 * (the caller reconnects and gets a fresh state, as agents do).
 * @param {Model} m
 * @param {any} msg
 * @returns {Set<'nodes' | 'paths' | 'resync' | 'joined'>}
 */
export function applyMessage(m, msg) {
  /** @type {Set<'nodes' | 'paths' | 'resync' | 'joined'>} */
  const changed = new Set();
  if (!msg || typeof msg !== 'object') return changed;
  if (msg.type === 'state') {
    m.version = msg.version;
    m.nodes = new Map((msg.nodes ?? []).map((/** @type {PeerInfo} */ p) => [p.id, p]));
    m.paths = new Map();
    for (const e of msg.paths ?? []) {
      const list = m.paths.get(e.from) ?? [];
      list.push(e);
      m.paths.set(e.from, list);
    }
    changed.add('nodes').add('paths');
  } else if (msg.type === 'delta') {
    if (msg.from !== m.version) return changed.add('resync');
    m.version = msg.version;
    for (const c of msg.changes ?? []) {
      if (c.op === 'upsert') {
        if (!m.nodes.has(c.peer.id)) changed.add('joined');
        m.nodes.set(c.peer.id, c.peer);
      } else if (c.op === 'remove') {
        m.nodes.delete(c.id);
        m.paths.delete(c.id);
        changed.add('paths');
      } else {
        const p = m.nodes.get(c.id);
        if (!p) continue;
        if (c.op === 'endpoints') m.nodes.set(c.id, { ...p, endpoints: c.endpoints, natType: c.natType });
        else if (c.op === 'online') m.nodes.set(c.id, { ...p, online: c.online, lastSeen: c.lastSeen });
        else if (c.op === 'disco') m.nodes.set(c.id, { ...p, discoKey: c.discoKey });
      }
    }
    changed.add('nodes');
  } else if (msg.type === 'paths') {
    m.paths.set(msg.node, msg.edges ?? []);
    changed.add('paths');
  }
  return changed;
}

/**
 * Nodes in display order: online first, then by name (then id, names being unique anyway).
 * @param {Model} m
 * @returns {PeerInfo[]}
 */
export function sortedNodes(m) {
  return [...m.nodes.values()].sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name) || a.id - b.id);
}

/**
 * The connectivity matrix: rows are reporters, columns peers; a cell is that
 * reporter's last word on its path to the peer, or undefined (no report yet).
 * @param {Model} m
 * @param {number} [limit]
 * @returns {{ nodes: PeerInfo[], hidden: number, cell: (from: number, to: number) => PathEdge | undefined }}
 */
export function matrix(m, limit = MATRIX_MAX_NODES) {
  const all = sortedNodes(m);
  const nodes = all.slice(0, limit);
  /** @type {Map<string, PathEdge>} */
  const cells = new Map();
  for (const [from, edges] of m.paths) for (const e of edges) cells.set(`${from}>${e.to}`, e);
  return { nodes, hidden: all.length - nodes.length, cell: (from, to) => cells.get(`${from}>${to}`) };
}

/**
 * Counts of reported paths by kind, each pair once (the better of the two views of it).
 * @param {Model} m
 * @returns {Record<'lan' | 'direct' | 'relay' | 'none', number>}
 */
export function pathCounts(m) {
  const rank = { lan: 0, direct: 1, relay: 2, none: 3 };
  /** @type {Map<string, 'lan' | 'direct' | 'relay' | 'none'>} */
  const best = new Map();
  for (const [from, edges] of m.paths) {
    if (!m.nodes.has(from)) continue;
    for (const e of edges) {
      if (!m.nodes.has(e.to)) continue;
      const key = from < e.to ? `${from}-${e.to}` : `${e.to}-${from}`;
      const had = best.get(key);
      if (had === undefined || rank[e.kind] < rank[had]) best.set(key, e.kind);
    }
  }
  const out = { lan: 0, direct: 0, relay: 0, none: 0 };
  for (const k of best.values()) out[k]++;
  return out;
}

/**
 * "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for 0.
 * @param {number} at wall ms
 * @param {number} now wall ms
 */
export function ago(at, now) {
  if (!at) return 'never';
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/**
 * "in 23 h", "in 6 d", "expired", "never".
 * @param {number | null} at wall ms or null
 * @param {number} now
 */
export function until(at, now) {
  if (at === null || at === undefined) return 'never';
  const s = Math.round((at - now) / 1000);
  if (s <= 0) return 'expired';
  if (s < 3600) return `in ${Math.max(1, Math.floor(s / 60))} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  return `in ${Math.floor(s / 86400)} d`;
}

/** @param {number | undefined} ms */
export function formatRtt(ms) {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return '';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/**
 * A token's state as people read it.
 * @param {{ revoked: boolean, expires: number | null, usesLeft: number | null }} t
 * @param {number} now
 * @returns {'revoked' | 'expired' | 'used' | 'active'}
 */
export function tokenStatus(t, now) {
  if (t.revoked) return 'revoked';
  if (t.expires !== null && t.expires <= now) return 'expired';
  if (t.usesLeft !== null && t.usesLeft <= 0) return 'used';
  return 'active';
}

/**
 * The body of POST /v1/admin/tokens from the form's values, or an error message.
 * @param {{ reusable: boolean, uses: string, ephemeral: boolean, expires: string, tags: string }} f
 * @returns {{ ok: true, body: Record<string, unknown> } | { ok: false, error: string }}
 */
export function tokenRequest(f) {
  /** @type {Record<string, unknown>} */
  const body = {};
  if (f.reusable) body.reusable = true;
  if (f.ephemeral) body.ephemeral = true;
  const uses = f.uses.trim();
  if (uses !== '') {
    if (!f.reusable) return { ok: false, error: 'A use limit only applies to reusable tokens.' };
    if (!/^[0-9]{1,7}$/.test(uses) || Number(uses) < 1 || Number(uses) > 1_000_000) return { ok: false, error: 'Uses must be a whole number from 1 to 1,000,000.' };
    body.uses = Number(uses);
  }
  if (f.expires !== 'never') {
    const s = Number(f.expires);
    if (!Number.isInteger(s) || s < 1 || s > 365 * 86400) return { ok: false, error: 'Pick an expiry of at most 365 days.' };
    body.expiresInS = s;
  }
  const tags = f.tags.split(/[\s,]+/).filter(Boolean);
  for (const t of tags) if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(t)) return { ok: false, error: `Tag "${t.slice(0, 40)}" must be lower-case letters, digits, _ or - (at most 32).` };
  if (tags.length > 16) return { ok: false, error: 'At most 16 tags.' };
  if (tags.length > 0) body.tags = [...new Set(tags)];
  return { ok: true, body };
}
