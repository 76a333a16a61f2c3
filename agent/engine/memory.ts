/**
 * The in-memory engine: the same contract and the same diff as the real
 * adapters, with the "engine" being a record in memory. The agent's tests and
 * the simulator use it; it shows what was applied, the diffs it was handed
 * (so a test can prove that a repeated apply wrote nothing), and takes
 * handshake/byte/roamed-endpoint figures from a test hook, since nothing here
 * ever carries a packet. A switch plays a host with IPv6 turned off, so the
 * per-family rule is checked by the same contract suite as the real engines.
 */
import { decodeKey, encodeKey, publicKeyOf } from '../../shared/crypto/keys.js';
import { silentLogger, type Logger } from '../../shared/log.js';
import { EMPTY_ENGINE_STATE, diffAddsFamily, familyOfPrefix, withoutSkippedAdditions, type EngineDiff, type EngineState } from './diff.js';
import { createDiffingEngine, type ManagedEngine } from './diffing-engine.js';
import type { EnginePeerStats, UnavailableFamily } from './types.js';

/** What a test may feed for one peer; unset fields keep their defaults (0, the applied endpoint). */
export type MemoryPeerStatsPatch = Partial<Omit<EnginePeerStats, 'publicKey'>>;

export interface MemoryEngine extends ManagedEngine {
  readonly kind: 'memory';
  /** The state held now (normalised config plus routes); undefined before the first apply. */
  applied(): EngineState | undefined;
  /** How many applies actually changed something. */
  changes(): number;
  /** The last HISTORY_LIMIT non-empty diffs, oldest first. */
  diffs(): EngineDiff[];
  /** Whether close() has run. */
  isClosed(): boolean;
  /**
   * Test hook: what WireGuard would report for a peer (a handshake, bytes, or the
   * endpoint it roamed to). Ignored for peers not applied; forgotten when the peer is removed.
   */
  setPeerStats(publicKey: string, patch: MemoryPeerStatsPatch): void;
  /**
   * Test hook: switches IPv6 off or on, as `disable_ipv6` does on a host. Switching it off
   * drops the IPv6 addresses and routes, as the kernel does; applies then skip IPv6 the way
   * the real engines do when `ip` answers "IPv6 is disabled on this device".
   */
  setIpv6Available(available: boolean): void;
}

const clone = <T>(v: T): T => structuredClone(v);

/**
 * Diffs kept for inspection. Bounded: the simulator runs a thousand of these engines, each
 * applying its whole peer map again and again, and every kept diff is a copy of it.
 */
export const HISTORY_LIMIT = 64;

/**
 * A model of WireGuard's handshakes between memory engines: when an engine is handed an
 * endpoint for a peer (new, moved, or re-created for a fresh handshake), both it and the
 * peer's engine, if it is in the same set, report a handshake at `wallNow()` — as the
 * initiation and its response would. Nothing here carries a packet, so this says what real
 * engines would do over a path disco has proven. The simulator puts all its engines in one
 * set; `knit up --engine memory` has a set of one (only its own side handshakes).
 */
export interface MemoryHandshakes {
  readonly wallNow: () => number;
  /** Each engine's handshake hook, by its own public key. */
  readonly engines: Map<string, (peerKey: string, atMs: number) => void>;
}

export function memoryHandshakes(wallNow: () => number): MemoryHandshakes {
  return { wallNow, engines: new Map() };
}

export interface MemoryEngineOptions {
  logger?: Logger;
  /** Wall ms for the engine's health record (engine/diffing-engine.ts). */
  now?: () => number;
  /** Handshakes modelled (see MemoryHandshakes). Absent: handshakes come only from setPeerStats. */
  handshakes?: MemoryHandshakes;
}

export function createMemoryEngine(options: MemoryEngineOptions = {}): MemoryEngine {
  let state: EngineState | undefined;
  let ipv6Off = false;
  let closed = false;
  const history: EngineDiff[] = [];
  let changes = 0;
  const fed = new Map<string, MemoryPeerStatsPatch>();
  let peerKeys = new Set<string>(); // the applied peers' keys, when handshakes are modelled
  const handshook = (peerKey: string, atMs: number) => {
    if (peerKeys.has(peerKey)) fed.set(peerKey, { ...fed.get(peerKey), lastHandshakeMs: atMs });
  };
  let ownKeyCache: [string, string] | undefined;
  const ownKey = (privateKey: string) => {
    if (ownKeyCache?.[0] !== privateKey) ownKeyCache = [privateKey, encodeKey(publicKeyOf(decodeKey(privateKey)!))];
    return ownKeyCache[1];
  };

  const engine = createDiffingEngine(
    {
      kind: 'memory',
      async start() {
        state = clone(EMPTY_ENGINE_STATE);
      },
      async readState() {
        return clone(state ?? EMPTY_ENGINE_STATE);
      },
      // `diff` and `next` are fresh from the diff and never changed after: kept as they are,
      // copied only on the way out (applied(), diffs()).
      async push(diff, next) {
        changes++;
        history.push(diff);
        if (history.length > HISTORY_LIMIT) history.shift();
        // WireGuard forgets a removed peer's counters; so does this.
        for (const key of diff.removePeers) fed.delete(key);
        const skipped: UnavailableFamily[] = ipv6Off && diffAddsFamily(diff, 6) ? [{ family: 6, reason: 'IPv6 is disabled on this device' }] : [];
        state = withoutSkippedAdditions(next, diff, skipped.map((u) => u.family));
        const hs = options.handshakes;
        if (hs) {
          peerKeys = new Set(next.peers.map((p) => p.publicKey));
          const own = ownKey(next.privateKey);
          hs.engines.set(own, handshook);
          for (const u of diff.upsertPeers) {
            if (u.endpoint === undefined) continue;
            const at = hs.wallNow();
            handshook(u.publicKey, at);
            hs.engines.get(u.publicKey)?.(own, at);
          }
        }
        return skipped;
      },
      async readStats() {
        return (state?.peers ?? []).map((p) => {
          const f = fed.get(p.publicKey) ?? {};
          return {
            publicKey: p.publicKey,
            endpoint: f.endpoint ?? p.endpoint,
            lastHandshakeMs: f.lastHandshakeMs ?? 0,
            rxBytes: f.rxBytes ?? 0,
            txBytes: f.txBytes ?? 0,
          };
        });
      },
      async stop() {
        closed = true;
        state = undefined;
        fed.clear();
      },
    },
    options.logger ?? silentLogger,
    options.now,
  );

  return {
    ...engine,
    kind: 'memory',
    applied: () => (state ? clone(state) : undefined),
    changes: () => changes,
    diffs: () => clone(history),
    isClosed: () => closed,
    setPeerStats(publicKey, patch) {
      if (!state?.peers.some((p) => p.publicKey === publicKey)) return;
      fed.set(publicKey, { ...fed.get(publicKey), ...patch });
    },
    setIpv6Available(available) {
      ipv6Off = !available;
      if (ipv6Off && state) {
        const v4 = (x: string) => familyOfPrefix(x) === 4;
        state = { ...state, addresses: state.addresses.filter(v4), routes: state.routes.filter(v4) };
      }
    },
  };
}
