/**
 * The lifecycle every engine shares, around a small backend that speaks one
 * engine's language. Overview of one apply:
 *
 *   validate + normalise desired (diff.ts)  → TypeError if the agent passed garbage
 *   start the backend once (spawn/attach)    → KnitError(KNIT_ERR_ENGINE) on failure
 *   know the current state (read back once, then track what was written)
 *   diff; nothing to do → return without a single write
 *   backend.push(diff) → on failure forget the current state, so the next apply
 *                         reads it back instead of trusting a half-written guess
 *
 * Calls are serialised: an apply never interleaves with another apply, stats or
 * close. close() is idempotent and final.
 */
import { KnitError, isKnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { computeEngineDiff, isEmptyDiff, normalizeEngineConfig, summarizeDiff, type EngineDiff, type EngineState } from './diff.js';
import type { ApplyOptions, Engine, EngineConfig, EngineKind, EnginePeerStats } from './types.js';

/** One engine's language. Only diffing-engine.ts calls these, one at a time. */
export interface EngineBackend {
  readonly kind: EngineKind;
  /** Starts or attaches to the engine. Called once before anything else (again only after a failure). */
  start(): Promise<void>;
  /** Reads what the engine holds now; used to seed the diff and after a failed push. */
  readState(): Promise<EngineState>;
  /** Writes a non-empty diff; `next` is the state the engine holds afterwards. */
  push(diff: EngineDiff, next: EngineState): Promise<void>;
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

export function createDiffingEngine(backend: EngineBackend, logger: Logger): ManagedEngine {
  let queue: Promise<unknown> = Promise.resolve();
  let started = false;
  let closed = false;
  let closing: Promise<void> | undefined;
  let current: EngineState | undefined;

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
      if (!norm.ok) return Promise.reject(new TypeError(`invalid engine config: ${norm.error}`));
      return serial(async () => {
        await ensureStarted();
        try {
          current ??= await backend.readState();
        } catch (e) {
          throw engineError(e, `reading the ${backend.kind} engine's state failed`);
        }
        const { diff, next } = computeEngineDiff(current, norm.value, options);
        if (isEmptyDiff(diff)) return;
        try {
          await backend.push(diff, next);
        } catch (e) {
          current = undefined; // unknown now: read it back before the next diff
          throw engineError(e, `applying to the ${backend.kind} engine failed`);
        }
        current = next;
        logger.debug('engine applied', summarizeDiff(diff));
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
