/**
 * The web console's static files (docs/console.md): GET /ui and /ui/* serve
 * the plain HTML/CSS/JS modules in `coordinator/ui/` (shipped as they are in
 * the npm package: no build step, no CDN) plus the QR encoder from the
 * `qrcode-generator` package, as `/ui/vendor/qrcode.mjs`.
 *
 * What can be served is decided once, when the app is built: the folder is
 * listed and every file with a known type is read into memory (a few tens of
 * KB). A request is a lookup in that table, so no URL — `..`, encoded
 * separators, symlinks, NUL bytes — can reach any other file; anything not in
 * it is the usual 404 JSON. Every answer carries a strict Content-Security-
 * Policy (`default-src 'self'`: no inline script or style, no other origin)
 * and is revalidated by ETag.
 *
 * The console itself talks to the admin API with the admin token and to the
 * live feed (control/admin-feed.ts); nothing here needs or sees a token.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { KnitError } from '../../shared/errors.js';

/**
 * The console's policy: its own origin only (the feed's ws:// on the same host
 * and port counts as 'self' in CSP 3), no plugins, no framing, no <base> tricks.
 */
export const UI_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

export const UI_CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-cache', // revalidate (cheap, ETag): an upgraded coordinator never serves a stale console
};

/** The console folder holds a handful of files; a bigger tree means a wrong --root, not a console. */
const MAX_UI_FILES = 256;
const MAX_UI_FILE_BYTES = 2 * 1024 * 1024;

interface Asset { body: Buffer; type: string; etag: string }

/**
 * Where the console's files are: `coordinator/ui/` at the package root. From the
 * compiled module (dist/coordinator/http/ui.js) that is three folders up; from the
 * source (coordinator/http/ui.ts, e.g. under a TS loader) it is next door.
 */
export function defaultUiRoot(moduleUrl = import.meta.url): string {
  const here = dirname(fileURLToPath(moduleUrl));
  const candidates = [join(here, '..', '..', '..', 'coordinator', 'ui'), join(here, '..', 'ui')];
  return candidates.find((c) => existsSync(join(c, 'index.html'))) ?? candidates[0]!;
}

/** The QR encoder's ES module, from the installed `qrcode-generator` package; undefined if it is missing. */
function qrEncoderPath(): string | undefined {
  try {
    const main = createRequire(import.meta.url).resolve('qrcode-generator'); // …/dist/qrcode.js (CommonJS)
    const esm = join(dirname(main), 'qrcode.mjs');
    return existsSync(esm) ? esm : undefined;
  } catch {
    return undefined;
  }
}

function asset(body: Buffer, type: string): Asset {
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

/** Reads every servable file under `root` into a table keyed by its URL path below /ui/. */
export function loadUiAssets(root: string, extra: Record<string, string> = {}): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return; // no console installed: every /ui path is a 404
    }
    for (const name of names.sort()) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (!st || st.isSymbolicLink()) continue; // a link could point anywhere: only real files inside the folder
      if (st.isDirectory()) {
        walk(path);
        continue;
      }
      const type = UI_CONTENT_TYPES[extname(name).toLowerCase()];
      if (!st.isFile() || !type || st.size > MAX_UI_FILE_BYTES) continue;
      if (assets.size >= MAX_UI_FILES) throw new RangeError(`${root} holds more than ${MAX_UI_FILES} files: not the console's folder`);
      assets.set(relative(root, path).split(sep).join('/'), asset(readFileSync(path), type));
    }
  };
  walk(root);
  for (const [urlPath, file] of Object.entries(extra)) {
    const type = UI_CONTENT_TYPES[extname(file).toLowerCase()];
    if (type && existsSync(file)) assets.set(urlPath, asset(readFileSync(file), type));
  }
  return assets;
}

export interface UiOptions {
  /** The console's folder (default: `coordinator/ui/` of this package). */
  root?: string;
}

/** Registers GET (and HEAD) /ui, /ui/ and /ui/* on the app. */
export function registerUi(app: FastifyInstance, options: UiOptions = {}): void {
  const qr = qrEncoderPath();
  const assets = loadUiAssets(options.root ?? defaultUiRoot(), qr ? { 'vendor/qrcode.mjs': qr } : {});

  const serve = (path: string, req: FastifyRequest, reply: FastifyReply): Buffer | FastifyReply => {
    const a = assets.get(path === '' ? 'index.html' : path);
    if (!a) {
      throw new KnitError('KNIT_ERR_NOT_FOUND', assets.has('index.html') ? 'no such console file' : 'the web console is not installed');
    }
    void reply.headers(SECURITY_HEADERS).header('etag', a.etag).type(a.type);
    if (req.headers['if-none-match'] === a.etag) return reply.code(304).send();
    return a.body;
  };

  app.get('/ui', async (req, reply) => serve('', req, reply));
  app.get('/ui/*', async (req, reply) => serve((req.params as { '*': string })['*'], req, reply));
}
