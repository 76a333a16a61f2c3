// The lab's NAT routers behave as labelled, checked with plain UDP: two echo
// servers on the lab internet report the address and port each datagram
// arrived from, so the tests read the mappings the routers made.
import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { canRunLab, createLab, type Lab, type LabHost, type LabRouter } from './netlab.js';
import { startUdpProbe, type UdpProbe } from './udp-probe.js';

const ECHO_PORT = 3478;
const check = canRunLab();

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
      echo1 = await startUdpProbe(lab, s1.ns, ECHO_PORT, { echo: true });
      echo2 = await startUdpProbe(lab, s2.ns, ECHO_PORT, { echo: true });
    });

    after(async () => {
      await lab?.teardown();
    });

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

    it('addresses are lab-only: internet in 198.18.0.0/15, LANs in 10/8', () => {
      for (const a of [cone.wanAddress, symmetric.wanAddress, outer.wanAddress, s1.address, s2.address]) assert.match(a, /^198\.1[89]\./);
      for (const h of Object.values(hosts)) assert.match(h.address, /^10\./);
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
