/**
 * Path choice between disco and the relay, sans-I/O. Disco (agent/disco/)
 * says whether a lan/direct path is confirmed; the relay client (core.ts)
 * keeps a relay port bound for every peer that needs one. This decides, per
 * peer, what the engine is given and what `knit status` shows:
 *
 *   disco lan/direct (confirmed by pong) ──► that path
 *   otherwise, relay bound               ──► relay (WireGuard talks to relay:port)
 *   otherwise                            ──► none
 *
 * A peer needs the relay while it has no confirmed lan/direct path, is online
 * with a known disco key, and is punched at all (small meshes: always; big ones:
 * while wanted — the same on-demand rule as disco). Disco keeps probing in the
 * background, so a relayed peer moves to direct at the first pong, and back to
 * the relay when the direct path dies (the relay port is kept bound for
 * RELAY_KEEP_MS after the relay was last needed, so falling back is instant).
 * When UDP to the relay fails, the relay path is the relay's WebSocket
 * (endpoint RELAY_WS_ENDPOINT; the shell gives WireGuard a loopback stand-in).
 */
import type { UdpEndpoint } from '../../shared/udp.js';
import type { PathKind } from '../status.js';
import { choosePath, RELAY_WS_ENDPOINT, RelayClient, type RelayClientAction, type RelayClientOptions, type RelayTarget } from './core.js';

/** How long a sign of demand (traffic, a ping) keeps a peer wanted in a big mesh (as disco's WANT_TTL_MS). */
export const RELAY_WANT_TTL_MS = 120_000;

/** A peer as the map has it (the agent passes its PeerInfo objects: unchanged ones keep their identity). discoKey '' = never connected. */
export interface RelayPeerInput { nodeKey: string; online: boolean; discoKey: string }

export type RelayPathsEvent =
  | { type: 'relays'; relays: RelayTarget[] }
  | { type: 'peers'; peers: RelayPeerInput[] }
  | { type: 'disco-path'; nodeKey: string; kind: PathKind; endpoint?: string }
  | { type: 'want'; nodeKey: string }
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'network-changed' }
  | { type: 'tick' }
  /** The relay's WebSocket (the fallback when UDP to the relay fails): see core.ts. */
  | { type: 'ws-open' }
  | { type: 'ws-frame'; bytes: Uint8Array }
  | { type: 'ws-closed' };

export type RelayPathsAction =
  | Exclude<RelayClientAction, { type: 'relay-endpoint' }>
  /** The path the engine should use changed (kind and/or endpoint): re-apply the engine config. */
  | { type: 'path'; nodeKey: string; from: PathKind; to: PathKind; endpoint?: string };

interface PeerState {
  input: RelayPeerInput;
  disco: { kind: PathKind; endpoint?: string };
  relay?: string;
  relaySince: number;
  wantedUntil: number;
  last: { kind: PathKind; endpoint?: string };
}

export class RelayPaths {
  readonly client: RelayClient;
  private readonly peers = new Map<string, PeerState>();

  constructor(o: RelayClientOptions, private readonly eagerLimit: number) {
    this.client = new RelayClient(o);
  }

  /** The path for a peer now: what the engine gets and status shows. */
  path(nodeKey: string): { kind: PathKind; endpoint?: string } {
    const p = this.peers.get(nodeKey);
    return p ? choosePath(p.disco, p.relay) : { kind: 'none' };
  }

  /** How a relayed peer's packets travel: 'ws' while carried over the relay's WebSocket; undefined when not relayed. */
  transport(nodeKey: string): 'udp' | 'ws' | undefined {
    const p = this.path(nodeKey);
    if (p.kind !== 'relay') return undefined;
    return p.endpoint === RELAY_WS_ENDPOINT ? 'ws' : 'udp';
  }

  /** Peers whose relay path is the WebSocket now (each needs a loopback stand-in). */
  wsPeers(): string[] {
    return [...this.peers.keys()].filter((k) => this.transport(k) === 'ws');
  }

  /** When the relay path to this peer was bound (for the anti-stall wait). */
  relaySince(nodeKey: string): number {
    return this.peers.get(nodeKey)?.relaySince ?? -Infinity;
  }

  /** The shell's own relay endpoints (the WebSocket bridge's loopback stand-ins), also no direct path. */
  alsoRelayEndpoint?: (endpoint: string) => boolean;

  /** Whether WireGuard's endpoint for a peer is a relay's (a relay port or a WebSocket stand-in): never evidence of a direct path. */
  isRelayEndpoint(endpoint: string | undefined): boolean {
    return this.client.isRelayEndpoint(endpoint) || (endpoint !== undefined && this.alsoRelayEndpoint?.(endpoint) === true);
  }

  nextWakeup(): number | undefined {
    return this.client.nextWakeup();
  }

  handle(e: RelayPathsEvent, now: number): RelayPathsAction[] {
    const out: RelayPathsAction[] = [];
    const touched = new Set<PeerState>();
    const run = (acts: RelayClientAction[]) => {
      for (const a of acts) {
        if (a.type !== 'relay-endpoint') {
          out.push(a);
          continue;
        }
        const p = this.peers.get(a.nodeKey);
        if (!p) continue;
        p.relay = a.endpoint;
        if (a.endpoint) p.relaySince = now;
        touched.add(p);
      }
    };
    switch (e.type) {
      case 'relays':
        run(this.client.handle(e, now));
        for (const p of this.peers.values()) touched.add(p);
        break;
      case 'peers': {
        const keep = new Set<string>();
        for (const input of e.peers) {
          keep.add(input.nodeKey);
          const p = this.peers.get(input.nodeKey);
          if (!p) {
            const fresh: PeerState = { input, disco: { kind: 'none' }, relaySince: -Infinity, wantedUntil: -Infinity, last: { kind: 'none' } };
            this.peers.set(input.nodeKey, fresh);
            touched.add(fresh);
          } else if (p.input !== input) { // the same object is the same peer, unchanged since the last map
            p.input = input;
            touched.add(p);
          }
        }
        for (const k of this.peers.keys()) if (!keep.has(k)) this.peers.delete(k);
        run(this.client.handle({ type: 'peers', nodeKeys: [...keep] }, now));
        break;
      }
      case 'disco-path': {
        const p = this.peers.get(e.nodeKey);
        if (!p) break;
        p.disco = { kind: e.kind, endpoint: e.endpoint };
        touched.add(p);
        break;
      }
      case 'want': {
        const p = this.peers.get(e.nodeKey);
        if (!p) break;
        p.wantedUntil = now + RELAY_WANT_TTL_MS;
        touched.add(p);
        break;
      }
      default:
        run(this.client.handle(e, now));
    }
    // Needs first (they may send allocs), then what changed for the engine.
    for (const p of touched) run(this.client.handle({ type: 'need', nodeKey: p.input.nodeKey, needed: this.needs(p, now) }, now));
    for (const p of touched) this.notePath(p, out);
    return out;
  }

  private needs(p: PeerState, now: number): boolean {
    const direct = p.disco.kind === 'lan' || p.disco.kind === 'direct';
    const punched = this.peers.size <= this.eagerLimit || now < p.wantedUntil;
    return !direct && p.input.online && p.input.discoKey !== '' && punched;
  }

  private notePath(p: PeerState, out: RelayPathsAction[]): void {
    const now = choosePath(p.disco, p.relay);
    if (now.kind === p.last.kind && now.endpoint === p.last.endpoint) return;
    out.push({ type: 'path', nodeKey: p.input.nodeKey, from: p.last.kind, to: now.kind, endpoint: now.endpoint });
    p.last = now;
  }
}
