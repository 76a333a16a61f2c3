/**
 * One coordinator per data dir: a pid file written at start and removed at
 * stop. A second coordinator on the same dir refuses to start, and local
 * admin commands that must go through the live process (removing a node)
 * know to say so. A stale file from a killed process is taken over.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KnitError } from '../../shared/errors.js';

function pidPath(dataDir: string): string {
  return join(dataDir, 'coordinator.pid');
}

/** The pid of a live coordinator on this data dir, if any. */
export function runningCoordinatorPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidPath(dataDir), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

export function claimDataDir(dataDir: string): () => void {
  const other = runningCoordinatorPid(dataDir);
  if (other) throw new KnitError('KNIT_ERR_STORE_LOCKED', `another coordinator (pid ${other}) is using ${dataDir}`);
  writeFileSync(pidPath(dataDir), `${process.pid}\n`);
  return () => {
    try {
      if (readFileSync(pidPath(dataDir), 'utf8').trim() === String(process.pid)) unlinkSync(pidPath(dataDir));
    } catch { /* already gone */ }
  };
}
