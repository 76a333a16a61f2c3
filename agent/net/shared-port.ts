/**
 * Shared mode: WireGuard owns the tunnel port and the agent shares it at no
 * cost to the data path. Stateless nftables rules (notrack, so conntrack never
 * sees them and can't confuse WireGuard's flows) do two rewrites in the kernel:
 *
 *   in:  udp dport TUNNEL and payload starts with the disco magic "KNIT"
 *        or carries the STUN cookie at payload offset 4  →  dport := AGENT
 *   out: udp sport AGENT                                   →  sport := TUNNEL
 *
 * So disco and STUN leave from the tunnel port (the NAT mapping they open is
 * the one WireGuard uses) and come back to the agent's own socket; every other
 * packet on the tunnel port goes to WireGuard untouched.
 *
 * The inbound rewrite happens at the input hook after every filter chain, not
 * in prerouting: a host firewall (input policy drop) then sees these packets
 * still addressed to the tunnel port, so the one rule that opens the tunnel
 * port (docs/firewall.md) admits them. Rewritten in prerouting they reached
 * the firewall untracked and addressed to the agent's ephemeral port, and were
 * dropped — replies to our own punches included. The ruleset is a pure
 * function; the shell applies it with `nft -f -` and deletes the table on close.
 */
import { KnitError } from '../../shared/errors.js';
import { DISCO_MAGIC } from '../../shared/wire/disco.js';
import { STUN_MAGIC_COOKIE } from '../../shared/wire/stun.js';
import { runNft } from './nft.js';

/**
 * The steering chain's place at the input hook: after the filter chains a host
 * firewall uses (iptables and nftables filter 0, firewalld 10, security 50, input
 * NAT 100), so each of them sees disco and STUN still addressed to the tunnel port.
 * The socket lookup comes after the whole hook, so the rewrite still delivers.
 */
const STEER_IN_PRIORITY = 1000;

const hex32 = (b: Uint8Array) => '0x' + Buffer.from(b.subarray(0, 4)).toString('hex');

export function sharedPortTable(iface: string): string {
  return `knit_${iface.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** The nftables ruleset for one interface's shared port (table inet: IPv4 and IPv6). */
export function sharedPortRuleset(iface: string, tunnelPort: number, agentPort: number): string {
  if (!Number.isInteger(tunnelPort) || !Number.isInteger(agentPort) || tunnelPort < 1 || agentPort < 1 || tunnelPort > 65535 || agentPort > 65535 || tunnelPort === agentPort) {
    throw new RangeError('ports must be distinct integers in 1..65535');
  }
  const table = sharedPortTable(iface);
  // @th,64,32 = the first 4 payload bytes (after the 8-byte UDP header); @th,96,32 = bytes 4..7.
  const disco = `udp dport ${tunnelPort} @th,64,32 ${hex32(DISCO_MAGIC)}`;
  const stun = `udp dport ${tunnelPort} @th,96,32 0x${STUN_MAGIC_COOKIE.toString(16)}`;
  return [
    `table inet ${table} {`,
    '  chain untrack_in {',
    '    type filter hook prerouting priority raw; policy accept;',
    `    ${disco} notrack`,
    `    ${stun} notrack`,
    '  }',
    '  chain steer_in {',
    `    type filter hook input priority ${STEER_IN_PRIORITY}; policy accept;`,
    `    ${disco} udp dport set ${agentPort}`,
    `    ${stun} udp dport set ${agentPort}`,
    '  }',
    '  chain stamp_out {',
    '    type filter hook output priority raw; policy accept;',
    `    udp sport ${agentPort} notrack udp sport set ${tunnelPort}`,
    '  }',
    '}',
  ].join('\n') + '\n';
}

export interface SharedPort {
  readonly table: string;
  close(): Promise<void>;
}

/** Installs the rules (replacing a stale table of a previous run); throws KNIT_ERR_ENGINE when nft can't. */
export async function installSharedPort(iface: string, tunnelPort: number, agentPort: number): Promise<SharedPort> {
  const table = sharedPortTable(iface);
  await runNft(['delete', 'table', 'inet', table]); // a leftover from a killed agent; absent is fine
  const r = await runNft(['-f', '-'], sharedPortRuleset(iface, tunnelPort, agentPort));
  if (r.code !== 0) throw new KnitError('KNIT_ERR_ENGINE', `cannot install the shared-port rules: ${r.stderr.trim().split('\n')[0]}`);
  let closed = false;
  return {
    table,
    async close() {
      if (closed) return;
      closed = true;
      await runNft(['delete', 'table', 'inet', table]);
    },
  };
}
