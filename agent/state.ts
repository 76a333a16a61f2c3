/**
 * The agent's state directory: identity and what it needs to come back after
 * a restart without the coordinator.
 *
 *   node.key      the node's X25519 private key (base64, mode 0600) — the WireGuard key
 *   node.json     coordinator URL + pinned key, node id, name, mesh addresses (0600)
 *   netmap.json   the last peer map, so cached peers are reachable while the coordinator is down
 *   knit.sock     the local API (unix socket; see api/server.ts)
 *
 * The disco key is deliberately not stored: it is new at every start, so
 * peers see a restart as a new disco key (DESIGN.md, Identities).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeKey, encodeKey, generateKeyPair, publicKeyOf } from '../shared/crypto/keys.js';
import { KnitError } from '../shared/errors.js';
import { decodeServerMessage } from '../shared/wire/control.js';
import { applySnapshot, emptyNetmap, netmapToJson, type Netmap } from './control/netmap.js';

export interface NodeIdentity {
  privateKey: Uint8Array;
  publicKey: string;
}

export interface NodeRecord {
  coordinatorUrl: string;
  coordinatorKey: string;
  id: number;
  name: string;
  addresses: string[];
  ipv4Prefix: string;
  ipv6Prefix: string;
}

export const DEFAULT_STATE_DIR = '/var/lib/knit';

export function socketPath(stateDir: string): string {
  return join(stateDir, 'knit.sock');
}

/** Writes a file atomically (temp + rename) with mode 0600, so a crash never leaves half a key. */
function writePrivate(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Loads the node key, creating it on first use. */
export function loadOrCreateIdentity(dir: string): NodeIdentity {
  ensureStateDir(dir);
  const path = join(dir, 'node.key');
  if (existsSync(path)) {
    const priv = decodeKey(readFileSync(path, 'utf8').trim());
    if (!priv) throw new KnitError('KNIT_ERR_BAD_REQUEST', `${path} does not hold a valid key`);
    return { privateKey: priv, publicKey: encodeKey(publicKeyOf(priv)) };
  }
  const kp = generateKeyPair();
  writePrivate(path, encodeKey(kp.privateKey) + '\n');
  return { privateKey: kp.privateKey, publicKey: encodeKey(kp.publicKey) };
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

export function loadNodeRecord(dir: string): NodeRecord | undefined {
  const v = readJson(join(dir, 'node.json')) as NodeRecord | undefined;
  if (!v || typeof v.coordinatorUrl !== 'string' || typeof v.coordinatorKey !== 'string' || !Number.isSafeInteger(v.id)) return undefined;
  if (!Array.isArray(v.addresses)) return undefined;
  return v;
}

export function saveNodeRecord(dir: string, rec: NodeRecord): void {
  writePrivate(join(dir, 'node.json'), JSON.stringify(rec, null, 2) + '\n');
}

export function loadCachedNetmap(dir: string, selfId: number): Netmap {
  const v = readJson(join(dir, 'netmap.json')) as { version?: unknown; selfId?: unknown; peers?: unknown } | undefined;
  if (!v || v.selfId !== selfId || !Number.isSafeInteger(v.version) || !Array.isArray(v.peers)) return emptyNetmap(selfId);
  // The file is input too: it goes through the same validation as a snapshot from the wire.
  const d = decodeServerMessage(JSON.stringify({ type: 'snapshot', version: v.version, peers: v.peers }));
  if (!d.ok || d.value.type !== 'snapshot') return emptyNetmap(selfId);
  return applySnapshot(emptyNetmap(selfId), d.value);
}

export function saveCachedNetmap(dir: string, map: Netmap): void {
  writePrivate(join(dir, 'netmap.json'), JSON.stringify(netmapToJson(map)) + '\n');
}
