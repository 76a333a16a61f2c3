/**
 * The lifecycle every engine shares, around a small backend that speaks one
 * engine's language. Overview of one apply:
 *
 *   validate + normalise desired (diff.ts)  → TypeError if the agent passed garbage
 *   start the backend once (spawn/attach)    → KnitError(KNIT_ERR_ENGINE) on failure
 *   know the current state (read back once, then track what was written)
 *   diff; nothing to do → return without a single write
 *   backend.push(diff) → on failure forget the current state, so the next apply
 *                         reads it back instead of trusting a half-written guess;
 *                         a family the host has switched off is skipped, not a
 *                         failure: its additions stay out of the held state, so
 *                         every later diff carries them again until they land
 *   note the outcome for health(): last success, last error, skipped families
 *
 * Calls are serialised: an apply never interleaves with another apply, stats or
 * close. close() is idempotent and final.
 */
import { KnitError, isKnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import {
  computeEngineDiff, isEmptyDiff, normalizeEngineConfig, summarizeDiff, withoutSkippedAdditions, type EngineDiff, type EngineState,
} from './diff.js';
import type { ApplyOptions, Engine, EngineConfig, EngineHealth, EngineKind, EnginePeerStats, UnavailableFamily } from './types.js';

/** One engine's language. Only diffing-engine.ts calls these, one at a time. */
export interface EngineBackend {
  readonly kind: EngineKind;
  /** Starts or attaches to the engine. Called once before anything else (again only after a failure). */
  start(): Promise<void>;
  /** Reads what the engine holds now; used to seed the diff and after a failed push. */
  readState(): Promise<EngineState>;
  /**
   * Writes a non-empty diff; `next` is the state the engine holds afterwards, less the
   * additions of any family it returns as unavailable (the host has it switched off), which
   * it skipped while writing everything else.
   */
  push(diff: EngineDiff, next: EngineState): Promise<UnavailableFamily[]>;
  readStats(): Promise<EnginePeerStats[]>;
  /** Tears down what start() and push() made. Called at most once, even if start() never ran. */
  stop(): Promise<void>;
}

/** An Engine whose start can also be requested eagerly (it otherwise happens at the first apply). */
export interface ManagedEngine extends Engine {
  start(): Promise<void>;
}

function engineError(e: unknown, what: string): KnitError {
  if (isKnitError(e)) return e;
  const detail = e instanceof Error ? e.message : String(e);
  return new KnitError('KNIT_ERR_ENGINE', `${what}: ${detail}`, { cause: e });
}

/** `now` gives wall ms for health's timestamps (Date.now unless a test hands in a virtual clock's). */
export function createDiffingEngine(backend: EngineBackend, logger: Logger, now: () => number = Date.now): ManagedEngine {
  let queue: Promise<unknown> = Promise.resolve();
  let started = false;
  let closed = false;
  let closing: Promise<void> | undefined;
  let current: EngineState | undefined;
  let lastSuccessMs = 0;
  let lastError: EngineHealth['lastError'];
  let unavailable: UnavailableFamily[] = [];

  const noteFailure = (e: unknown) => {
    lastError = { message: e instanceof Error ? e.message : String(e), code: isKnitError(e) ? e.code : undefined, atMs: now() };
  };

  // Said once when a family goes missing and once when it is back, not at every apply.
  const noteSuccess = (skipped: UnavailableFamily[]) => {
    for (const u of skipped) {
      if (unavailable.some((x) => x.family === u.family)) continue;
      logger.warn(`IPv${u.family} is switched off on this host: the tunnel carries IPv${u.family === 6 ? 4 : 6} only; its IPv${u.family} addresses and routes wait until it is back`, { reason: u.reason });
    }
    for (const u of unavailable) {
      if (!skipped.some((x) => x.family === u.family)) logger.info(`IPv${u.family} addresses and routes are applied now`);
    }
    unavailable = skipped;
    lastSuccessMs = now();
    lastError = undefined;
  };

  // Serialise every operation behind the previous one, whatever its outcome.
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const p = queue.then(fn);
    queue = p.then(() => undefined, () => undefined);
    return p;
  };

  const ensureStarted = async () => {
    if (closed) throw new KnitError('KNIT_ERR_ENGINE', `the ${backend.kind} engine is closed`);
    if (started) return;
    try {
      await backend.start();
    } catch (e) {
      throw engineError(e, `starting the ${backend.kind} engine failed`);
    }
    started = true;
  };

  return {
    kind: backend.kind,

    start: () => serial(ensureStarted),

    apply(desired: EngineConfig, options: ApplyOptions = {}): Promise<void> {
      const norm = normalizeEngineConfig(desired);
      if (!norm.ok) {
        const e = new TypeError(`invalid engine config: ${norm.error}`);
        noteFailure(e);
        return Promise.reject(e);
      }
      return serial(async () => {
        await ensureStarted();
        try {
          current ??= await backend.readState();
        } catch (e) {
          throw engineError(e, `reading the ${backend.kind} engine's state failed`);
        }
        const { diff, next } = computeEngineDiff(current, norm.value, options);
        // Nothing to write means nothing pending either: skipped additions are always in the diff.
        if (isEmptyDiff(diff)) {
          noteSuccess([]);
          return;
        }
        let skipped: UnavailableFamily[];
        try {
          skipped = await backend.push(diff, next);
        } catch (e) {
          current = undefined; // unknown now: read it back before the next diff
          throw engineError(e, `applying to the ${backend.kind} engine failed`);
        }
        current = withoutSkippedAdditions(next, diff, skipped.map((u) => u.family));
        noteSuccess(skipped);
        logger.debug('engine applied', summarizeDiff(diff));
      }).catch((e: unknown) => {
        noteFailure(e);
        throw e;
      });
    },

    stats(): Promise<EnginePeerStats[]> {
      return serial(async () => {
        if (closed) throw new KnitError('KNIT_ERR_ENGINE', `the ${backend.kind} engine is closed`);
        if (!started) return []; // nothing applied yet: no interface to ask
        try {
          return await backend.readStats();
        } catch (e) {
          throw engineError(e, `reading ${backend.kind} engine stats failed`);
        }
      });
    },

    health(): EngineHealth {
      return { lastSuccessMs, ...(lastError && { lastError: { ...lastError } }), unavailableFamilies: unavailable.map((u) => ({ ...u })) };
    },

    close(): Promise<void> {
      closing ??= serial(async () => {
        closed = true;
        current = undefined;
        try {
          await backend.stop();
        } catch (e) {
          throw engineError(e, `stopping the ${backend.kind} engine failed`);
        }
      });
      return closing;
    },
  };
}
