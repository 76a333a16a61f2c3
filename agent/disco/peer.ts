/**
 * One peer as the disco core holds it: the peer map's entry plus what has been
 * learned since — its keys, its path state (peer-path.ts), its hard-NAT state
 * (hard-nat.ts) and how much it is wanted. The core and its helper modules
 * share this record; the rules that change it live with them, not here.
 */
import type { PathKind } from '../status.js';
import type { DiscoPeerInput } from './events.js';
import { newHardNatState, type HardNatState } from './hard-nat.js';
import { newPeerPath, type PeerPathState } from './peer-path.js';
import { newPathMtu, type PathMtuState } from './path-mtu.js';
import { newQuietPunch, type QuietPunchState } from './quiet-punch.js';

export interface Peer {
  /** The epoch of the newest disco-key announcement adopted from this peer: older ones are replays. */
  announcedEpoch?: number;
  input: DiscoPeerInput;
  discoPub?: Uint8Array;
  /** The disco box key, derived on first use (an X25519 per peer is the cost of a big map). */
  sharedKey?: Uint8Array;
  /** The key for node-sealed packets with this peer (X25519 of the node keys), derived on first use. */
  nodeBoxKey?: Uint8Array;
  /** In a big mesh, a peer is punched only while wanted (traffic, a ping, the peer calling us). */
  wantedUntil: number;
  path: PeerPathState;
  lastCallMeMaybeAt: number;
  lastKind: PathKind;
  lastHandshakeMs: number;
  /** Port prediction / birthday probing towards this peer (hard-nat.ts). */
  hardNat: HardNatState;
  /** What the chosen path carries (path-mtu.ts). */
  mtu: PathMtuState;
  /** Punching past routers whose own stack takes unsolicited packets (quiet-punch.ts). */
  quiet: QuietPunchState;
  /** When this peer's timers want to run (cached), and a generation that invalidates stale heap entries. */
  wake?: number;
  wakeGen: number;
}

/** A peer just seen in the map: no keys derived, no path, never wanted. */
export function newPeer(input: DiscoPeerInput): Peer {
  return { input, path: newPeerPath(), lastCallMeMaybeAt: -Infinity, lastKind: 'none', lastHandshakeMs: 0, hardNat: newHardNatState(), mtu: newPathMtu(), quiet: newQuietPunch(), wakeGen: 0, wantedUntil: -Infinity };
}
