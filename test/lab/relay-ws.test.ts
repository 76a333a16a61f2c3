/**
 * The relay's WebSocket fallback in the lab: two hosts behind two symmetric
 * NATs (no punch can meet) whose routers drop every UDP packet to the relay's
 * port, so the relay never answers over UDP. The agents (real `knit` processes,
 * wireguard-go) fall back to the relay's WebSocket (TCP, same port) and the
 * hosts ping each other through the tunnel. One side runs the shared port mode
 * (WireGuard talks to the bridge's loopback stand-in), the other the proxy mode.
 * When the rule is removed, the pair goes back to the relay over UDP.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { startSymmetricPair, type LabMesh } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabRouter } from './netlab.js';

const check = canRunLab();
const RELAY_PORT = 3480;

/** Drops every forwarded UDP packet to the relay's port (its own table, so the NAT rules stay as they are). */
function blockRule(relayHost: string): string {
  return ['table ip knit_relay_block {', '  chain forward {', '    type filter hook forward priority -10; policy accept;',
    `    ip daddr ${relayHost} udp dport ${RELAY_PORT} counter drop`, '  }', '}'].join('\n') + '\n';
}

if (!check.ok) {
  test('relay over WebSocket when UDP to the relay is dropped', (t) => { t.skip(`skipped: ${check.reason}`); });
} else {
  describe('relay over WebSocket when UDP to the relay is dropped (wireguard-go, nftables)', () => {
    let lab: Lab;
    let dir: string;
    let coordHost: LabHost;
    let sym1: LabRouter;
    let sym2: LabRouter;
    let mesh: LabMesh;
    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number) => mesh.until(what, fn, timeoutMs);
    const status = (name: string) => mesh.status(name);
    const pings = (from: string, to: string) => mesh.pings(from, to);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-relay-ws-lab-'));
      lab = await createLab();
      // A firewall on each router: no UDP reaches the relay's port (TCP, the WebSocket, still does).
      ({ coordHost, sym1, sym2, mesh } = await startSymmetricPair(lab, dir, async (routers, coord) => {
        for (const r of routers) await lab.run(r.ns, ['nft', '-f', '-'], { input: blockRule(coord.address) });
      }));
    });

    after(async () => {
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const peerOf = (from: string, to: string) => mesh.peer(from, to);

    it('UDP to the relay dropped: the hosts ping each other over the relay\'s WebSocket', async (t) => {
      const t0 = Date.now();
      await until('x pings y', () => pings('x', 'y'), 60_000);
      t.diagnostic(`first ping reply x→y over the WebSocket ${Date.now() - t0} ms after the test began waiting`);
      assert.ok(await pings('y', 'x'));
      for (const [a, b] of [['x', 'y'], ['y', 'x']] as const) {
        const p = (await peerOf(a, b))!;
        assert.equal(p.path, 'relay', `${a} → ${b}`);
        assert.equal(p.transport, 'ws', `${a} → ${b} over the WebSocket`);
        assert.equal(p.endpoint, `ws://${coordHost.address}:${RELAY_PORT}/v1/relay`);
      }
      for (const n of ['x', 'y']) {
        const c = (await status(n)).counters;
        assert.equal(c.relayBound ?? 0, 0, `${n}: nothing bound over UDP`);
        assert.ok((c.relayUdpFailures ?? 0) >= 1);
        assert.ok((c.relayWsToRelay ?? 0) >= 1 && (c.relayWsFromRelay ?? 0) >= 1, `${n}: packets through the bridge`);
      }
      // A few pings in a row, for a latency figure.
      const r = await lab.run(mesh.agents.get('x')!.host.ns, ['ping', '-c', '5', '-i', '0.2', '-W', '1', (await status('y')).self.ips[0]!], { allowFailure: true });
      t.diagnostic(`ping over the WebSocket: ${/rtt min\/avg\/max\/mdev = ([^ ]+)/.exec(r.stdout)?.[1] ?? r.stdout.slice(-200)} ms (min/avg/max/mdev)`);
      assert.equal(r.code, 0);
    });

    it('the rule removed: the pair goes back to the relay over UDP, and still pings', async (t) => {
      for (const r of [sym1, sym2]) await lab.run(r.ns, ['nft', 'delete', 'table', 'ip', 'knit_relay_block']);
      const t0 = Date.now();
      await until('x and y relayed over UDP', async () => (await peerOf('x', 'y'))?.transport === 'udp' && (await peerOf('y', 'x'))?.transport === 'udp', 40_000);
      t.diagnostic(`WebSocket → UDP ${Date.now() - t0} ms after UDP to the relay was let through`);
      await until('x pings y over UDP', () => pings('x', 'y'), 20_000);
      assert.ok(await pings('y', 'x'));
      assert.equal((await status('x')).counters.relayWsOpen, 0, 'the WebSocket was closed');
    });
  });
}
