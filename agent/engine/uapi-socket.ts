/**
 * The shell that carries UAPI text (uapi.ts) to wireguard-go over its unix
 * socket, /var/run/wireguard/<iface>.sock. One request per connection: write
 * it, read until the reply's closing empty line, hang up. wireguard-go keeps a
 * connection open for further requests, so the end of a reply is found by its
 * framing, not by the peer closing. Replies are bounded in size and time: a
 * wedged or hostile process on that path cannot make the agent hang or balloon.
 */
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { KnitError } from '../../shared/errors.js';
import { UAPI_GET_REQUEST, parseUapiErrno, parseUapiGet, type UapiDevice } from './uapi.js';

export const UAPI_DEFAULT_RUN_DIR = '/var/run/wireguard';
/** A get reply is ~400 bytes per peer; 8 MiB covers twenty thousand peers. */
export const UAPI_REPLY_MAX_BYTES = 8 * 1024 * 1024;
/** wireguard-go answers in milliseconds; seconds mean it is wedged. */
export const UAPI_TIMEOUT_MS = 5_000;

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/' or whitespace. */
const IFACE_NAME = /^[A-Za-z0-9_.=+-]{1,15}$/;

export function assertInterfaceName(iface: string): void {
  if (typeof iface !== 'string' || !IFACE_NAME.test(iface) || iface === '.' || iface === '..') {
    throw new RangeError('interface name must be 1-15 characters of [A-Za-z0-9_.=+-]');
  }
}

export function uapiSocketPath(iface: string, runDir = UAPI_DEFAULT_RUN_DIR): string {
  assertInterfaceName(iface);
  return join(runDir, `${iface}.sock`);
}

export interface UapiExchangeOptions {
  timeoutMs?: number;
  maxReplyBytes?: number;
}

/** How UAPI text gets to the engine and back; a seam so tests can watch what is written. */
export type UapiTransport = (socketPath: string, request: string, options?: UapiExchangeOptions) => Promise<string>;

/** Sends one request and returns the raw reply. Rejects with KnitError(KNIT_ERR_ENGINE). */
export const uapiExchange: UapiTransport = (socketPath, request, options = {}) => {
  const timeoutMs = options.timeoutMs ?? UAPI_TIMEOUT_MS;
  const maxReply = options.maxReplyBytes ?? UAPI_REPLY_MAX_BYTES;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const sock = connect(socketPath);
    const finish = (err: Error | undefined, reply?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new KnitError('KNIT_ERR_ENGINE', `UAPI ${socketPath}: no reply within ${timeoutMs} ms`)), timeoutMs);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxReply) {
        finish(new KnitError('KNIT_ERR_ENGINE', `UAPI ${socketPath}: reply larger than ${maxReply} bytes`));
        return;
      }
      chunks.push(chunk);
      // The reply ends at its first empty line, and only a reply's end has one.
      const text = Buffer.concat(chunks).toString('latin1');
      if (text.includes('\n\n')) finish(undefined, text);
    });
    sock.on('end', () => finish(new KnitError('KNIT_ERR_ENGINE', `UAPI ${socketPath}: connection closed before the reply ended`)));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      finish(new KnitError('KNIT_ERR_ENGINE', `UAPI ${socketPath}: ${e.code ?? e.message}`, { cause: e }));
    });
  });
};

/** Reads the device over UAPI; a malformed reply or non-zero errno is a KnitError. */
export async function uapiGet(socketPath: string, transport: UapiTransport = uapiExchange): Promise<UapiDevice> {
  const reply = await transport(socketPath, UAPI_GET_REQUEST);
  const parsed = parseUapiGet(reply);
  if (!parsed.ok) throw new KnitError('KNIT_ERR_ENGINE', `UAPI get on ${socketPath}: ${parsed.error}`);
  return parsed.value;
}

/** Sends a `set=1` request (uapi.ts encodeUapiSet); a non-zero errno is a KnitError. */
export async function uapiSet(socketPath: string, request: string, transport: UapiTransport = uapiExchange): Promise<void> {
  const reply = await transport(socketPath, request);
  const errno = parseUapiErrno(reply);
  if (!errno.ok) throw new KnitError('KNIT_ERR_ENGINE', `UAPI set on ${socketPath}: ${errno.error}`);
  if (errno.value !== 0) throw new KnitError('KNIT_ERR_ENGINE', `UAPI set on ${socketPath} failed: errno=${errno.value}`);
}

/** Whether something answers `get=1` on the socket (a running wireguard-go for that interface). */
export async function uapiAnswers(socketPath: string, timeoutMs = 1_000): Promise<boolean> {
  try {
    return parseUapiGet(await uapiExchange(socketPath, UAPI_GET_REQUEST, { timeoutMs })).ok;
  } catch {
    return false;
  }
}

/**
 * Waits for a freshly started wireguard-go to answer on its socket: it creates
 * the TUN first and listens a few milliseconds later. Polls every
 * WAIT_POLL_MS until `timeoutMs`, and gives up at once when `gaveUp()` says
 * the process already exited.
 */
export const WAIT_POLL_MS = 20;
export async function waitForUapiSocket(
  socketPath: string,
  options: { timeoutMs?: number; gaveUp?: () => string | undefined } = {},
): Promise<void> {
  const deadline = performance.now() + (options.timeoutMs ?? UAPI_TIMEOUT_MS);
  for (;;) {
    if (await uapiAnswers(socketPath, 500)) return;
    const why = options.gaveUp?.();
    if (why) throw new KnitError('KNIT_ERR_ENGINE', why);
    if (performance.now() >= deadline) throw new KnitError('KNIT_ERR_ENGINE', `UAPI socket ${socketPath} did not answer in time`);
    await delay(WAIT_POLL_MS);
  }
}
