/**
 * The port-mapping core on virtual time: fallback order (PCP → NAT-PMP →
 * UPnP), verification by the observer's echo through the mapping, renewal at
 * half-life, expiry, network change, deletion on stop, and what is dropped.
 * The "gateway" is this file: it answers the core's actions with bytes laid
 * out as the RFCs draw them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPortMapper } from '../../../agent/portmap/core.js';
import type { PortMapAction, PortMapper, PortMapProtocol } from '../../../agent/portmap/types.js';
import { encodeBindingResponse, parseBindingRequest, parseStun } from '../../../shared/wire/stun.js';
import { seededBytes } from '../../helpers/manual-clock.js';

const GW = '10.1.0.1';
const ME = '10.1.0.10';
const PORT = 41641;
const EXT = '198.18.1.10';
const OBS = { address: '198.18.0.2', port: 3478 };
const T0 = 1_000_000;

function mapper(protocols?: PortMapProtocol[], lifetimeS = 120): PortMapper {
  return createPortMapper({ random: seededBytes(3), protocols, lifetimeS });
}

const sends = (as: PortMapAction[]) => as.filter((a): a is Extract<PortMapAction, { type: 'send' }> => a.type === 'send');
const candidates = (as: PortMapAction[]) => as.filter((a): a is Extract<PortMapAction, { type: 'candidate' }> => a.type === 'candidate');

/** A PCP MAP success answering `req` (the request's nonce and ports echoed, §11.2). */
function pcpAnswer(req: Uint8Array, o: { result?: number; lifetimeS?: number; epochS?: number; extPort?: number; nonce?: Uint8Array } = {}): Uint8Array {
  const b = new Uint8Array(60);
  const v = new DataView(b.buffer);
  b[0] = 2; b[1] = 0x81; b[3] = o.result ?? 0;
  v.setUint32(4, o.lifetimeS ?? new DataView(req.buffer, req.byteOffset).getUint32(4));
  v.setUint32(8, o.epochS ?? 100);
  b.set(o.nonce ?? req.subarray(24, 36), 24);
  b[36] = 17;
  v.setUint16(40, PORT);
  v.setUint16(42, o.extPort ?? PORT);
  b[54] = 0xff; b[55] = 0xff;
  b.set(EXT.split('.').map(Number), 56);
  return b;
}

function natpmpExt(epochS = 100): Uint8Array {
  return Uint8Array.of(0, 128, 0, 0, 0, 0, epochS >> 8, epochS & 0xff, ...EXT.split('.').map(Number));
}
function natpmpMap(lifetimeS = 120, epochS = 100, result = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  b[1] = 129; v.setUint16(2, result); v.setUint32(4, epochS); v.setUint16(8, PORT); v.setUint16(10, PORT); v.setUint32(12, lifetimeS);
  return b;
}

/** The observer's answer to a verification request, as it arrives through the mapping. */
function echo(req: Uint8Array, seenAs = { address: EXT, port: 50000 }): Uint8Array {
  const m = parseBindingRequest(req)!;
  assert.equal(m.responsePort, PORT, 'the verification asks for the answer at the mapped port');
  return encodeBindingResponse(m.txid, seenAs);
}

const gwFrom = { address: GW, port: 5351 };

/** Drives a PCP mapping to verified; returns the actions of the last step and the verification request. */
function mappedByPcp(m: PortMapper, now = T0) {
  m.handle({ type: 'observers', servers: [OBS] }, now);
  const [req] = sends(m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, now));
  assert.deepEqual(req!.to, gwFrom);
  const after = m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(req!.bytes) }, now + 5);
  const [ver] = sends(after);
  assert.deepEqual(ver!.to, OBS);
  const done = m.handle({ type: 'tunnel-stun', from: OBS, bytes: echo(ver!.bytes) }, now + 10);
  return { req: req!.bytes, done };
}

test('PCP first: mapped, verified by the echo through the mapping, then a candidate', () => {
  const m = mapper();
  const { req, done } = mappedByPcp(m);
  assert.equal(req[0], 2, 'PCP version 2');
  assert.equal(req[1], 1, 'MAP');
  const [c] = candidates(done);
  assert.equal(c?.mapping?.external, `${EXT}:${PORT}`);
  assert.equal(c?.mapping?.protocol, 'pcp');
  assert.deepEqual({ ...m.status(), mapping: undefined }, { phase: 'mapped', gateway: GW, protocol: 'pcp', mapping: undefined, verified: true, detail: undefined, errors: {} });
  assert.equal(m.counters.verified, 1);
});

test('fallback order: PCP silent → NAT-PMP silent → UPnP (SSDP, description, SOAP)', () => {
  const m = mapper();
  m.handle({ type: 'observers', servers: [OBS] }, T0);
  let a = m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0);
  assert.equal(sends(a).length, 1);
  // Retransmits at +250 and +750, then NAT-PMP at +2000 (external address + map), then UPnP at +4000.
  assert.equal(m.nextWakeup(), T0 + 250);
  assert.equal(sends(m.handle({ type: 'tick' }, T0 + 250)).length, 1);
  assert.equal(sends(m.handle({ type: 'tick' }, T0 + 750)).length, 1);
  a = m.handle({ type: 'tick' }, T0 + 2000);
  assert.deepEqual(sends(a).map((s) => s.bytes.length), [2, 12], 'NAT-PMP: external address request, then the map request');
  assert.equal(m.status().protocol, 'natpmp');
  a = m.handle({ type: 'tick' }, T0 + 4000);
  const ssdp = a.filter((x) => x.type === 'ssdp-send');
  assert.equal(ssdp.length, 2, 'M-SEARCH for IGD:1 and IGD:2');
  assert.deepEqual(ssdp[0]!.type === 'ssdp-send' && ssdp[0]!.to, { address: '239.255.255.250', port: 1900 });
  const answer = new TextEncoder().encode('HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://10.1.0.1:5000/desc.xml\r\n\r\n');
  assert.deepEqual(m.handle({ type: 'ssdp', from: { address: '10.1.0.99', port: 1900 }, bytes: answer }, T0 + 4010), [], 'another device is not our gateway');
  a = m.handle({ type: 'ssdp', from: { address: GW, port: 1900 }, bytes: answer }, T0 + 4010);
  const get = a.find((x) => x.type === 'http');
  assert.ok(get?.type === 'http' && get.method === 'GET' && get.url === 'http://10.1.0.1:5000/desc.xml');
  const desc = '<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl</controlURL></service></serviceList></device></root>';
  a = m.handle({ type: 'http-response', id: get.id, status: 200, body: desc }, T0 + 4020);
  const ext = a.find((x) => x.type === 'http');
  assert.ok(ext?.type === 'http' && ext.url === 'http://10.1.0.1:5000/ctl' && ext.headers.SOAPAction?.includes('#GetExternalIPAddress'));
  assert.deepEqual(m.handle({ type: 'http-response', id: get.id, status: 200, body: desc }, T0 + 4025), [], 'a stale answer changes nothing');
  a = m.handle({ type: 'http-response', id: ext.id, status: 200, body: `<u:GetExternalIPAddressResponse><NewExternalIPAddress>${EXT}</NewExternalIPAddress></u:GetExternalIPAddressResponse>` }, T0 + 4030);
  const add = a.find((x) => x.type === 'http');
  assert.ok(add?.type === 'http' && add.body?.includes(`<NewInternalClient>${ME}</NewInternalClient>`) && add.body.includes('<NewLeaseDuration>120</NewLeaseDuration>'));
  a = m.handle({ type: 'http-response', id: add.id, status: 200, body: '<u:AddPortMappingResponse></u:AddPortMappingResponse>' }, T0 + 4040);
  const [ver] = sends(a);
  a = m.handle({ type: 'tunnel-stun', from: OBS, bytes: echo(ver!.bytes) }, T0 + 4050);
  assert.equal(candidates(a)[0]?.mapping?.protocol, 'upnp');
  assert.deepEqual(m.status().errors, { pcp: 'no answer', natpmp: 'no answer' });
});

test('a NAT-PMP-only gateway answers PCP with "unsupported version": NAT-PMP at once', () => {
  const m = mapper();
  m.handle({ type: 'observers', servers: [OBS] }, T0);
  m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0);
  let a = m.handle({ type: 'udp', from: gwFrom, bytes: Uint8Array.of(0, 129, 0, 1, 0, 0, 0, 100) }, T0 + 3);
  assert.deepEqual(sends(a).map((s) => s.bytes.length), [2, 12]);
  a = m.handle({ type: 'udp', from: gwFrom, bytes: natpmpMap() }, T0 + 4);
  assert.equal(sends(a).length, 0, 'waits for the external address too');
  a = m.handle({ type: 'udp', from: gwFrom, bytes: natpmpExt() }, T0 + 5);
  const [ver] = sends(a);
  assert.deepEqual(ver?.to, OBS);
  assert.equal(m.status().mapping?.external, `${EXT}:${PORT}`);
  assert.equal(m.status().protocol, 'natpmp');
});

test('forced protocols: only the ones asked for, in that order; all fail → wait and retry', () => {
  const m = mapper(['natpmp']);
  const a = m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0);
  assert.deepEqual(sends(a).map((s) => s.bytes.length), [2, 12]);
  m.handle({ type: 'udp', from: gwFrom, bytes: natpmpMap(0, 100, 2) }, T0 + 5); // NOT_AUTHORIZED
  assert.equal(m.status().phase, 'waiting');
  assert.match(m.status().detail ?? '', /natpmp: NOT_AUTHORIZED/);
  assert.equal(m.nextWakeup(), T0 + 5 + 30_000);
  assert.equal(sends(m.handle({ type: 'tick' }, T0 + 30_005)).length, 2, 'tries again');
  assert.throws(() => createPortMapper({ random: seededBytes(1), protocols: [] }), RangeError);
});

test('renewal at half-life keeps the nonce and the candidate; an unanswered one retries until expiry, then the mapping is withdrawn', () => {
  const m = mapper(undefined, 120);
  const { req } = mappedByPcp(m);
  const renewAt = T0 + 5 + 60_000;
  assert.equal(m.nextWakeup(), renewAt);
  let a = m.handle({ type: 'tick' }, renewAt);
  const [renew] = sends(a);
  assert.deepEqual(renew!.bytes.subarray(24, 36), req.subarray(24, 36), 'same mapping nonce (RFC 6887 §11.2.1)');
  a = m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(renew!.bytes, { epochS: 160 }) }, renewAt + 5);
  assert.equal(candidates(a)[0]?.mapping?.expiresAt, renewAt + 5 + 120_000, 'same candidate, new expiry');
  assert.equal(m.counters.renewals, 1);
  // Now the gateway goes silent: renewals retry, and at expiry the candidate goes.
  let t = renewAt + 5 + 60_000;
  let withdrawn: ReturnType<typeof candidates> = [];
  for (let i = 0; i < 200 && withdrawn.length === 0; i++) {
    t = m.nextWakeup()!;
    withdrawn = candidates(m.handle({ type: 'tick' }, t));
  }
  assert.equal(withdrawn[0]?.mapping, undefined);
  assert.ok(t >= renewAt + 5 + 120_000, 'not before the lifetime ran out');
  assert.equal(m.status().phase, 'probing', 'and it starts over');
});

test('a gateway that restarted (PCP ANNOUNCE with a reset Epoch): map again at once', () => {
  const m = mapper();
  mappedByPcp(m);
  const announce = new Uint8Array(24);
  announce[0] = 2; announce[1] = 0x80; announce[11] = 3; // epoch 3 s: it restarted
  const a = m.handle({ type: 'udp', from: gwFrom, bytes: announce }, T0 + 30_000);
  assert.equal(sends(a).length, 1);
  assert.equal(sends(a)[0]!.bytes[1], 1, 'a MAP request');
  assert.equal(m.counters.epochResets, 1);
});

test('network change: the candidate goes and the new gateway is asked', () => {
  const m = mapper();
  mappedByPcp(m);
  const a = m.handle({ type: 'network-changed', gateway: '10.2.0.1', localAddress: '10.2.0.5' }, T0 + 1000);
  assert.equal(candidates(a)[0]?.mapping, undefined);
  assert.deepEqual(sends(a)[0]?.to, { address: '10.2.0.1', port: 5351 });
  // Same gateway after a change: the mapping is checked at once (a renewal), not dropped.
  const b = m.handle({ type: 'network-changed', gateway: '10.2.0.1', localAddress: '10.2.0.5' }, T0 + 1001);
  assert.deepEqual(b, [], 'a probe in flight serves');
  const gone = m.handle({ type: 'network-changed', gateway: undefined, localAddress: undefined }, T0 + 1002);
  assert.equal(m.status().phase, 'idle');
  assert.equal(sends(gone).length, 0);
});

test('stop deletes the mapping (lifetime 0, same nonce) and reports stopped; a silent gateway costs at most a second', () => {
  const m = mapper();
  const { req } = mappedByPcp(m);
  let a = m.handle({ type: 'stop' }, T0 + 100);
  assert.equal(candidates(a)[0]?.mapping, undefined);
  const [del] = sends(a);
  assert.equal(new DataView(del!.bytes.buffer).getUint32(4), 0, 'lifetime 0');
  assert.deepEqual(del!.bytes.subarray(24, 36), req.subarray(24, 36));
  a = m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(del!.bytes, { lifetimeS: 0 }) }, T0 + 105);
  assert.deepEqual(a, [{ type: 'stopped' }]);
  assert.equal(m.nextWakeup(), undefined);

  const silent = mapper(['natpmp']);
  silent.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0);
  silent.handle({ type: 'udp', from: gwFrom, bytes: natpmpMap() }, T0 + 1);
  silent.handle({ type: 'udp', from: gwFrom, bytes: natpmpExt() }, T0 + 2);
  const d = silent.handle({ type: 'stop' }, T0 + 10);
  assert.deepEqual(sends(d).map((s) => [...s.bytes]), [[0, 1, 0, 0, PORT >> 8, PORT & 0xff, 0, 0, 0, 0, 0, 0]], 'NAT-PMP delete');
  assert.deepEqual(silent.handle({ type: 'tick' }, T0 + 1010).at(-1), { type: 'stopped' });
  // Stopping with nothing mapped and nothing in flight is immediate.
  assert.deepEqual(mapper().handle({ type: 'stop' }, T0), [{ type: 'stopped' }]);
});

test('dropped and counted: wrong source, wrong nonce, malformed; verification fails without the echo', () => {
  const m = mapper();
  m.handle({ type: 'observers', servers: [OBS] }, T0);
  const [req] = sends(m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0));
  assert.deepEqual(m.handle({ type: 'udp', from: { address: '10.1.0.66', port: 5351 }, bytes: pcpAnswer(req!.bytes) }, T0 + 1), []);
  assert.deepEqual(m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(req!.bytes, { nonce: new Uint8Array(12) }) }, T0 + 1), []);
  assert.deepEqual(m.handle({ type: 'udp', from: gwFrom, bytes: Uint8Array.of(2, 0x81, 0) }, T0 + 1), []);
  assert.equal(m.counters.dropped, 3);
  assert.equal(m.status().phase, 'probing');
  const [ver] = sends(m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(req!.bytes) }, T0 + 2));
  // An answer naming another address (a second NAT in front of the gateway) is not proof.
  let a = m.handle({ type: 'tunnel-stun', from: OBS, bytes: echo(ver!.bytes, { address: '198.18.9.9', port: 1 }) }, T0 + 3);
  assert.equal(candidates(a).length, 0);
  assert.match(m.status().detail ?? '', /not at the mapped/);
  assert.equal(m.status().verified, false);
  // An observer that ignored RESPONSE-PORT answers the mapper's own socket: not proof either.
  const m2 = mapper();
  const { req: r2 } = { req: sends(m2.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0))[0]!.bytes };
  m2.handle({ type: 'observers', servers: [OBS] }, T0);
  const [v2] = sends(m2.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(r2) }, T0 + 1));
  a = m2.handle({ type: 'udp', from: OBS, bytes: encodeBindingResponse(parseStun(v2!.bytes)!.txid, { address: EXT, port: 40000 }) }, T0 + 2);
  assert.equal(candidates(a).length, 0);
  assert.match(m2.status().detail ?? '', /RESPONSE-PORT/);
  // And silence: after the round, "no echo".
  const m3 = mapper();
  m3.handle({ type: 'observers', servers: [OBS] }, T0);
  const [r3] = sends(m3.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0));
  m3.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(r3!.bytes) }, T0 + 1);
  assert.equal(sends(m3.handle({ type: 'tick' }, T0 + 251)).length, 1, 'the verification is retransmitted');
  m3.handle({ type: 'tick' }, T0 + 2001);
  assert.match(m3.status().detail ?? '', /no echo/);
  assert.equal(m3.counters.verifyFailed, 1);
});

test('verification waits for an observer; no gateway means idle', () => {
  const m = mapper();
  const [req] = sends(m.handle({ type: 'start', gateway: GW, localAddress: ME, internalPort: PORT }, T0));
  assert.equal(sends(m.handle({ type: 'udp', from: gwFrom, bytes: pcpAnswer(req!.bytes) }, T0 + 1)).length, 0);
  assert.match(m.status().detail ?? '', /waiting for the coordinator/);
  const [ver] = sends(m.handle({ type: 'observers', servers: [OBS] }, T0 + 500));
  assert.deepEqual(ver?.to, OBS);
  const idle = mapper();
  assert.deepEqual(idle.handle({ type: 'start', internalPort: PORT }, T0), []);
  assert.equal(idle.status().phase, 'idle');
  assert.equal(idle.nextWakeup(), undefined);
});
