// The lab's NAT routers behave as labelled, checked with plain UDP: two echo
// servers on the lab internet report the address and port each datagram
// arrived from, so the tests read the mappings the routers made.
import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { canRunLab, canUseIptablesNft, createLab, type Lab, type LabHost, type LabRouter, type WanInput } from './netlab.js';
import { PROBE_WAIT_MS, startUdpProbe, type UdpProbe } from './udp-probe.js';
import { until as untilHelper } from '../helpers/until.js';

const ECHO_PORT = 3478;
const check = canRunLab();
const iptablesNft = canUseIptablesNft();

if (!check.ok) {
  test('NAT lab', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('NAT lab', () => {
    let lab: Lab;
    let cone: LabRouter;
    let symmetric: LabRouter;
    let outer: LabRouter;
    let inner: LabRouter;
    let s1: LabHost;
    let s2: LabHost;
    let echo1: UdpProbe;
    let echo2: UdpProbe;
    const hosts: Record<string, LabHost> = {};
    const wan: Record<WanInput, LabRouter> = {} as Record<WanInput, LabRouter>;
    let hairpin: LabRouter;
    let short: LabRouter;
    let narrow: LabRouter;
    let carrierSpace: LabRouter;
    let symCarrier: LabRouter;

    before(async () => {
      lab = await createLab();
      cone = await lab.addRouter('cone', { nat: 'cone' });
      symmetric = await lab.addRouter('sym', { nat: 'symmetric' });
      outer = await lab.addRouter('outer', { nat: 'cone' });
      inner = await lab.addRouter('inner', { nat: 'cone', behind: outer });
      s1 = await lab.addHost('s1');
      s2 = await lab.addHost('s2');
      hosts.c1 = await lab.addHost('c1', { behind: cone });
      hosts.c2 = await lab.addHost('c2', { behind: cone });
      hosts.y1 = await lab.addHost('y1', { behind: symmetric });
      hosts.d1 = await lab.addHost('d1', { behind: inner });
      for (const input of ['drop', 'reject', 'accept'] as const) {
        wan[input] = await lab.addRouter(`w${input}`, { nat: 'cone', wanInput: input });
        hosts[`w${input}`] = await lab.addHost(`hw${input}`, { behind: wan[input] });
      }
      hairpin = await lab.addRouter('hair', { nat: 'cone', hairpin: true });
      hosts.h1 = await lab.addHost('h1', { behind: hairpin });
      hosts.h2 = await lab.addHost('h2', { behind: hairpin });
      short = await lab.addRouter('short', { nat: 'cone', udpTimeoutS: 30 });
      hosts.t1 = await lab.addHost('t1', { behind: short });
      narrow = await lab.addRouter('mtu', { nat: 'cone', wanMtu: 1280 });
      hosts.m1 = await lab.addHost('m1', { behind: narrow });
      carrierSpace = await lab.addRouter('cgn', { nat: 'cone', lanPrefix: '100.64.0.0/10' });
      hosts.g1 = await lab.addHost('g1', { behind: carrierSpace });
      symCarrier = await lab.addRouter('symcgn', { nat: 'symmetric' });
      hosts.sd1 = await lab.addHost('sd1', { behind: await lab.addRouter('symhome', { nat: 'cone', behind: symCarrier }) });
      hosts.v4 = await lab.addHost('v4only', { ipv6: false });
      hosts.fwn = await lab.addHost('fwnft', { firewall: 'nftables' });
      if (iptablesNft.ok) hosts.fwi = await lab.addHost('fwipt', { firewall: 'iptables-nft' });
      echo1 = await startUdpProbe(lab, s1.ns, ECHO_PORT, { echo: true });
      echo2 = await startUdpProbe(lab, s2.ns, ECHO_PORT, { echo: true });
    });

    after(async () => {
      await lab?.teardown();
    });

    const until = (fn: () => Promise<boolean>, what: string) => untilHelper(what, fn, { timeoutMs: PROBE_WAIT_MS, intervalMs: 50 });

    /** Sends from one local port to both echo servers; returns the two observed "ip:port". */
    async function mappings(host: LabHost, port: number): Promise<[string, string]> {
      const probe = await startUdpProbe(lab, host.ns, port);
      try {
        const tag = `${host.name}-${port}`;
        await probe.send(`${s1.address}:${ECHO_PORT}`, tag);
        await probe.send(`${s2.address}:${ECHO_PORT}`, tag);
        const from1 = await probe.next((m) => m.from === `${s1.address}:${ECHO_PORT}`);
        const from2 = await probe.next((m) => m.from === `${s2.address}:${ECHO_PORT}`);
        return [JSON.parse(from1.data).observed, JSON.parse(from2.data).observed];
      } finally {
        await probe.stop();
      }
    }

    /** ICMP destination-unreachable messages the namespace has received (its own /proc/net/snmp). */
    async function unreachablesIn(ns: string): Promise<number> {
      const lines = (await lab.run(ns, ['cat', '/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Icmp:'));
      const names = lines[0]!.split(/\s+/);
      return Number(lines[1]!.split(/\s+/)[names.indexOf('InDestUnreachs')]);
    }

    /** The router's conntrack entries for UDP flows from `src` to its port `dport`. */
    async function inboundFlows(router: LabRouter, src: string, dport: number): Promise<string[]> {
      const r = await lab.run(router.ns, ['conntrack', '-L', '-p', 'udp', '--orig-src', src, '--orig-port-dst', String(dport)], { allowFailure: true });
      return r.stdout.split('\n').filter((l) => l.includes('udp'));
    }

    it('addresses are lab-only: internet in 198.18.0.0/15, LANs in 10/8 or carrier-NAT space 100.64.0.0/10', () => {
      for (const a of [cone.wanAddress, symmetric.wanAddress, outer.wanAddress, s1.address, s2.address]) assert.match(a, /^198\.1[89]\./);
      for (const h of Object.values(hosts).filter((x) => x.behind)) assert.match(h.address, /^(10|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7]))\./);
      for (const h of Object.values(hosts).filter((x) => !x.behind)) assert.match(h.address, /^198\.1[89]\./);
      assert.match(inner.wanAddress, /^10\./);
    });

    it('cone: one mapping for two destinations, on the router, port preserved', async () => {
      const [a, b] = await mappings(hosts.c1!, 40001);
      assert.equal(a, b);
      assert.equal(a, `${cone.wanAddress}:40001`);
    });

    it('symmetric: a different mapping per destination', async () => {
      const [a, b] = await mappings(hosts.y1!, 40002);
      assert.notEqual(a, b);
      assert.equal(a.split(':')[0], symmetric.wanAddress);
      assert.equal(b.split(':')[0], symmetric.wanAddress);
    });

    it('cone filters by address and port: only the contacted server gets in', async () => {
      const probe = await startUdpProbe(lab, hosts.c1!.ns, 40003);
      try {
        await probe.send(`${s1.address}:${ECHO_PORT}`, 'open');
        const mapped = JSON.parse((await probe.next((m) => m.data.includes('open'))).data).observed as string;
        const stranger = await startUdpProbe(lab, s2.ns, 5000);
        const otherPort = await startUdpProbe(lab, s1.ns, 5001);
        try {
          await stranger.send(mapped, 'from-another-host');
          await otherPort.send(mapped, 'from-another-port');
          // The marker takes the same path after them: once it is in, the others would have been too.
          await echo1.send(mapped, 'marker');
          await probe.next((m) => m.data === 'marker');
          const datas = probe.received().map((m) => m.data);
          assert.ok(!datas.includes('from-another-host'));
          assert.ok(!datas.includes('from-another-port'));
        } finally {
          await stranger.stop();
          await otherPort.stop();
        }
      } finally {
        await probe.stop();
      }
    });

    it('hosts behind the same NAT reach each other on the LAN, unNATed', async () => {
      const listener = await startUdpProbe(lab, hosts.c2!.ns, 41000, { echo: true });
      const sender = await startUdpProbe(lab, hosts.c1!.ns, 41001);
      try {
        await sender.send(`${hosts.c2!.address}:41000`, 'neighbour');
        const reply = await sender.next((m) => m.from === `${hosts.c2!.address}:41000`);
        assert.equal(JSON.parse(reply.data).observed, `${hosts.c1!.address}:41001`);
      } finally {
        await listener.stop();
        await sender.stop();
      }
    });

    it('double NAT: the world sees the outer router', async () => {
      const [a, b] = await mappings(hosts.d1!, 40004);
      assert.equal(a, b);
      assert.equal(a.split(':')[0], outer.wanAddress);
    });

    it('double NAT behind a symmetric carrier: a different mapping per destination, on the carrier', async () => {
      const [a, b] = await mappings(hosts.sd1!, 40007);
      assert.notEqual(a, b);
      assert.equal(a.split(':')[0], symCarrier.wanAddress);
      assert.equal(b.split(':')[0], symCarrier.wanAddress);
    });

    // What each WAN input policy does with a packet to a port of the router that nothing inside
    // has opened, and what that does to the mapping a host behind it makes later toward the sender.
    const wanInputCases: Array<{ input: WanInput; answers: boolean; confirms: boolean; portKept: boolean }> = [
      { input: 'drop', answers: false, confirms: false, portKept: true },
      { input: 'reject', answers: true, confirms: false, portKept: true },
      { input: 'accept', answers: true, confirms: true, portKept: false },
    ];
    for (const { input, answers, confirms, portKept } of wanInputCases) {
      it(`WAN input ${input}: unsolicited packet ${answers ? 'answered' : 'unanswered'}, ${confirms ? 'confirmed' : 'not confirmed'}; a later mapping ${portKept ? 'keeps' : 'moves off'} the port`, async () => {
        const router = wan[input];
        const host = hosts[`w${input}`]!;
        const port = 40010;
        // The marker's way in: a mapping the host opens to the echo server first.
        const opener = await startUdpProbe(lab, host.ns, 40011);
        const peer = await startUdpProbe(lab, s2.ns, 5002);
        try {
          await opener.send(`${s1.address}:${ECHO_PORT}`, 'open');
          const mapped = JSON.parse((await opener.next((m) => m.data.includes('open'))).data).observed as string;
          const before = await unreachablesIn(s2.ns);
          await peer.send(`${router.wanAddress}:${port}`, 'unsolicited');
          // The marker enters through the same WAN link after it: once it is in, the router has dealt with the first.
          await echo1.send(mapped, 'marker');
          await opener.next((m) => m.data === 'marker');
          if (answers) await until(async () => (await unreachablesIn(s2.ns)) > before, 'ICMP port unreachable at the sender');
          else assert.equal(await unreachablesIn(s2.ns), before, 'no ICMP answer');
          if (confirms) await until(async () => (await inboundFlows(router, s2.address, port)).length > 0, 'the inbound flow in conntrack');
          else assert.deepEqual(await inboundFlows(router, s2.address, port), [], 'no inbound flow committed');

          const late = await startUdpProbe(lab, host.ns, port);
          try {
            await late.send(`${s2.address}:5002`, 'late');
            const seen = (await peer.next((m) => m.data === 'late')).from;
            assert.equal(seen.split(':')[0], router.wanAddress);
            if (portKept) assert.equal(seen, `${router.wanAddress}:${port}`);
            else assert.notEqual(seen, `${router.wanAddress}:${port}`, 'masquerade avoids the tuple the inbound flow holds');
          } finally {
            await late.stop();
          }
        } finally {
          await opener.stop();
          await peer.stop();
        }
      });
    }

    it("hairpin on: a host reaches a neighbour's public mapping and the reply comes from it; off: the router answers port unreachable", async () => {
      const cases: Array<{ router: LabRouter; from: LabHost; to: LabHost; port: number; hairpins: boolean }> = [
        { router: hairpin, from: hosts.h1!, to: hosts.h2!, port: 41100, hairpins: true },
        { router: cone, from: hosts.c1!, to: hosts.c2!, port: 41110, hairpins: false },
      ];
      for (const { router, from, to, port, hairpins } of cases) {
        const target = await startUdpProbe(lab, to.ns, port);
        const sender = await startUdpProbe(lab, from.ns, port + 1);
        try {
          await target.send(`${s1.address}:${ECHO_PORT}`, 'open');
          const mapped = JSON.parse((await target.next((m) => m.data.includes('open'))).data).observed as string;
          assert.equal(mapped, `${router.wanAddress}:${port}`);
          // The sender's own mapping first, as an agent's STUN request makes one.
          await sender.send(`${s1.address}:${ECHO_PORT}`, 'open');
          await sender.next((m) => m.data.includes('open'));
          const before = await unreachablesIn(from.ns);
          await sender.send(mapped, 'hairpin');
          if (hairpins) {
            const arrived = await target.next((m) => m.data === 'hairpin');
            assert.equal(arrived.from, `${router.wanAddress}:${port + 1}`, 'NATed back in from the sender\'s public mapping (RFC 4787 REQ-9)');
            await target.send(arrived.from, 'reply');
            const reply = await sender.next((m) => m.data === 'reply');
            assert.equal(reply.from, mapped, 'the reply comes from the public mapping');
          } else {
            await until(async () => (await unreachablesIn(from.ns)) > before, 'ICMP port unreachable from the router');
            assert.deepEqual(target.received().filter((m) => m.data === 'hairpin'), []);
          }
        } finally {
          await target.stop();
          await sender.stop();
        }
      }
    });

    it('UDP conntrack timeouts: 30 s unreplied and stream when set, and a flow through the router gets at most that', async () => {
      const read = async (name: string) => Number((await lab.run(short.ns, ['cat', `/proc/sys/net/netfilter/${name}`])).stdout.trim());
      assert.equal(await read('nf_conntrack_udp_timeout'), 30);
      assert.equal(await read('nf_conntrack_udp_timeout_stream'), 30);
      await mappings(hosts.t1!, 40020);
      const flows = await lab.run(short.ns, ['conntrack', '-L', '-p', 'udp', '--orig-src', hosts.t1!.address]);
      const timeouts = flows.stdout.split('\n').filter((l) => l.includes('udp')).map((l) => Number(l.trim().split(/\s+/)[2]));
      assert.equal(timeouts.length, 2, flows.stdout);
      for (const t of timeouts) assert.ok(t > 0 && t <= 30, `timeout ${t} s`);
    });

    it('WAN MTU 1280: both ends of the link say so, and a 1400-byte datagram in is lost where a 1200-byte one arrives', async () => {
      const mtuOf = async (ns: string, dev: string) => Number(/mtu (\d+)/.exec((await lab.run(ns, ['ip', 'link', 'show', 'dev', dev])).stdout)?.[1]);
      assert.equal(await mtuOf(narrow.ns, 'wan0'), 1280);
      const probe = await startUdpProbe(lab, hosts.m1!.ns, 40030);
      try {
        await probe.send(`${s1.address}:${ECHO_PORT}`, 'open');
        const mapped = JSON.parse((await probe.next((m) => m.data.includes('open'))).data).observed as string;
        await echo1.send(mapped, 'L'.repeat(1400));
        await echo1.send(mapped, 'S'.repeat(1200));
        await probe.next((m) => m.data.startsWith('S'));
        assert.ok(!probe.received().some((m) => m.data.startsWith('L')), 'the large datagram was dropped on the narrow link');
      } finally {
        await probe.stop();
      }
    });

    it('a LAN in carrier-NAT space: the host sits at 100.64.0.10/10 and the world sees the router', async () => {
      assert.equal(carrierSpace.lanGateway, '100.64.0.1');
      assert.equal(hosts.g1!.address, '100.64.0.10');
      const [a] = await mappings(hosts.g1!, 40040);
      assert.equal(a, `${carrierSpace.wanAddress}:40040`);
    });

    it('IPv6 disabled: `ip -6 addr add` fails with "IPv6 is disabled", IPv4 works', async () => {
      const r = await lab.run(hosts.v4!.ns, ['ip', '-6', 'addr', 'add', 'fd00:6b6e::1/64', 'dev', 'eth0'], { allowFailure: true });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /IPv6 is disabled/);
      const [a] = await mappings(hosts.v4!, 40050);
      assert.equal(a, `${hosts.v4!.address}:40050`);
    });

    for (const [label, key] of [['nftables', 'fwn'], ['iptables-nft', 'fwi']] as const) {
      it(`host firewall (${label}): unsolicited input dropped, replies to its own traffic let in`, async (t) => {
        if (key === 'fwi' && !iptablesNft.ok) return t.skip(`skipped: ${iptablesNft.reason}`);
        const host = hosts[key]!;
        const probe = await startUdpProbe(lab, host.ns, 40060);
        try {
          // Same sender, same path, in order: the unsolicited datagram goes first, the reply after it.
          await echo1.send(`${host.address}:40060`, 'unsolicited');
          await probe.send(`${s1.address}:${ECHO_PORT}`, 'asked');
          await probe.next((m) => m.data.includes('asked'));
          assert.ok(!probe.received().some((m) => m.data === 'unsolicited'));
        } finally {
          await probe.stop();
        }
      });
    }

    it("a router's new public address is what the world sees next", async () => {
      const old = cone.wanAddress;
      const fresh = await lab.setRouterPublicAddress(cone);
      assert.notEqual(fresh, old);
      const [a] = await mappings(hosts.c1!, 40005);
      assert.equal(a.split(':')[0], fresh);
    });

    it('a moved host gets a new LAN address and the new router\'s mapping', async () => {
      const host = hosts.c2!;
      const before = host.address;
      const now = await lab.moveHost(host, symmetric);
      assert.notEqual(now, before);
      assert.ok(now.startsWith(symmetric.lanGateway.replace(/\.1$/, '.')));
      const [a] = await mappings(host, 40006);
      assert.equal(a.split(':')[0], symmetric.wanAddress);
      await lab.flushConntrack();
    });
  });
}
