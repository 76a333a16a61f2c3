/**
 * Peer-map versions, deltas and their coalescing — pure, no I/O.
 *
 * Changes accepted during one coalescing window are folded per node (the
 * last endpoint list wins, a change to a node added in the same window is
 * folded into its upsert, a removal cancels everything before it), then
 * committed to the store's change feed as ONE version, whose number the
 * store assigns — the same on every replica. A join batch is one version
 * too, so a join storm costs one message per client per batch, not per join.
 *
 * The change log keeps the encoded deltas of recent versions so a client that
 * reconnects with `lastVersion` — to this replica or to another — gets only
 * what it missed; older than the log → the caller sends a snapshot instead.
 * Each delta is encoded once, as UTF-8 bytes, and the same Buffer goes to
 * every client: a send copies nothing.
 */
import type { DeltaMsg, PeerChange } from '../../shared/wire/control.js';

export function changeNodeId(c: PeerChange): number {
  return c.op === 'upsert' ? c.peer.id : c.id;
}

function fold(prev: PeerChange | undefined, next: PeerChange): PeerChange[] {
  if (!prev || next.op === 'upsert' || next.op === 'remove') return [next];
  if (prev.op === 'remove') return [prev, next]; // can't happen for a live node; keep order if it does
  if (prev.op === 'upsert') {
    const peer = { ...prev.peer };
    if (next.op === 'endpoints') { peer.endpoints = next.endpoints; peer.natType = next.natType; }
    if (next.op === 'online') { peer.online = next.online; peer.lastSeen = next.lastSeen; }
    if (next.op === 'disco') peer.discoKey = next.discoKey;
    return [{ op: 'upsert', peer }];
  }
  if (prev.op === next.op) return [next]; // same field changed twice: the last value wins
  return [prev, next];
}

/** Folds a window's changes so each node appears with at most one change per field. */
export function coalesce(changes: PeerChange[]): PeerChange[] {
  const perNode = new Map<number, PeerChange[]>();
  for (const c of changes) {
    const id = changeNodeId(c);
    const list = perNode.get(id) ?? [];
    if (c.op === 'upsert' || c.op === 'remove') {
      perNode.set(id, [c]);
      continue;
    }
    const sameOp = list.findIndex((p) => p.op === c.op);
    if (sameOp >= 0) list[sameOp] = c;
    else if (list.length === 1) list.splice(0, 1, ...fold(list[0], c));
    else list.push(c);
    perNode.set(id, list);
  }
  // Map iteration is insertion order: deltas keep the order nodes first changed in.
  return [...perNode.values()].flat();
}

interface LogEntry {
  from: number;
  version: number;
  bytes: Buffer; // the encoded DeltaMsg, shared by every client
}

/** The delta message for one committed version, encoded once: identical bytes on every replica. */
export function encodeDelta(version: number, changes: PeerChange[]): { msg: DeltaMsg; bytes: Buffer } {
  const msg: DeltaMsg = { type: 'delta', from: version - 1, version, changes };
  return { msg, bytes: Buffer.from(JSON.stringify(msg)) };
}

export class ChangeLog {
  private entries: LogEntry[] = [];
  private head = 0; // index of the oldest live entry (avoids shifting a long array)
  private current: number;

  /** Starts at `version`, knowing the versions in `history` (consecutive, newest last, ending at `version`). */
  constructor(version: number, history: { version: number; changes: PeerChange[] }[] = [], private readonly maxEntries = 4096) {
    this.current = version - history.length;
    for (const h of history) this.append(h.version, h.changes);
    this.current = version;
  }

  get version(): number {
    return this.current;
  }

  /**
   * Records the next committed version (the store assigns it) and returns its delta and
   * encoding. A version that doesn't follow the current one means the log lost track
   * (this replica fell behind more than the store keeps): the log restarts there, and
   * clients further back get a snapshot.
   */
  append(version: number, changes: PeerChange[]): { msg: DeltaMsg; bytes: Buffer } {
    const delta = encodeDelta(version, changes);
    if (version !== this.current + 1) {
      this.entries = [];
      this.head = 0;
    }
    this.current = version;
    this.entries.push({ from: delta.msg.from, version, bytes: delta.bytes });
    if (this.entries.length - this.head > this.maxEntries) this.head++;
    if (this.head > this.maxEntries) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    return delta;
  }

  /**
   * The encoded deltas that bring a client from `version` to the current one;
   * [] when it is current, undefined when the log no longer reaches back that far
   * (or the version is from the future, e.g. another coordinator's database).
   */
  since(version: number): Buffer[] | undefined {
    if (version === this.current) return [];
    if (version > this.current) return undefined;
    const live = this.entries.length - this.head;
    if (live === 0) return undefined;
    const oldest = this.entries[this.head]!;
    if (version < oldest.from) return undefined;
    const start = this.head + (version - oldest.from); // one entry per version: index by offset
    if (this.entries[start]?.from !== version) return undefined;
    return this.entries.slice(start).map((e) => e.bytes);
  }
}
