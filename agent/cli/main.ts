/**
 * The agent's commands: up, down, status, netcheck, ping, doctor. Exit codes: 0 ok,
 * 1 operational failure, 2 usage error; every failure is one line on stderr.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KnitError, isKnitError } from '../../shared/errors.js';
import { intFlag, listFlag, oneOf, parseFlags } from '../../shared/cli/args.js';
import { callAgent } from '../api/client.js';
import { DEFAULT_STATE_DIR, socketPath } from '../state.js';
import { runDoctor } from './doctor.js';
import { fetchStatus, formatStatus, pingOnce, requestDown } from './status.js';
import { runUp } from './up.js';

const HELP: Record<string, string> = {
  up: `usage: knit up [--token TOKEN] [flags]
  --token TOKEN         join token (needed the first time only)
  --engine KIND         memory | wireguard-go | kernel (default wireguard-go)
  --iface NAME          tunnel interface (default knit0)
  --port N              tunnel UDP port (default 41641; 0 = any)
  --port-mode MODE      auto | shared | proxy: how the agent shares the port with the engine (default auto = shared where nftables works)
  --state DIR           state directory (default /var/lib/knit as root, ~/.knit otherwise)
  --interfaces NAMES    only these interfaces give endpoint candidates (lo must be named to be used)
  --lan-interfaces NAMES  announce and browse mDNS only on these (default: --interfaces, else every non-loopback IPv4 interface)
  --no-lan-discovery    don't find peers on the LAN by mDNS
  --no-port-mapping     don't ask the gateway for a port mapping (PCP, NAT-PMP, UPnP-IGD)
  --port-mapping-protocols LIST  which of pcp,natpmp,upnp to try, in that order (default pcp,natpmp,upnp)
  --keepalive SECONDS   WireGuard persistent keepalive (default 25)
  --hostname NAME       name to register (default: this machine's)
  --eager-peers N       punch every peer at once up to N peers, on demand beyond (default 128)
  --firewall MODE       on | off: add scoped accept rules for the tunnel to host input chains that drop (default on; off = report what to open)`,
  down: 'usage: knit down [--state DIR]',
  status: 'usage: knit status [--json] [--state DIR]',
  netcheck: 'usage: knit netcheck [--json] [--state DIR]   (asks the running agent to probe from its tunnel port)',
  doctor: `usage: knit doctor [--json] [--state DIR]
  checks what makes a node fail silently, one line each (ok / warn / fail, and what to do):
  the agent, its own checks (engine, IPv6, firewall, relay, port mapping, MTU), the coordinator,
  its STUN ports and the NAT type, the relay, port mapping, the clock, a mesh prefix that overlaps
  a local route. --json prints {checks: [{check, level, detail, fix?}]}. Exit 1 when a check fails`,
  ping: 'usage: knit ping PEER [--count N] [--until-direct] [--state DIR]   (PEER: name, mesh IP or node key)',
};

function defaultStateDir(): string {
  return process.getuid?.() === 0 ? DEFAULT_STATE_DIR : join(homedir(), '.knit');
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { json: { type: 'boolean' }, state: { type: 'string' } });
  if (values.help) return console.log(HELP.status), 0;
  const doc = await fetchStatus(values.state ?? defaultStateDir());
  console.log(values.json ? JSON.stringify(doc, null, 2) : formatStatus(doc));
  return 0;
}

async function doctor(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { json: { type: 'boolean' }, state: { type: 'string' } });
  if (values.help) return console.log(HELP.doctor), 0;
  return runDoctor(values.state ?? defaultStateDir(), values.json === true);
}

async function netcheck(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { json: { type: 'boolean' }, state: { type: 'string' } });
  if (values.help) return console.log(HELP.netcheck), 0;
  const dir = values.state ?? defaultStateDir();
  const r = (await callAgent(socketPath(dir), 'POST', '/v1/netcheck')) as {
    result?: { reflexive: { address: string; port: number }[]; natType: string; portPreserved?: boolean; answered: number; asked: number };
    servers: string[]; localAddresses: string[]; port: number;
  };
  if (values.json) return console.log(JSON.stringify(r, null, 2)), 0;
  const res = r.result;
  const mapping: Record<string, string> = {
    'endpoint-independent': 'endpoint-independent mapping (RFC 4787 EIM): hole punching works',
    'endpoint-dependent': 'endpoint-dependent mapping (symmetric NAT): direct paths need an easy NAT on the other side',
    none: 'no NAT: the tunnel port is reachable as is',
    unknown: 'unknown: only one STUN port answered (the coordinator offers two by default; knit doctor says which is missing)',
    blocked: 'no STUN answer: UDP to the coordinator seems blocked',
  };
  console.log(`tunnel port     ${r.port}`);
  console.log(`local addresses ${r.localAddresses.join(' ') || '(none selected)'}`);
  console.log(`STUN servers    ${r.servers.join(' ') || '(not known yet: the agent has not reached the coordinator)'}`);
  if (res) {
    console.log(`UDP             ${res.answered > 0 ? `yes (${res.answered}/${res.asked} answered)` : 'no answer'}`);
    console.log(`reflexive       ${res.reflexive.map((e) => `${e.address}:${e.port}`).join(' ') || '-'}`);
    console.log(`mapping         ${mapping[res.natType] ?? res.natType}`);
    console.log(`port preserved  ${res.portPreserved === undefined ? '-' : res.portPreserved ? 'yes' : 'no'}`);
  }
  return 0;
}

async function ping(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { state: { type: 'string' }, count: { type: 'string' }, 'until-direct': { type: 'boolean' } }, true);
  if (values.help) return console.log(HELP.ping), 0;
  const peer = positionals[0];
  if (!peer || positionals.length > 1) throw new KnitError('KNIT_ERR_USAGE', HELP.ping);
  const dir = values.state ?? defaultStateDir();
  const count = intFlag(values.count, 'count', 1, 1000, values['until-direct'] ? 30 : 4);
  let lastPath: string | undefined;
  let answered = 0;
  for (let i = 0; i < count; i++) {
    const r = await pingOnce(dir, peer);
    if (r.ok) {
      answered++;
      if (lastPath !== undefined && lastPath !== r.path) console.log(`path changed: ${lastPath} → ${r.path}`);
      lastPath = r.path;
      console.log(`pong from ${peer} via ${r.path} ${r.endpoint} in ${r.rttMs}ms`);
      if (values['until-direct'] && (r.path === 'direct' || r.path === 'lan')) return 0;
    } else console.log(`no answer from ${peer}${r.error ? ` (${r.error})` : ''}`);
    if (i + 1 < count) await new Promise((res) => setTimeout(res, 1000));
  }
  if (values['until-direct']) {
    console.error(`knit ping: no direct path to ${peer} after ${count} tries`);
    return 1;
  }
  return answered > 0 ? 0 : 1;
}

/** --port-mapping-protocols: a non-empty list of pcp, natpmp, upnp without repeats. */
function portMappingProtocols(value: string | undefined, off: boolean): ('pcp' | 'natpmp' | 'upnp')[] | undefined {
  if (value === undefined) return undefined;
  if (off) throw new KnitError('KNIT_ERR_USAGE', '--port-mapping-protocols and --no-port-mapping contradict each other');
  const items = value.split(',').map((s) => s.trim());
  const allowed = ['pcp', 'natpmp', 'upnp'] as const;
  if (items.some((s) => !allowed.includes(s as 'pcp')) || new Set(items).size !== items.length) {
    throw new KnitError('KNIT_ERR_USAGE', '--port-mapping-protocols must be a comma-separated list of pcp, natpmp, upnp (each at most once)');
  }
  return items as ('pcp' | 'natpmp' | 'upnp')[];
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    token: { type: 'string' }, engine: { type: 'string' }, iface: { type: 'string' }, port: { type: 'string' },
    state: { type: 'string' }, interfaces: { type: 'string' }, keepalive: { type: 'string' }, hostname: { type: 'string' },
    'port-mode': { type: 'string' }, 'eager-peers': { type: 'string' }, firewall: { type: 'string' },
    'lan-interfaces': { type: 'string' }, 'no-lan-discovery': { type: 'boolean' },
    'no-port-mapping': { type: 'boolean' }, 'port-mapping-protocols': { type: 'string' },
  });
  if (values.help) return console.log(HELP.up), 0;
  const iface = values.iface ?? 'knit0';
  if (!/^[A-Za-z0-9_-]{1,15}$/.test(iface)) throw new KnitError('KNIT_ERR_USAGE', '--iface must be 1-15 letters, digits, _ or -');
  if (values.hostname !== undefined && !/^[A-Za-z0-9-]{1,63}$/.test(values.hostname)) throw new KnitError('KNIT_ERR_USAGE', '--hostname must be 1-63 letters, digits or hyphens');
  return runUp({
    token: values.token,
    engine: oneOf(values.engine, 'engine', ['memory', 'wireguard-go', 'kernel'] as const, 'wireguard-go'),
    portMode: oneOf(values['port-mode'], 'port-mode', ['auto', 'shared', 'proxy'] as const, 'auto'),
    iface,
    port: intFlag(values.port, 'port', 0, 65535, 41641),
    stateDir: values.state ?? defaultStateDir(),
    interfaces: listFlag(values.interfaces),
    lanDiscovery: values['no-lan-discovery'] !== true,
    lanInterfaces: listFlag(values['lan-interfaces']),
    portMapping: values['no-port-mapping'] !== true,
    portMappingProtocols: portMappingProtocols(values['port-mapping-protocols'], values['no-port-mapping'] === true),
    keepaliveS: intFlag(values.keepalive, 'keepalive', 1, 3600, 25),
    hostname: values.hostname,
    firewall: oneOf(values.firewall, 'firewall', ['on', 'off'] as const, 'on'),
    eagerPeers: values['eager-peers'] === undefined ? undefined : intFlag(values['eager-peers'], 'eager-peers', 0, 100_000, 128),
  });
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { state: { type: 'string' } });
  if (values.help) return console.log(HELP.down), 0;
  const dir = values.state ?? defaultStateDir();
  if (!existsSync(socketPath(dir))) throw new KnitError('KNIT_ERR_UNREACHABLE', `no agent is running for ${dir}`);
  await requestDown(dir);
  console.log('knit: agent is leaving the mesh');
  return 0;
}

export async function runAgentCli(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'up': return await up(rest);
      case 'down': return await down(rest);
      case 'status': return await status(rest);
      case 'netcheck': return await netcheck(rest);
      case 'ping': return await ping(rest);
      case 'doctor': return await doctor(rest);
      default: throw new KnitError('KNIT_ERR_USAGE', `unknown command ${cmd}`);
    }
  } catch (err) {
    if (!isKnitError(err)) throw err;
    console.error(`knit ${cmd}: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}

