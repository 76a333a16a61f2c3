import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mtuHealth, peerTunnelMtu, type PathMtuReport } from '../../agent/tunnel-mtu.js';
import { RELAY_WS_ENDPOINT } from '../../agent/relay/core.js';
import type { PathKind } from '../../agent/status.js';

test('a peer\'s tunnel MTU: the interface\'s unless its path was proven smaller; relayed over UDP, what 1280 carries', () => {
  const rows: { name: string; path: PathKind; endpoint?: string; report?: PathMtuReport; want: ReturnType<typeof peerTunnelMtu> }[] = [
    { name: 'no path', path: 'none', report: { pathMtu: 1280, tunnelMtu: 1216 }, want: { mtu: 1420 } },
    { name: 'direct, not proven yet', path: 'direct', want: { mtu: 1420 } },
    { name: 'direct, 1500', path: 'direct', report: { pathMtu: 1500, tunnelMtu: 1420 }, want: { mtu: 1420, pathMtu: 1500 } },
    { name: 'direct, 1280', path: 'direct', report: { pathMtu: 1280, tunnelMtu: 1216 }, want: { mtu: 1216, pathMtu: 1280, routeMtu: 1216 } },
    { name: 'lan, PPPoE-sized', path: 'lan', report: { pathMtu: 1480, tunnelMtu: 1420 }, want: { mtu: 1420, pathMtu: 1480 } },
    { name: 'relay over UDP (IPv4)', path: 'relay', endpoint: '198.18.0.1:3480', report: { pathMtu: 1500, tunnelMtu: 1420 }, want: { mtu: 1216, routeMtu: 1216 } },
    { name: 'relay over UDP (IPv6)', path: 'relay', endpoint: '[2001:db8::1]:3480', want: { mtu: 1200, routeMtu: 1200 } },
    { name: 'relay over WebSocket', path: 'relay', endpoint: RELAY_WS_ENDPOINT, want: { mtu: 1420 } },
  ];
  for (const r of rows) {
    const pathMtus = new Map(r.report ? [['K', r.report]] : []);
    const relay = { path: () => ({ kind: r.path, endpoint: r.endpoint }) } as never;
    assert.deepEqual(peerTunnelMtu('K', { interfaceMtu: 1420, relay, pathMtus }), r.want, r.name);
  }
});

test('the mtu health check: warn below IPv6\'s 1280, say which paths are smaller, ok otherwise', () => {
  const rows: { peers: { name: string; mtu: number; pathMtu?: number }[]; level: string; mentions: string[] }[] = [
    { peers: [], level: 'ok', mentions: ['no path measured'] },
    { peers: [{ name: 'b', mtu: 1420, pathMtu: 1500 }], level: 'ok', mentions: ['1420'] },
    { peers: [{ name: 'b', mtu: 1420, pathMtu: 1500 }, { name: 'c', mtu: 1376, pathMtu: 1440 }], level: 'ok', mentions: ['c (path 1440, tunnel 1376)'] },
    { peers: [{ name: 'b', mtu: 1216, pathMtu: 1280 }, { name: 'r', mtu: 1216 }], level: 'warn', mentions: ['b (path 1280, tunnel 1216)', 'IPv6'] },
  ];
  for (const r of rows) {
    const c = mtuHealth(r.peers, 1420);
    assert.equal(c.check, 'mtu');
    assert.equal(c.level, r.level, JSON.stringify(r.peers));
    for (const m of r.mentions) assert.ok(c.detail.includes(m), `${c.detail} mentions ${m}`);
    assert.ok(!c.detail.includes('r ('), 'a relayed (unmeasured) peer is not blamed');
    if (c.level !== 'ok') assert.ok(c.fix);
  }
});
