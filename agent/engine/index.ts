/**
 * The tunnel engines' entry point: the contract (types.ts) and one factory per
 * engine. Everything else in this folder is internal to the engines, except the
 * pure codecs (diff.ts, uapi.ts, wg-tool.ts), which the simulator and tests may
 * import directly. docs/engines.md describes the contract and each adapter.
 */
export type {
  ApplyOptions, Engine, EngineConfig, EngineHealth, EngineKind, EnginePeerConfig, EnginePeerStats, IpFamily, UnavailableFamily,
} from './types.js';
export type { ManagedEngine } from './diffing-engine.js';
export type { ExecFn, SpawnFn } from './exec.js';
export { createMemoryEngine, type MemoryEngine, type MemoryPeerStatsPatch } from './memory.js';
export { createWireguardGoEngine, type WireguardGoEngine, type WireguardGoEngineOptions } from './wireguard-go.js';
export { createKernelEngine, type KernelEngine, type KernelEngineOptions } from './kernel.js';
