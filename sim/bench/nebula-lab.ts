/**
 * Debian's Nebula (1.6) in the lab, as `knit bench connect` runs it beside Knit on
 * the same topologies: a CA and certificates from `nebula-cert`, a lighthouse that is
 * also a relay (`relay.am_relay`) on the coordinator's host, and hosts that punch
 * (`punchy`) and use that relay (`relay.use_relays`). This module writes the files and
 * starts the processes; measuring is the bench's job.
 *
 * Overlay addresses are 10.254.0.0/24: they exist only on the `nebula1` interfaces
 * inside the lab's namespaces. Nebula's UDP port is 4242 everywhere (Knit's is 41641),
 * and the two are never run at once.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lab, LabHost, LabProcess } from '../../test/lab/netlab.js';

export const NEBULA_PORT = 4242;
export const NEBULA_LIGHTHOUSE_IP = '10.254.0.1';
const NEBULA_PREFIX_LEN = 24;

/** Why Nebula can't run here, or undefined when `nebula` and `nebula-cert` answer. */
export function nebulaUnavailable(): string | undefined {
  for (const cmd of ['nebula', 'nebula-cert']) {
    const r = spawnSync(cmd, ['-version'], { stdio: 'ignore', timeout: 5_000 });
    if (r.error || r.status !== 0) return `${cmd} is not available (install Debian's nebula)`;
  }
  return undefined;
}

export interface NebulaMesh {
  /** Overlay address of a host given to `config`. */
  ipOf(name: string): string;
  /** Starts the lighthouse (once) or a host's nebula; the lab stops it at teardown. */
  start(name: string): LabProcess;
}

/**
 * Writes a CA, one certificate per node and one config per node under `dir`. `hosts`
 * get overlay addresses .2, .3, … in order; the lighthouse (on `lighthouse`) is .1.
 */
export function nebulaMesh(lab: Lab, dir: string, lighthouse: LabHost, hosts: LabHost[]): NebulaMesh {
  mkdirSync(dir, { recursive: true });
  const cert = (args: string[]) => {
    const r = spawnSync('nebula-cert', args, { cwd: dir, encoding: 'utf8', timeout: 20_000 });
    if (r.status !== 0) throw new Error(`nebula-cert ${args[0]} failed: ${r.stderr || r.error?.message}`);
  };
  cert(['ca', '-name', 'knit-bench', '-out-crt', 'ca.crt', '-out-key', 'ca.key']);
  const nodes = new Map<string, { host: LabHost; ip: string; config: string }>();
  for (const [i, host] of [lighthouse, ...hosts].entries()) {
    const name = i === 0 ? 'lighthouse' : host.name;
    const ip = `10.254.0.${i + 1}`;
    cert(['sign', '-name', name, '-ip', `${ip}/${NEBULA_PREFIX_LEN}`, '-ca-crt', 'ca.crt', '-ca-key', 'ca.key', '-out-crt', `${name}.crt`, '-out-key', `${name}.key`]);
    const config = join(dir, `${name}.yml`);
    writeFileSync(config, nebulaConfig(dir, name, i === 0, lighthouse.address));
    nodes.set(name, { host, ip, config });
  }
  return {
    ipOf: (name) => nodes.get(name)!.ip,
    start(name) {
      const n = nodes.get(name)!;
      return lab.spawn(n.host.ns, ['nebula', '-config', n.config]);
    },
  };
}

/** Nebula's YAML for one node (JSON is valid YAML, so no YAML writer is needed). */
function nebulaConfig(dir: string, name: string, isLighthouse: boolean, lighthouseAddress: string): string {
  const anyRule = [{ port: 'any', proto: 'any', host: 'any' }];
  return JSON.stringify({
    pki: { ca: join(dir, 'ca.crt'), cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) },
    static_host_map: { [NEBULA_LIGHTHOUSE_IP]: [`${lighthouseAddress}:${NEBULA_PORT}`] },
    lighthouse: { am_lighthouse: isLighthouse, interval: 60, hosts: isLighthouse ? [] : [NEBULA_LIGHTHOUSE_IP] },
    listen: { host: '0.0.0.0', port: NEBULA_PORT },
    punchy: { punch: true, respond: true },
    relay: isLighthouse ? { am_relay: true, use_relays: false } : { am_relay: false, use_relays: true, relays: [NEBULA_LIGHTHOUSE_IP] },
    tun: { dev: 'nebula1', mtu: 1300 },
    logging: { level: 'info', format: 'json' },
    firewall: { outbound: anyRule, inbound: anyRule },
  }, null, 1) + '\n';
}
