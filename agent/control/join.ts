/**
 * One-token enrollment from the agent's side: POST /v1/join with the node's
 * public keys, then check that the answer carries a proof only the holder of
 * the coordinator key pinned in the token can make.
 */
import { KnitError, ERROR_TABLE, type KnitErrorCode } from '../../shared/errors.js';
import { parseToken, type ParsedToken } from '../../shared/token.js';
import { joinProof, proofsEqual, type JoinRequest, type JoinResponse } from '../../shared/wire/control.js';

export type JoinHttp = (url: string, body: JoinRequest) => Promise<{ status: number; json: unknown }>;

export const fetchJoinHttp: JoinHttp = async (url, body) => {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new KnitError('KNIT_ERR_UNREACHABLE', `cannot reach the coordinator at ${new URL(url).origin}`, { cause: err });
  }
  const json = await res.json().catch(() => undefined);
  return { status: res.status, json };
};

export function parseJoinToken(text: string): ParsedToken {
  const t = parseToken(text.trim());
  if (!t || t.kind !== 'join') throw new KnitError('KNIT_ERR_TOKEN_INVALID', 'that is not a Knit join token (it should start with knit_)');
  return t;
}

function isJoinResponse(v: unknown): v is JoinResponse {
  const r = v as JoinResponse;
  return !!r && typeof r === 'object' && !!r.node && Number.isSafeInteger(r.node.id) && typeof r.node.name === 'string' &&
    Array.isArray(r.node.addresses) && r.node.addresses.every((a) => typeof a === 'string') &&
    !!r.mesh && typeof r.mesh.ipv4Prefix === 'string' && typeof r.coordinatorProof === 'string' && typeof r.coordinatorKey === 'string';
}

export async function joinMesh(
  token: ParsedToken,
  rawToken: string,
  node: { privateKey: Uint8Array; publicKey: string; discoKey: string; hostname: string },
  http: JoinHttp = fetchJoinHttp,
): Promise<JoinResponse> {
  const { status, json } = await http(`${token.url}/v1/join`, {
    token: rawToken.trim(), nodeKey: node.publicKey, discoKey: node.discoKey, hostname: node.hostname,
  });
  if (status !== 200) {
    const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    const code = (err?.code && err.code in ERROR_TABLE ? err.code : 'KNIT_ERR_INTERNAL') as KnitErrorCode;
    throw new KnitError(code, `join refused: ${err?.message ?? `HTTP ${status}`}`);
  }
  if (!isJoinResponse(json)) throw new KnitError('KNIT_ERR_PROTOCOL', 'the coordinator sent a malformed join answer');
  const want = joinProof(node.privateKey, token.coordinatorKey, node.publicKey, json.node.id, json.node.addresses);
  if (!want || json.coordinatorKey !== token.coordinatorKey || !proofsEqual(json.coordinatorProof, want)) {
    throw new KnitError('KNIT_ERR_COORDINATOR_KEY', 'the server did not prove the coordinator key pinned in the token; refusing to join');
  }
  return json;
}

/** A hostname acceptable to the coordinator, derived from the machine's. */
export function sanitizeHostname(name: string): string {
  const s = name.toLowerCase().split('.')[0]!.replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return s || 'node';
}
