/**
 * The kernel WireGuard engine, through the standard tools: `ip link add <iface>
 * type wireguard` creates the interface, `wg set` writes the diff (wg-tool.ts
 * builds the argv; a new private key goes through a 0600 file in a private
 * temporary directory, removed at once), `wg show <iface> dump`
 * reads it back, and ip-link.ts handles addresses and routes exactly as for
 * wireguard-go.
 *
 * Without the wireguard module `ip link add … type wireguard` fails with
 * "Unknown device type"; start() turns that into KnitError(KNIT_ERR_ENGINE)
 * saying so, and the agent falls back to wireguard-go. If the interface
 * already exists it is adopted, whatever made it: `wg` speaks to kernel and
 * userspace interfaces alike, which is how this adapter's configuration path is
 * tested against a wireguard-go interface (docs/engines.md).
 *
 * Close deletes the link (it belongs to Knit, created or adopted); its
 * addresses and routes go with it.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KnitError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { diffTouchesInterface, stateFromReadBack, type EngineState } from './diff.js';
import { createDiffingEngine, type ManagedEngine } from './diffing-engine.js';
import { ExecError, execCommand, type ExecFn } from './exec.js';
import { WG_DEFAULT_MTU, applyInterfaceDiff, deleteLink, linkExists, linkUp, readAddresses, readRoutes } from './ip-link.js';
import type { EnginePeerStats } from './types.js';
import { assertInterfaceName } from './uapi-socket.js';
import { parseWgDump, wgSetArgv, type WgDump } from './wg-tool.js';

export interface KernelEngineOptions {
  iface: string;
  logger: Logger;
  /** Runs `ip` and `wg` (default: execFile). The lab runs them inside a namespace. */
  exec?: ExecFn;
  mtu?: number;
}

export interface KernelEngine extends ManagedEngine {
  readonly kind: 'kernel';
}

/** The engine state a `wg show dump` plus the interface's addresses and routes amount to. */
export function stateFromWgDump(dump: WgDump, addresses: string[], routes: string[]): EngineState {
  return stateFromReadBack({
    privateKey: dump.privateKey ?? '',
    listenPort: dump.listenPort,
    addresses,
    peers: dump.peers.map((p) => ({ publicKey: p.publicKey, allowedIps: p.allowedIps, endpoint: p.endpoint, persistentKeepaliveS: p.persistentKeepaliveS })),
    routes,
  });
}

export function statsFromWgDump(dump: WgDump): EnginePeerStats[] {
  return dump.peers.map((p) => ({
    publicKey: p.publicKey,
    endpoint: p.endpoint,
    lastHandshakeMs: p.latestHandshakeS * 1000,
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
  }));
}

/**
 * Runs fn with the key in a file only root can read, then removes it. The file
 * lives in memory-backed /dev/shm where there is one, so the key never reaches
 * a disk; the directory is private (0700) from the start.
 */
async function withPrivateKeyFile<T>(privateKey: string, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'knit-wg-'));
  try {
    const path = join(dir, 'private-key');
    await writeFile(path, privateKey + '\n', { mode: 0o600 });
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function createKernelEngine(options: KernelEngineOptions): KernelEngine {
  const { iface } = options;
  assertInterfaceName(iface);
  const exec = options.exec ?? execCommand;
  const log = options.logger.child({ engine: 'kernel', iface });

  const readDump = async (): Promise<WgDump> => {
    const { stdout } = await exec(['wg', 'show', iface, 'dump']);
    const parsed = parseWgDump(stdout);
    if (!parsed.ok) throw new KnitError('KNIT_ERR_ENGINE', `wg show ${iface} dump: ${parsed.error}`);
    return parsed.value;
  };

  const engine = createDiffingEngine(
    {
      kind: 'kernel',
      async start() {
        if (await linkExists(exec, iface)) {
          log.info('adopting the existing interface');
        } else {
          try {
            await exec(['ip', 'link', 'add', 'dev', iface, 'type', 'wireguard']);
          } catch (e) {
            if (e instanceof ExecError && /unknown device type|not supported/i.test(e.stderr)) {
              throw new KnitError('KNIT_ERR_ENGINE', 'kernel WireGuard is not available on this host (no wireguard module); use the wireguard-go engine', { cause: e });
            }
            throw e;
          }
          log.info('created the interface');
        }
        await linkUp(exec, iface, options.mtu ?? WG_DEFAULT_MTU);
      },
      async readState() {
        return stateFromWgDump(await readDump(), await readAddresses(exec, iface), await readRoutes(exec, iface));
      },
      async push(diff) {
        if (diff.privateKey === undefined) {
          const argv = wgSetArgv(iface, diff);
          if (argv) await exec(argv);
        } else {
          await withPrivateKeyFile(diff.privateKey, (path) => exec(wgSetArgv(iface, diff, path)!));
        }
        return diffTouchesInterface(diff) ? applyInterfaceDiff(exec, iface, diff) : [];
      },
      async readStats() {
        return statsFromWgDump(await readDump());
      },
      async stop() {
        await deleteLink(exec, iface);
      },
    },
    log,
  );
  return { ...engine, kind: 'kernel' };
}
