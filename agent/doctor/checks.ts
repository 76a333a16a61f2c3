/**
 * `knit doctor`'s verdicts, pure: what was observed in, HealthCheck[] out
 * (agent/health.ts). One function per check; `doctorChecks` runs them in the
 * order a person fixes things (the agent, the coordinator, STUN, the relay,
 * port mapping, the clock, the mesh prefix) and puts the agent's own checks
 * (status.health) after its "agent" line. Where the agent reports a check of
 * the same name, the agent's wins: it sees from inside what doctor guesses
 * from outside. The I/O that gathers the inputs lives in probes.ts; the
 * command in agent/cli/doctor.ts.
 */
import { isIP } from 'node:net';
import { ipToBytes } from '../../shared/net/ip-bytes.js';
import type { HealthCheck } from '../health.js';
import type { StatusDocument } from '../status.js';

export type CoordinatorProbe =
  | { reachable: true; rttMs: number; stunPorts?: number[]; clockSkewMs?: number }
  | { reachable: false; error: string };

/** One STUN Binding sent from this host to a port the coordinator offers. */
export interface StunAnswer { port: number; mapped?: string }

export interface HostRoute { dst: string; dev: string }

export interface DoctorInputs {
  stateDir: string;
  /** The agent's status document, or why its local API didn't answer. */
  agent: { status: StatusDocument } | { error: string };
  /** node.json: undefined when this state dir has never joined. */
  node?: { coordinatorUrl: string; ipv4Prefix: string; ipv6Prefix: string };
  /** Undefined when there is no coordinator URL to ask. */
  coordinator?: CoordinatorProbe;
  /** One per port the coordinator offers (empty when it offers none or wasn't reached). */
  stun: StunAnswer[];
  /** The host's routes; undefined when they couldn't be read. */
  routes?: HostRoute[];
  /** The tunnel interface (its routes are Knit's own). */
  tunnelIface: string;
}

/**
 * Clock skew past which doctor warns. The measurement is good to about a second (the Date
 * header's resolution plus half the RTT); NTP keeps hosts within milliseconds. What reads
 * wall time across machines — token expiry (checked by the coordinator's clock against the
 * lifetime the admin chose, minutes at the least), last-seen and handshake ages in status,
 * log timestamps lined up across hosts — is misleading by a minute, not by a few seconds.
 */
export const CLOCK_SKEW_WARN_MS = 60_000;

const UP_HINT = (dir: string) => `start it: knit up --state ${dir} (the first time with --token TOKEN), or its service (knit install-service agent)`;

export function agentCheck(i: Pick<DoctorInputs, 'agent' | 'stateDir'>): HealthCheck {
  if ('status' in i.agent) return { check: 'agent', level: 'ok', detail: `the agent for ${i.stateDir} is running (${i.agent.status.self.name}, ${i.agent.status.self.ips.join(', ')})` };
  return { check: 'agent', level: 'fail', detail: i.agent.error, fix: UP_HINT(i.stateDir) };
}

export function coordinatorCheck(i: Pick<DoctorInputs, 'agent' | 'node' | 'coordinator' | 'stateDir'>): HealthCheck {
  if (!i.node) return { check: 'coordinator', level: 'fail', detail: `${i.stateDir} holds no node (never joined)`, fix: `join: knit up --token TOKEN --state ${i.stateDir}` };
  const url = i.node.coordinatorUrl;
  const c = i.coordinator;
  if (!c || !c.reachable) {
    return {
      check: 'coordinator', level: 'fail', detail: `${url} does not answer from this host${c ? `: ${c.error}` : ''}`,
      fix: 'check that the coordinator runs and that this host reaches its address and TCP port (its --url must be an address agents can reach)',
    };
  }
  const control = 'status' in i.agent ? i.agent.status.coordinator : undefined;
  if (control && control.status !== 'connected') {
    return {
      check: 'coordinator', level: control.status === 'removed' ? 'fail' : 'warn',
      detail: `${url} answers, but the agent's control connection is ${control.status}${control.detail ? ` (${control.detail})` : ''}`,
      fix: control.status === 'removed' ? 'this node was removed from the mesh: join again with a new token' : 'see the agent\'s log for why the control connection fails',
    };
  }
  return { check: 'coordinator', level: 'ok', detail: `${url} answers in ${c.rttMs} ms${control ? '; the agent is connected' : ''}` };
}

export function stunCheck(i: Pick<DoctorInputs, 'agent' | 'coordinator' | 'stun'>): HealthCheck | undefined {
  const c = i.coordinator;
  if (!c?.reachable || c.stunPorts === undefined) return undefined; // said by the coordinator check, or an older coordinator
  const nat = 'status' in i.agent ? i.agent.status.self.natType : undefined;
  const natText = nat ? `; NAT type ${nat}` : '';
  if (c.stunPorts.length === 0) {
    return {
      check: 'stun', level: 'warn', detail: 'the coordinator offers no STUN port: this node learns no public endpoint, so peers behind NAT reach it only by relay',
      fix: 'run the coordinator without --stun off',
    };
  }
  const silent = i.stun.filter((a) => a.mapped === undefined).map((a) => a.port);
  if (silent.length === i.stun.length) {
    return {
      check: 'stun', level: 'fail', detail: `no STUN answer from UDP port${silent.length > 1 ? 's' : ''} ${silent.join(', ')} of the coordinator: UDP to it is blocked${natText}`,
      fix: 'allow outbound UDP to the coordinator\'s STUN ports (a local or network firewall drops it); until then peers are relayed',
    };
  }
  if (silent.length > 0) {
    return {
      check: 'stun', level: 'warn', detail: `STUN port ${silent.join(', ')} does not answer (${i.stun.length - silent.length} of ${i.stun.length} do): the NAT type can't be classified${natText}`,
      fix: 'allow outbound UDP to every STUN port the coordinator offers',
    };
  }
  if (c.stunPorts.length === 1) {
    return {
      check: 'stun', level: 'warn', detail: `the coordinator offers one STUN port (${c.stunPorts[0]}): the NAT type stays unknown and hard-NAT traversal never starts${natText}`,
      fix: 'the coordinator opens a second port by default (its port + 1): free that port on the coordinator host, or name one with --stun2 HOST:PORT',
    };
  }
  if (nat === 'blocked') {
    return { check: 'stun', level: 'warn', detail: `STUN ports ${c.stunPorts.join(', ')} answer this host, but not the agent's tunnel port: NAT type blocked`, fix: 'a firewall drops UDP from the tunnel port: allow it outbound' };
  }
  return { check: 'stun', level: 'ok', detail: `STUN ports ${c.stunPorts.join(', ')} answer${natText}` };
}

export function relayCheck(status: StatusDocument): HealthCheck {
  const r = status.relay;
  if (!r) {
    return {
      check: 'relay', level: 'warn', detail: 'the coordinator announces no relay: peers that can\'t go direct stay unreachable',
      fix: 'run the coordinator with its relay (the default; not --relay off) or announce one with --external-relay',
    };
  }
  const bound = status.counters.relayBound ?? 0;
  if (r.transport === 'ws') {
    return { check: 'relay', level: 'warn', detail: `UDP to the relay ${r.endpoint} fails; relayed traffic goes over its WebSocket${r.ws ? ` (${r.ws})` : ''}, which is slower`, fix: `allow outbound UDP to ${r.endpoint}` };
  }
  return { check: 'relay', level: 'ok', detail: bound > 0 ? `relay ${r.endpoint} answers (${bound} binding${bound === 1 ? '' : 's'})` : `relay ${r.endpoint} announced (not needed yet)` };
}

export function portMappingCheck(status: StatusDocument): HealthCheck {
  const pm = status.portMapping;
  if (!pm) return { check: 'portmap', level: 'ok', detail: 'port mapping is off (--no-port-mapping)' };
  if (pm.external && pm.verified) return { check: 'portmap', level: 'ok', detail: `${pm.protocol} mapping ${pm.external}, verified from outside` };
  if (pm.external) {
    return {
      check: 'portmap', level: 'warn', detail: `the gateway mapped ${pm.external} (${pm.protocol}) but nothing arrives through it${pm.detail ? `: ${pm.detail}` : ''}`,
      fix: 'the mapping is not used; hole punching and the relay still work. Check the router\'s port forwarding / UPnP settings',
    };
  }
  // No gateway protocol is common and costs nothing: punching and the relay do the work.
  return { check: 'portmap', level: 'ok', detail: `no port mapping (${pm.state}${pm.detail ? `: ${pm.detail}` : ''})` };
}

export function clockCheck(c: CoordinatorProbe | undefined): HealthCheck | undefined {
  if (!c?.reachable || c.clockSkewMs === undefined) return undefined;
  const s = Math.round(c.clockSkewMs / 1000);
  const ahead = s >= 0 ? `${s} s ahead of` : `${-s} s behind`;
  const skew = s === 0 ? 'less than a second apart' : s > 0 ? `${s} s ahead` : `${-s} s behind`;
  if (Math.abs(c.clockSkewMs) <= CLOCK_SKEW_WARN_MS) return { check: 'clock', level: 'ok', detail: `this host's clock is within a minute of the coordinator's (${skew})` };
  return {
    check: 'clock', level: 'warn', detail: `this host's clock is ${ahead} the coordinator's: token expiry, last-seen and handshake ages read wrong across the two`,
    fix: 'synchronise the clock (systemd-timesyncd, chrony or ntpd)',
  };
}

/** A prefix as bytes and a length; a bare address is a host route. */
function parsePrefix(text: string): { bytes: Uint8Array; bits: number } | undefined {
  const [addr = '', len] = text.split('/');
  const family = isIP(addr);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  const bits = len === undefined ? max : Number(len);
  if (!Number.isInteger(bits) || bits < 0 || bits > max) return undefined;
  return { bytes: ipToBytes(addr), bits };
}

/** Whether two prefixes of one family share any address: their first min(bits) bits agree. */
export function prefixesOverlap(a: string, b: string): boolean {
  const p = parsePrefix(a);
  const q = parsePrefix(b);
  if (!p || !q || p.bytes.length !== q.bytes.length) return false;
  const bits = Math.min(p.bits, q.bits);
  for (let i = 0; i < bits; i++) {
    const bit = (x: Uint8Array) => (x[i >> 3]! >> (7 - (i & 7))) & 1;
    if (bit(p.bytes) !== bit(q.bytes)) return false;
  }
  return true;
}

export function prefixOverlapCheck(i: Pick<DoctorInputs, 'node' | 'routes' | 'tunnelIface'>): HealthCheck | undefined {
  if (!i.node || !i.routes) return undefined;
  const mesh = [i.node.ipv4Prefix, i.node.ipv6Prefix].filter((p) => p !== '');
  if (mesh.length === 0) return undefined;
  // A default route overlaps everything and loses to the mesh's more specific routes: not a clash.
  const clashes = i.routes.filter((r) => r.dev !== i.tunnelIface && r.dst !== 'default' && parsePrefix(r.dst)?.bits !== 0)
    .flatMap((r) => mesh.filter((m) => prefixesOverlap(r.dst, m)).map((m) => ({ ...r, mesh: m })));
  if (clashes.length === 0) return { check: 'prefix', level: 'ok', detail: `no local route overlaps the mesh prefix ${mesh.join(', ')}` };
  return {
    check: 'prefix', level: 'warn',
    detail: `${clashes.map((c) => `${c.dst} on ${c.dev}`).join(', ')} overlap${clashes.length === 1 ? 's' : ''} the mesh prefix ${[...new Set(clashes.map((c) => c.mesh))].join(', ')}: ` +
      'mesh addresses and that network compete for the same addresses (a peer whose route is missing is sent there; hosts of that network inside the mesh prefix are unreachable)',
    fix: 'give the mesh a prefix no local network uses (--ipv4-prefix at the coordinator\'s first start), or renumber that network',
  };
}

/** Every check, in the order a person fixes things. */
export function doctorChecks(i: DoctorInputs): HealthCheck[] {
  const status = 'status' in i.agent ? i.agent.status : undefined;
  const own = status?.health ?? [];
  const mine = (c: HealthCheck | undefined): c is HealthCheck => c !== undefined && !own.some((o) => o.check === c.check);
  return [
    agentCheck(i),
    ...own,
    ...[
      coordinatorCheck(i),
      stunCheck(i),
      status && relayCheck(status),
      status && portMappingCheck(status),
      clockCheck(i.coordinator),
      prefixOverlapCheck(i),
    ].filter(mine),
  ];
}
