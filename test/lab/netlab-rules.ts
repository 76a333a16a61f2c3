/**
 * The text the lab writes into its namespaces, pure: a router's LAN plan and nftables ruleset,
 * and the host firewalls an administrator would set up. test/lab/netlab.ts applies them;
 * docs/lab.md describes what each option means.
 */
import { intToIpv4, ipv4ToInt, prefixContains } from '../../shared/net/cidr.js';
import type { LabRouter } from './netlab.js';

/**
 * A router's LAN from its prefix: `address(n)` is the n-th address in it (1 = the gateway). Only
 * lab-private space is allowed (10.0.0.0/8, or carrier-NAT space 100.64.0.0/10 for the variety
 * real uplinks have), so nothing a test sends could mean an address outside its namespaces.
 */
export function labLan(prefix: string): { prefix: string; prefixLen: number; address(n: number): string } {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(prefix);
  const len = m ? Number(m[5]) : -1;
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || len < 8 || len > 24) throw new RangeError(`lanPrefix ${prefix} is not an IPv4 prefix from /8 to /24`);
  const address = m.slice(1, 5).map(Number).join('.');
  const base = ipv4ToInt(address);
  if ((base & (2 ** (32 - len) - 1)) !== 0) throw new RangeError(`lanPrefix ${prefix} has host bits set`);
  const inside = (net: string, bits: number) => len >= bits && prefixContains({ base: ipv4ToInt(net), bits }, address);
  if (!inside('10.0.0.0', 8) && !inside('100.64.0.0', 10)) throw new RangeError(`lanPrefix ${prefix} is outside 10.0.0.0/8 and 100.64.0.0/10`);
  return { prefix, prefixLen: len, address: (n) => intToIpv4((base + n) >>> 0) };
}

/**
 * The router's nftables ruleset, from its NAT kind and options.
 *
 * `full-cone` adds a DNAT of every new inbound UDP flow to the first host behind the router
 * (port kept), which with masquerade's port preservation is endpoint-independent filtering:
 * the classic full cone, for a one-host LAN.
 *
 * `hairpin` records every UDP mapping the router makes, both ways (public port ⇄ inner address
 * and port, read from conntrack after masquerade chose the port), DNATs a LAN packet addressed
 * to one of the router's own addresses (not its LAN gateway) on a recorded port to that inner
 * host, and SNATs it to the sender's own public mapping (RFC 4787 REQ-9: the receiver sees the
 * external address and port, as it would from outside, so a NAT nested behind this one admits
 * it). A sender without a mapping yet is masqueraded to the router's LAN address instead.
 *
 * Forwarded traffic is always filtered (a new flow from the WAN is dropped unless DNATed);
 * traffic to the router itself follows `wanInput`: drop and reject are one case each among
 * three, not a fix — real routers do all three, and the product has to work behind each.
 */
export function natRuleset(router: Pick<LabRouter, 'nat' | 'wanInput' | 'hairpin' | 'lanGateway'>, fullConeHost?: string): string {
  const random = router.nat === 'symmetric' ? ' fully-random' : '';
  const cone = router.nat === 'full-cone' && fullConeHost !== undefined;
  const prerouting = [
    ...(cone ? [`    iifname "wan0" udp dport 1024-65535 dnat to ${fullConeHost}`] : []),
    ...(router.hairpin ? [`    iifname "br0" ip daddr != ${router.lanGateway} fib daddr type local meta l4proto udp dnat ip addr . port to udp dport map @inbound`] : []),
  ];
  return [
    'table ip knit_lab {',
    ...(router.hairpin ? [
      // Longer than any UDP conntrack timeout, and refreshed by every packet out.
      '  map inbound {',
      '    type inet_service : ipv4_addr . inet_service',
      '    flags dynamic, timeout',
      '    timeout 180s',
      '  }',
      '  map outbound {',
      '    type ipv4_addr . inet_service : ipv4_addr . inet_service',
      '    flags dynamic, timeout',
      '    timeout 180s',
      '  }',
      '  chain record {',
      // After srcnat: the reply tuple's destination is the public address and port masquerade chose.
      '    type filter hook postrouting priority srcnat + 10; policy accept;',
      '    oifname "wan0" meta l4proto udp update @inbound { ct reply proto-dst : ct original ip saddr . ct original proto-src }',
      '    oifname "wan0" meta l4proto udp update @outbound { ct original ip saddr . ct original proto-src : ct reply ip daddr . ct reply proto-dst }',
      '  }',
    ] : []),
    ...(prerouting.length > 0 ? [
      '  chain prerouting {',
      '    type nat hook prerouting priority dstnat; policy accept;',
      ...prerouting,
      '  }',
    ] : []),
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "wan0" masquerade${random}`,
    ...(router.hairpin ? [
      '    iifname "br0" oifname "br0" ct status dnat meta l4proto udp snat ip addr . port to ip saddr . udp sport map @outbound',
      '    iifname "br0" oifname "br0" ct status dnat masquerade',
    ] : []),
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    '    ct state established,related accept',
    ...(cone || router.hairpin ? ['    ct status dnat accept'] : []),
    '    iifname "br0" oifname "wan0" accept',
    '  }',
    // `accept` has no input chain: the router's own stack sees every unsolicited packet.
    ...(router.wanInput === 'accept' ? [] : [
      '  chain input {',
      '    type filter hook input priority filter; policy accept;',
      '    iifname "wan0" ct state established,related accept',
      `    iifname "wan0" ${router.wanInput}`,
      '  }',
    ]),
    '}',
  ].join('\n') + '\n';
}

/**
 * A server's own firewall, as an administrator writes it: Debian's `inet filter` table
 * (nftables), input policy drop, replies and loopback accepted.
 */
export const HOST_FIREWALL_NFTABLES = [
  'table inet filter {',
  '  chain input {',
  '    type filter hook input priority filter; policy drop;',
  '    ct state established,related accept',
  '    iif "lo" accept',
  '  }',
  '}',
].join('\n') + '\n';

/** The same with iptables (the nf_tables backend builds `ip filter INPUT`). */
export const HOST_FIREWALL_IPTABLES = [
  'iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
  'iptables -A INPUT -i lo -j ACCEPT',
  'iptables -P INPUT DROP',
].join('\n');
