#!/usr/bin/env node
// Scans test logs for secrets: the last check that no token or private key ever
// reaches a log line or an error message.
//
//   node scripts/scan-secrets.mjs [--secrets FILE] PATH...
//
// PATH is a log file or a folder of them (read recursively; the secrets file
// itself is skipped). Two kinds of finding:
//   - registered secrets: FILE holds one secret per line, written by tests as
//     they mint them (test/security/log-secrets.ts: registerSecret). Each is
//     looked for as written and in the other encodings a log could show it in
//     (a 32-byte key as base64, base64url and hex; a token's secret part).
//   - shapes that are secret whoever made them: a whole Knit token
//     (`knit_` + at least 90 base64url characters: version, kind, id, 256-bit
//     secret and key), a PEM private key block, a UAPI `private_key=` line, a
//     JSON `"privateKey"` field with a value.
// Findings are printed as FILE:LINE and the kind, with the secret cut to its
// first 8 characters so the report itself doesn't leak it. Exit 0: clean;
// 1: something found; 2: usage.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const TOKEN_PREFIX = 'knit_';
// id (8) + secret (32) live at bytes 2..42 of the token body.
const TOKEN_SECRET_OFFSET = 10;
const TOKEN_SECRET_LEN = 32;
// Shorter strings are too likely to occur by chance (and no Knit secret is that short).
const MIN_SECRET_LEN = 16;

export const SHAPES = [
  { kind: 'knit token', re: /knit_[A-Za-z0-9_-]{90,}/g },
  { kind: 'PEM private key', re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/g },
  { kind: 'UAPI private_key', re: /private_key=[0-9a-f]{64}/g },
  { kind: 'privateKey field', re: /"privateKey"\s*:\s*"[A-Za-z0-9+/_=-]{40,}"/g },
];

/** Every text form a registered secret could show up in. */
export function forms(secret) {
  const out = new Set([secret]);
  if (secret.startsWith(TOKEN_PREFIX)) {
    const body = Buffer.from(secret.slice(TOKEN_PREFIX.length), 'base64url');
    if (body.length >= TOKEN_SECRET_OFFSET + TOKEN_SECRET_LEN) {
      const s = body.subarray(TOKEN_SECRET_OFFSET, TOKEN_SECRET_OFFSET + TOKEN_SECRET_LEN);
      out.add(s.toString('hex')).add(s.toString('base64')).add(s.toString('base64url'));
      // The token text without its prefix, and its middle (a log that cut the token still leaks the secret).
      out.add(secret.slice(TOKEN_PREFIX.length, TOKEN_PREFIX.length + 60));
    }
  } else if (/^[A-Za-z0-9+/]{43}=$/.test(secret)) {
    const b = Buffer.from(secret, 'base64');
    out.add(b.toString('hex')).add(b.toString('base64url'));
  } else if (/^[0-9a-f]{64}$/i.test(secret)) {
    const b = Buffer.from(secret, 'hex');
    out.add(b.toString('base64')).add(b.toString('base64url'));
  }
  return [...out].filter((f) => f.length >= MIN_SECRET_LEN);
}

function files(path, skip, out = []) {
  if (!existsSync(path)) return out;
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path).sort()) files(join(path, name), skip, out);
  } else if (resolve(path) !== skip) out.push(path);
  return out;
}

const cut = (s) => `${s.slice(0, 8)}… (${s.length} chars)`;

/** Scans `paths` for registered `secrets` and secret shapes; returns the findings. */
export function scan(paths, secrets, skip) {
  const needles = secrets.flatMap((s, i) => forms(s).map((f) => ({ f, i })));
  const findings = [];
  for (const file of paths.flatMap((p) => files(p, skip))) {
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, n) => {
      for (const { kind, re } of SHAPES) {
        for (const m of line.matchAll(re)) findings.push({ file, line: n + 1, kind, text: cut(m[0]) });
      }
      for (const { f, i } of needles) {
        if (line.includes(f)) findings.push({ file, line: n + 1, kind: `registered secret #${i + 1}`, text: cut(f) });
      }
    });
  }
  return findings;
}

function main(argv) {
  const paths = [];
  let secretsFile;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--secrets') secretsFile = argv[++i];
    else paths.push(argv[i]);
  }
  if (paths.length === 0 || (argv.includes('--secrets') && !secretsFile)) {
    console.error('usage: scan-secrets.mjs [--secrets FILE] PATH...');
    return 2;
  }
  const secrets = secretsFile && existsSync(secretsFile)
    ? [...new Set(readFileSync(secretsFile, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l.length >= MIN_SECRET_LEN))]
    : [];
  const findings = scan(paths, secrets, secretsFile && resolve(secretsFile));
  for (const f of findings) console.error(`scan-secrets: ${f.file}:${f.line}: ${f.kind}: ${f.text}`);
  if (findings.length > 0) {
    console.error(`scan-secrets: ${findings.length} secret(s) found in the logs`);
    return 1;
  }
  console.error(`scan-secrets: no secrets in ${paths.join(', ')} (${secrets.length} registered)`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) process.exit(main(process.argv.slice(2)));
