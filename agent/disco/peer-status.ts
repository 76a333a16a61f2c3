/**
 * What the disco core reports about a peer for status and logs: its path and,
 * when it has none, why — said as the cause a person can act on (a NAT pair
 * that needs a relay, a firewall, a peer that never connected, on-demand
 * punching in a big mesh), not as the path machine's state.
 */
import type { NatType } from '../../shared/wire/control.js';
import type { PathKind } from '../status.js';
import { quietActive } from './quiet-punch.js';
import { hardNatRole } from './hard-nat.js';
import type { Peer } from './peer.js';
import { pathKind } from './peer-path.js';

export interface DiscoPeerStatus {
  nodeKey: string;
  name: string;
  path: PathKind;
  endpoint?: string;
  rttMs?: number;
  lastPongAt?: number;
  candidates: number;
  /** The largest underlay packet proven both ways on the path (path-mtu.ts); undefined until proven. */
  pathMtu?: number;
  why?: string;
}

/** What explaining a missing path needs to know beyond the peer itself. */
export interface NoPathContext {
  selfNatType: NatType;
  peerCount: number;
  /** The time of the core's latest event: the clock the peer's timers last ran on. */
  lastNow: number;
  /** Whether the core's punching policy has this peer punched (in a big mesh, only while wanted). */
  active: (p: Peer) => boolean;
}

export function describePeer(p: Peer, now: number, context: NoPathContext): DiscoPeerStatus {
  const path = pathKind(p.path, now);
  const best = p.path.best && p.path.candidates.get(p.path.best.key);
  return {
    nodeKey: p.input.nodeKey, name: p.input.name, path,
    endpoint: path !== 'none' ? best?.key : undefined, rttMs: path !== 'none' ? best?.rttMs : undefined,
    lastPongAt: best && Number.isFinite(best.lastPongAt) ? best.lastPongAt : undefined,
    candidates: p.path.candidates.size,
    pathMtu: path !== 'none' ? p.mtu.provenBytes : undefined,
    why: path === 'none' ? explainNoPath(p, context) : undefined,
  };
}

/** A sentence a person can act on, for a peer without a path. */
function explainNoPath(p: Peer, context: NoPathContext): string {
  const { selfNatType, lastNow } = context;
  if (!p.discoPub) return 'the peer has never connected to the coordinator, so its keys and endpoints are unknown';
  if (p.path.candidates.size === 0) {
    return p.input.online ? 'the peer has not reported any endpoints yet' : 'the peer is offline and no endpoint of it is known';
  }
  const tried = p.path.candidates.size;
  if (p.path.pingsSent === 0 && !context.active(p)) {
    return `not punched yet: with ${context.peerCount} peers, paths are made on demand (traffic to the peer, knit ping, or the peer reaching out)`;
  }
  if (selfNatType === 'blocked' || p.input.natType === 'blocked') return 'UDP is blocked on one side; a relay is needed';
  if (selfNatType === 'endpoint-dependent' && p.input.natType === 'endpoint-dependent') {
    return 'both sides map endpoint-dependently (symmetric NAT), so hole punching cannot work; a relay is needed';
  }
  if (!p.input.online) return `the peer is offline (coordinator) and none of its ${tried} known endpoints answered`;
  if (quietActive(p.quiet)) {
    return `a router on the way answers unsolicited packets itself and keeps them, which blocks the punch; waiting out its connection tracking (30 s) to punch again in order (${p.quiet.role}, round ${p.quiet.rounds}). The relay carries traffic meanwhile`;
  }
  const role = hardNatRole(selfNatType, p.input.natType);
  if (role && p.hardNat.attempts > 0) {
    const next = p.hardNat.nextAttemptAt !== undefined ? `; next attempt in ${Math.max(0, Math.round((p.hardNat.nextAttemptAt - lastNow) / 1000))} s` : '';
    return `${role === 'hard' ? 'our' : "the peer's"} NAT maps endpoint-dependently; port prediction / birthday probing found no port yet (${p.hardNat.attempts} attempt(s)${next}). The relay carries traffic meanwhile`;
  }
  if (selfNatType === 'endpoint-dependent' || p.input.natType === 'endpoint-dependent') {
    const who = selfNatType === 'endpoint-dependent' ? 'our NAT maps' : "the peer's NAT maps";
    return `${who} endpoint-dependently (symmetric NAT), so punching works only if the other NAT accepts any port from this address; it didn't answer (${tried} candidates tried). A relay is needed`;
  }
  return `no candidate answered (${tried} tried, ${p.path.pingsSent} pings): a firewall may drop UDP on port ${p.input.endpoints[0]?.split(':').pop() ?? '?'}, or the peer's agent is not running`;
}
