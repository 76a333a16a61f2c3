/**
 * The agent's copy of the peer map, and the pure reducer that applies the
 * coordinator's snapshots and deltas to it. A delta whose `from` is not the
 * version we hold is refused (the caller reconnects and asks again), so the
 * map can never silently drift from the coordinator's.
 */
import type { DeltaMsg, PeerChange, PeerInfo, SnapshotMsg } from '../../shared/wire/control.js';

export interface Netmap {
  version: number;
  selfId: number;
  peers: Map<number, PeerInfo>; // every node but ourselves
}

export function emptyNetmap(selfId = -1): Netmap {
  return { version: 0, selfId, peers: new Map() };
}

export function applySnapshot(map: Netmap, msg: SnapshotMsg): Netmap {
  const peers = new Map<number, PeerInfo>();
  for (const p of msg.peers) if (p.id !== map.selfId) peers.set(p.id, p);
  return { version: msg.version, selfId: map.selfId, peers };
}

function applyChange(peers: Map<number, PeerInfo>, selfId: number, c: PeerChange): void {
  if (c.op === 'upsert') {
    if (c.peer.id !== selfId) peers.set(c.peer.id, c.peer);
    return;
  }
  if (c.op === 'remove') {
    peers.delete(c.id);
    return;
  }
  const p = peers.get(c.id);
  if (!p) return; // a change to ourselves, or to a peer removed in the same window
  switch (c.op) {
    case 'endpoints': peers.set(c.id, { ...p, endpoints: c.endpoints, natType: c.natType }); break;
    case 'online': peers.set(c.id, { ...p, online: c.online, lastSeen: c.lastSeen }); break;
    case 'disco': peers.set(c.id, { ...p, discoKey: c.discoKey }); break;
  }
}

/** Applies a delta; returns undefined when it does not follow the version we hold. */
export function applyDelta(map: Netmap, msg: DeltaMsg): Netmap | undefined {
  if (msg.from !== map.version) return undefined;
  const peers = new Map(map.peers);
  for (const c of msg.changes) applyChange(peers, map.selfId, c);
  return { version: msg.version, selfId: map.selfId, peers };
}

/** The JSON form kept in the state dir so peers can be reached while the coordinator is down. */
export function netmapToJson(map: Netmap): { version: number; selfId: number; peers: PeerInfo[] } {
  return { version: map.version, selfId: map.selfId, peers: [...map.peers.values()] };
}
