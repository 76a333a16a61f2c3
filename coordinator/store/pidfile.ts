/**
 * One coordinator per data dir: a pid file created exclusively at start and
 * removed at stop. A second coordinator on the same dir — in another process
 * or in this one — refuses to start, and local admin commands that must go
 * through the live process (removing a node) know to say so. A stale file
 * from a killed process is taken over.
 *
 * This guards against an operator's mistake, not an adversary: SQLite keeps
 * the data consistent whatever happens; two coordinators on one file would
 * only disagree about who is online and hand out stale peer maps.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { KnitError } from '../../shared/errors.js';

/** Data dirs claimed by coordinators in this process (tests run several coordinators in one process). */
const claimedHere = new Set<string>();

function pidPath(dataDir: string): string {
  return join(dataDir, 'coordinator.pid');
}

/**
 * Whether `pid` is plausibly a coordinator. A pid file can outlive its process
 * (kill -9, a container restart) and the pid be reused by an unrelated program;
 * on Linux /proc tells us whether that program is Node at all.
 */
function looksLikeNode(pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return true; // no /proc (not Linux) or not ours to read: assume it is
  }
  const argv0 = basename(cmdline.split('\0')[0] ?? '');
  return argv0 === basename(process.execPath) || argv0.startsWith('node');
}

/** The pid of a live coordinator on this data dir, if any (this process counts when it holds the dir). */
export function runningCoordinatorPid(dataDir: string): number | undefined {
  if (claimedHere.has(resolve(dataDir))) return process.pid;
  let pid: number;
  try {
    pid = Number(readFileSync(pidPath(dataDir), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return looksLikeNode(pid) ? pid : undefined;
}

/**
 * Claims the data dir (which must exist) for this process; returns the release
 * function. Throws KNIT_ERR_STORE_LOCKED when a live coordinator holds it.
 */
export function claimDataDir(dataDir: string): () => void {
  const key = resolve(dataDir);
  const path = pidPath(dataDir);
  const other = runningCoordinatorPid(dataDir);
  if (other) throw new KnitError('KNIT_ERR_STORE_LOCKED', `another coordinator (pid ${other}) is using ${dataDir}`);
  // 'wx' creates the file only if it does not exist, so two coordinators starting at
  // the same moment can't both claim the dir; a stale file is removed and tried once more.
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw new KnitError('KNIT_ERR_STORE', `cannot write ${path}: ${code ?? (err as Error).message}`, { cause: err });
      const holder = runningCoordinatorPid(dataDir);
      if (holder || attempt > 0) throw new KnitError('KNIT_ERR_STORE_LOCKED', `another coordinator${holder ? ` (pid ${holder})` : ''} is using ${dataDir}`);
      try {
        unlinkSync(path);
      } catch { /* someone else took it over first; the next attempt tells */ }
    }
  }
  claimedHere.add(key);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    claimedHere.delete(key);
    try {
      if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
    } catch { /* already gone */ }
  };
}
