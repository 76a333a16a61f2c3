/**
 * `knit doctor`: the thin shell around agent/doctor/checks.ts. It asks the
 * running agent for its status (and the checks it reports itself), reads the
 * state dir, probes the coordinator, its STUN ports and the host's routes
 * (agent/doctor/probes.ts), and prints one line per check — or, with --json,
 * `{checks: HealthCheck[]}`. Exit 0 when no check fails, 1 when one does; a
 * missing agent is a failing check, and the checks that don't need it still run.
 */
import { execCommand } from '../engine/exec.js';
import { doctorChecks, type DoctorInputs } from '../doctor/checks.js';
import { coordinatorAddress, probeCoordinator, readHostRoutes, stunBinding } from '../doctor/probes.js';
import type { HealthCheck } from '../health.js';
import { loadNodeRecord } from '../state.js';
import type { StatusDocument } from '../status.js';
import { fetchStatus } from './status.js';

/** The tunnel interface when the agent can't say (knit up's default). */
const DEFAULT_IFACE = 'knit0';

export async function gatherDoctorInputs(stateDir: string): Promise<DoctorInputs> {
  let agent: DoctorInputs['agent'];
  try {
    agent = { status: await fetchStatus(stateDir) };
  } catch (err) {
    agent = { error: (err as Error).message };
  }
  const status: StatusDocument | undefined = 'status' in agent ? agent.status : undefined;
  const record = loadNodeRecord(stateDir);
  // node.json is 0600: a user who can't read it still gets the URL from the agent's status.
  const node = record ?? (status ? { coordinatorUrl: status.coordinator.url, ipv4Prefix: '', ipv6Prefix: '' } : undefined);
  const [coordinator, routes] = await Promise.all([
    node ? probeCoordinator(node.coordinatorUrl) : undefined,
    process.platform === 'linux' ? readHostRoutes(execCommand) : undefined,
  ]);
  let stun: DoctorInputs['stun'] = [];
  const host = node && coordinator?.reachable && coordinator.stunPorts?.length ? await coordinatorAddress(node.coordinatorUrl) : undefined;
  if (host && coordinator?.reachable) {
    stun = await Promise.all((coordinator.stunPorts ?? []).map(async (port) => {
      const mapped = await stunBinding({ address: host, port });
      return { port, ...(mapped ? { mapped: `${mapped.address}:${mapped.port}` } : {}) };
    }));
  }
  return { stateDir, agent, node, coordinator, stun, routes, tunnelIface: status?.engine.iface ?? DEFAULT_IFACE };
}

export function formatChecks(checks: readonly HealthCheck[]): string {
  const width = Math.max(...checks.map((c) => c.check.length));
  return checks.map((c) => `${c.level.padEnd(5)} ${c.check.padEnd(width)}  ${c.detail}${c.fix ? `\n${' '.repeat(width + 8)}→ ${c.fix}` : ''}`).join('\n');
}

export async function runDoctor(stateDir: string, json: boolean): Promise<number> {
  const checks = doctorChecks(await gatherDoctorInputs(stateDir));
  console.log(json ? JSON.stringify({ checks }, null, 2) : formatChecks(checks));
  return checks.some((c) => c.level === 'fail') ? 1 : 0;
}
