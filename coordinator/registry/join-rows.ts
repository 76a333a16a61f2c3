/**
 * One join's rows, inside the caller's write transaction: the token checked
 * and its use taken, a unique name, an address from the mesh prefix, the node
 * inserted. Plus the prefix rules the mesh is created with. Every check reads
 * the store under its write lock, so it holds across replicas (registry.ts
 * runs this in a savepoint per join of a group commit).
 */
import { equalBytes, sha256Hex } from '../../shared/crypto/seal.js';
import { KnitError } from '../../shared/errors.js';
import { intToIpv4, parseIpv4Prefix, prefixHost, prefixHostCount, ulaHost, type Ipv4Prefix } from '../../shared/net/cidr.js';
import type { ParsedToken } from '../../shared/token.js';
import { MAX_HOSTNAME_LEN, type JoinRequest, type NatType } from '../../shared/wire/control.js';
import type { NodeRow, StoreTx } from '../store/store.js';

/**
 * The default mesh prefix: a /16 in the middle of RFC 6598 shared space (as
 * Tailscale uses 100.64.0.0/10). 65,534 nodes is far beyond the meshes Knit
 * aims at, and staying away from the bottom of 100.64.0.0/10 — where carriers
 * number their CGNAT gateways and customers — keeps a peer's /32 route from
 * shadowing an address the host needs on its own uplink.
 */
export const DEFAULT_IPV4_PREFIX = '100.96.0.0/16';

/** The canonical text of a prefix given on the command line ("10.1.2.3/16" → "10.1.0.0/16"), or undefined. */
export function canonicalIpv4Prefix(text: string): string | undefined {
  const p = parseIpv4Prefix(text);
  return p && `${intToIpv4(p.base)}/${p.bits}`;
}

/** What a join needs of the mesh: its prefixes, and per hostname the next -N suffix worth trying. */
export interface JoinMesh {
  ipv4Prefix: Ipv4Prefix;
  ulaPrefix: string;
  nameHints: Map<string, number>;
}

/** The token checked and used, the node inserted (or found: a known node key consumes nothing). */
export async function joinRow(tx: StoreTx, mesh: JoinMesh, req: JoinRequest, t: ParsedToken, now: number): Promise<{ row: NodeRow; created: boolean }> {
  const tok = await tx.token(t.id);
  if (!tok || tok.revoked || !equalBytes(Buffer.from(tok.secretHash, 'hex'), Buffer.from(sha256Hex(t.secret), 'hex'))) {
    throw new KnitError('KNIT_ERR_TOKEN_INVALID');
  }
  if (tok.expires !== null && now >= tok.expires) throw new KnitError('KNIT_ERR_TOKEN_EXPIRED');
  const existing = await tx.nodeByKey(req.nodeKey);
  if (existing) return { row: existing, created: false };
  // The use is taken by one conditional update: the database, not this process, says who got it.
  if (!await tx.useToken(tok.id)) throw new KnitError('KNIT_ERR_TOKEN_USED');
  const ipIndex = await allocateIpIndex(tx, mesh.ipv4Prefix);
  const fields = {
    nodeKey: req.nodeKey, discoKey: req.discoKey ?? '', name: await uniqueName(tx, mesh.nameHints, req.hostname), ipIndex,
    ipv4: prefixHost(mesh.ipv4Prefix, ipIndex), ipv6: ulaHost(mesh.ulaPrefix, ipIndex + 1), tags: tok.tags,
    ephemeral: tok.ephemeral, created: now, lastSeen: Math.floor(now), tokenId: tok.id,
  };
  const id = await tx.insertNode(fields);
  return { row: { ...fields, id, endpoints: [], natType: 'unknown' as NatType, onlineReplica: null }, created: true };
}

/** The hostname, or hostname-2, -3, … when taken; names stay valid hostnames (≤ 63 characters). */
async function uniqueName(tx: StoreTx, hints: Map<string, number>, hostname: string): Promise<string> {
  const base = hostname.toLowerCase();
  if (!await tx.nameTaken(base)) return base;
  for (let i = hints.get(base) ?? 2; ; i++) {
    const suffix = `-${i}`;
    const name = base.slice(0, MAX_HOSTNAME_LEN - suffix.length) + suffix;
    if (!await tx.nameTaken(name)) {
      hints.set(base, i + 1);
      return name;
    }
  }
}

/** A freed address index, else the next fresh one; KNIT_ERR_ADDRESS_EXHAUSTED past the prefix. */
async function allocateIpIndex(tx: StoreTx, prefix: Ipv4Prefix): Promise<number> {
  const reused = await tx.takeFreeIpIndex();
  if (reused !== undefined) return reused;
  const next = await tx.bumpMeta('next_ip_index');
  if (next >= prefixHostCount(prefix)) throw new KnitError('KNIT_ERR_ADDRESS_EXHAUSTED');
  return next;
}
