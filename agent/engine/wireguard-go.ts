/**
 * The wireguard-go engine: userspace WireGuard configured over its UAPI socket.
 *
 * Start: if /var/run/wireguard/<iface>.sock already answers (an agent restarted
 * while its wireguard-go kept running) attach to it; otherwise run
 * `wireguard-go <iface>` with WG_PROCESS_FOREGROUND=1, so the process is our
 * child and never daemonises out of reach, and wait for its socket. Then the
 * link goes up with MTU 1420. The first apply reads the device back over UAPI
 * (and addresses/routes through `ip`) and diffs against that; later applies
 * diff against what was written (diff.ts explains why not read-back).
 *
 * Close: SIGTERM to our process (it removes its TUN and socket), then
 * `ip link del` for an attached one or a straggler; addresses and routes go
 * with the link. The interface named in the options belongs to Knit.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import type { Logger } from '../../shared/log.js';
import { diffTouchesInterface, stateFromReadBack, type EngineState } from './diff.js';
import { createDiffingEngine, type ManagedEngine } from './diffing-engine.js';
import { execCommand, spawnCommand, type ExecFn, type SpawnFn } from './exec.js';
import { WG_DEFAULT_MTU, applyInterfaceDiff, deleteLink, linkUp, readAddresses, readRoutes } from './ip-link.js';
import type { EnginePeerStats } from './types.js';
import { encodeUapiSet, keyHexToBase64, uapiSetFromDiff, type UapiDevice } from './uapi.js';
import {
  UAPI_DEFAULT_RUN_DIR, uapiAnswers, uapiExchange, uapiGet, uapiSet, uapiSocketPath, waitForUapiSocket, type UapiTransport,
} from './uapi-socket.js';

/** wireguard-go is listening within tens of milliseconds; five seconds means it will not. */
export const WIREGUARD_GO_START_TIMEOUT_MS = 5_000;
/** After SIGTERM it tears its device down at once; past this it gets SIGKILL. */
export const WIREGUARD_GO_STOP_TIMEOUT_MS = 3_000;
/** Lines of its output kept to explain a failed start. */
const OUTPUT_TAIL_LINES = 20;

export interface WireguardGoEngineOptions {
  iface: string;
  /** Where wireguard-go puts <iface>.sock as this process sees it. Default /var/run/wireguard. */
  runDir?: string;
  logger: Logger;
  /** Starts the wireguard-go process (default: node spawn). The lab wraps it in `ip netns exec`. */
  spawn?: SpawnFn;
  /** Runs `ip` (default: execFile). */
  exec?: ExecFn;
  /** Carries UAPI text (default: the unix socket). */
  uapi?: UapiTransport;
  binary?: string;
  mtu?: number;
  /** wireguard-go's LOG_LEVEL: 'error' (default), 'verbose' logs handshakes. */
  logLevel?: 'silent' | 'error' | 'verbose';
}

export interface WireguardGoEngine extends ManagedEngine {
  readonly kind: 'wireguard-go';
  readonly socketPath: string;
  /** PID of the wireguard-go this engine started; undefined when attached or not started. */
  pid(): number | undefined;
}

function peerStats(device: UapiDevice): EnginePeerStats[] {
  return device.peers.map((p) => ({
    publicKey: keyHexToBase64(p.publicKeyHex),
    endpoint: p.endpoint,
    lastHandshakeMs: p.lastHandshakeTimeSec * 1000 + Math.floor(p.lastHandshakeTimeNsec / 1e6),
    rxBytes: p.rxBytes,
    txBytes: p.txBytes,
  }));
}

/** The engine state a UAPI device plus the interface's addresses and routes amount to. */
export function stateFromUapi(device: UapiDevice, addresses: string[], routes: string[]): EngineState {
  return stateFromReadBack({
    privateKey: device.privateKeyHex ? keyHexToBase64(device.privateKeyHex) : '',
    listenPort: device.listenPort ?? 0,
    addresses,
    peers: device.peers.map((p) => ({
      publicKey: keyHexToBase64(p.publicKeyHex),
      allowedIps: p.allowedIps,
      endpoint: p.endpoint,
      persistentKeepaliveS: p.persistentKeepaliveS,
    })),
    routes,
  });
}

export function createWireguardGoEngine(options: WireguardGoEngineOptions): WireguardGoEngine {
  const { iface, logger } = options;
  const socketPath = uapiSocketPath(iface, options.runDir ?? UAPI_DEFAULT_RUN_DIR);
  const exec = options.exec ?? execCommand;
  const spawnFn = options.spawn ?? spawnCommand;
  const transport = options.uapi ?? uapiExchange;
  const mtu = options.mtu ?? WG_DEFAULT_MTU;
  const log = logger.child({ engine: 'wireguard-go', iface });

  let child: ChildProcess | undefined;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const tail: string[] = [];

  const noteOutput = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      tail.push(line);
      if (tail.length > OUTPUT_TAIL_LINES) tail.shift();
      log.debug('wireguard-go', { line });
    }
  };

  const startProcess = async () => {
    exited = undefined;
    spawnError = undefined;
    const env = { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: options.logLevel ?? 'error' };
    const proc = spawnFn([options.binary ?? 'wireguard-go', iface], env);
    child = proc;
    proc.stdout?.on('data', noteOutput);
    proc.stderr?.on('data', noteOutput);
    proc.on('error', (e) => { spawnError = e; });
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      if (child === proc) log.info('wireguard-go exited', { code, signal });
    });
    await waitForUapiSocket(socketPath, {
      timeoutMs: WIREGUARD_GO_START_TIMEOUT_MS,
      gaveUp: () => {
        if (spawnError) return `cannot run wireguard-go: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`;
        if (exited) return `wireguard-go exited (${exited.code ?? exited.signal}) before its UAPI socket answered: ${tail.slice(-3).join(' | ')}`;
        return undefined;
      },
    });
    log.info('wireguard-go started', { pid: proc.pid });
  };

  const stopProcess = async () => {
    const proc = child;
    // A process that never started (spawn error) has nothing to stop and may never emit 'exit'.
    if (!proc || spawnError || proc.pid === undefined || exited || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = once(proc, 'exit');
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), WIREGUARD_GO_STOP_TIMEOUT_MS);
    try {
      await gone;
    } finally {
      clearTimeout(timer);
    }
  };

  const engine = createDiffingEngine(
    {
      kind: 'wireguard-go',
      async start() {
        if (await uapiAnswers(socketPath)) {
          log.info('attached to a running wireguard-go');
        } else {
          try {
            await startProcess();
          } catch (e) {
            await stopProcess().catch(() => {});
            throw e;
          }
        }
        await linkUp(exec, iface, mtu);
      },
      async readState() {
        const device = await uapiGet(socketPath, transport);
        return stateFromUapi(device, await readAddresses(exec, iface), await readRoutes(exec, iface));
      },
      async push(diff) {
        const req = uapiSetFromDiff(diff);
        if (req) await uapiSet(socketPath, encodeUapiSet(req), transport);
        return diffTouchesInterface(diff) ? applyInterfaceDiff(exec, iface, diff) : [];
      },
      async readStats() {
        return peerStats(await uapiGet(socketPath, transport));
      },
      async stop() {
        await stopProcess();
        await deleteLink(exec, iface);
        // A SIGKILLed wireguard-go leaves its socket file behind; remove it so nothing takes it for a live one.
        if (child) await rm(socketPath, { force: true });
      },
    },
    log,
  );

  return {
    ...engine,
    kind: 'wireguard-go',
    socketPath,
    pid: () => (child && !exited ? child.pid : undefined),
  };
}
