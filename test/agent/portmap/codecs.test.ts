/**
 * The port-mapping codecs: golden packets built from the RFC layouts and
 * answers captured from miniupnpd 2.3.1 (Debian 12) in the lab, round trips,
 * and tables of bad input that must be refused without throwing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createObserverCore } from '../../../coordinator/observer/core.js';
import { parseProcNetRoute, pickLocalAddress } from '../../../agent/portmap/gateway.js';
import { encodeNatpmpExternalAddressRequest, encodeNatpmpMapRequest, parseNatpmpResponse } from '../../../agent/portmap/natpmp.js';
import { encodePcpAnnounceRequest, encodePcpMapRequest, epochIsValid, parsePcpResponse, pcpResultName } from '../../../agent/portmap/pcp.js';
import {
  addPortMappingRequest, deletePortMappingRequest, encodeSsdpSearch, parseDeviceDescription, parseSoapResponse, parseSsdpResponse,
} from '../../../agent/portmap/upnp.js';
import { encodeBindingRequest, parseBindingRequest, parseBindingResponse, STUN_KNIT_REQUEST_LEN } from '../../../shared/wire/stun.js';

const hex = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const NONCE = hex('43a78dac17111f61085c977b');

test('PCP MAP request: golden bytes (RFC 6887 §7.1, §11.1)', () => {
  const b = encodePcpMapRequest({ nonce: NONCE, lifetimeS: 120, clientAddress: '10.77.0.10', internalPort: 41642, suggestedExternalPort: 41642 });
  assert.equal(toHex(b),
    '02010000' + '00000078' + '00000000000000000000ffff0a4d000a' + // version 2, MAP, lifetime 120, client ::ffff:10.77.0.10
    '43a78dac17111f61085c977b' + '11000000' + 'a2aaa2aa' + '00000000000000000000ffff00000000'); // nonce, UDP, ports, ext ::ffff:0.0.0.0
  assert.equal(b.length, 60);
  assert.equal(toHex(encodePcpAnnounceRequest('10.0.0.2')), '0200000000000000' + '00000000000000000000ffff0a000002');
  assert.throws(() => encodePcpMapRequest({ nonce: new Uint8Array(11), lifetimeS: 1, clientAddress: '10.0.0.2', internalPort: 1 }), RangeError);
  assert.throws(() => encodePcpMapRequest({ nonce: NONCE, lifetimeS: -1, clientAddress: '10.0.0.2', internalPort: 1 }), RangeError);
  assert.throws(() => encodePcpMapRequest({ nonce: NONCE, lifetimeS: 1, clientAddress: '10.0.0.2', internalPort: 0 }), RangeError);
});

test('PCP MAP response from miniupnpd 2.3.1 parses', () => {
  const r = parsePcpResponse(hex('02810000000000780000030700000000000000000000000043a78dac17111f61085c977b11000000a2aaa2aa00000000000000000000ffffc612010a'));
  assert.ok(r && r.opcode === 1);
  assert.deepEqual({ ...r, nonce: toHex(r.nonce) }, {
    opcode: 1, resultCode: 0, lifetimeS: 120, epochS: 0x307, nonce: toHex(NONCE), protocol: 17,
    internalPort: 41642, externalPort: 41642, externalAddress: '198.18.1.10',
  });
  // ANNOUNCE response (header only), and a NAT-PMP server's "unsupported version" to our version 2.
  assert.deepEqual(parsePcpResponse(hex('028000000000000000000010000000000000000000000000')), { opcode: 0, resultCode: 0, lifetimeS: 0, epochS: 16 });
  assert.deepEqual(parsePcpResponse(hex('0081000100000307')), { opcode: 'natpmp-only' });
  assert.equal(pcpResultName(12), 'ADDRESS_MISMATCH');
  assert.equal(pcpResultName(99), 'RESULT_99');
});

test('PCP: malformed responses are refused, never thrown', () => {
  const good = hex('02810000000000780000030700000000000000000000000043a78dac17111f61085c977b11000000a2aaa2aa00000000000000000000ffffc612010a');
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['short header', good.subarray(0, 20)],
    ['MAP without its body', good.subarray(0, 24)],
    ['not a multiple of 4', Uint8Array.from([...good, 0])],
    ['too long', new Uint8Array(1104).fill(2)],
    ['version 1', Uint8Array.from([1, ...good.subarray(1)])],
    ['a request (no R bit)', Uint8Array.from([2, 1, ...good.subarray(2)])],
    ['unknown opcode', Uint8Array.from([2, 0x85, ...good.subarray(2)])],
  ];
  for (const [name, b] of cases) assert.equal(parsePcpResponse(b), undefined, name);
  for (let i = 0; i < 2000; i++) {
    const b = Uint8Array.from(good);
    b[(i * 7) % b.length] ^= (i % 255) + 1;
    parsePcpResponse(b.subarray(0, (i * 13) % (b.length + 1))); // must not throw
  }
});

test('PCP Epoch check (RFC 6887 §8.5)', () => {
  const prev = { epochS: 1000, atMs: 0 };
  assert.equal(epochIsValid(undefined, 5, 0), true);
  assert.equal(epochIsValid(prev, 1060, 60_000), true, 'both advanced 60 s');
  assert.equal(epochIsValid(prev, 998, 0), false, 'went backwards by more than a second');
  assert.equal(epochIsValid(prev, 1005, 60_000), false, 'the server restarted (5 s vs 60 s)');
  assert.equal(epochIsValid(prev, 1200, 60_000), false, 'the server ran far ahead');
});

test('NAT-PMP requests: golden bytes (RFC 6886 §3.2, §3.3)', () => {
  assert.equal(toHex(encodeNatpmpExternalAddressRequest()), '0000');
  assert.equal(toHex(encodeNatpmpMapRequest(41641, 41641, 120)), '00010000' + 'a2a9a2a9' + '00000078');
  assert.equal(toHex(encodeNatpmpMapRequest(41641, 0, 0)), '00010000a2a9000000000000', 'delete: lifetime 0, external 0');
  assert.throws(() => encodeNatpmpMapRequest(0, 1, 1), RangeError);
});

test('NAT-PMP responses from miniupnpd 2.3.1 parse; bad ones are refused', () => {
  assert.deepEqual(parseNatpmpResponse(hex('0080000000000307c612010a')), { op: 'external-address', resultCode: 0, epochS: 0x307, externalAddress: '198.18.1.10' });
  assert.deepEqual(parseNatpmpResponse(hex('0081000000000307a2a9a2a900000078')), { op: 'map-udp', resultCode: 0, epochS: 0x307, internalPort: 41641, externalPort: 41641, lifetimeS: 120 });
  assert.deepEqual(parseNatpmpResponse(hex('0081000200000307')), { op: 'map-udp', resultCode: 2, epochS: 0x307, internalPort: 0, externalPort: 0, lifetimeS: 0 }, 'a short error answer');
  for (const [name, h] of [
    ['empty', ''], ['short', '008000'], ['success too short', '0081000000000307a2a9'], ['version 2', '0280000000000307c612010a'],
    ['request', '0000000000000307c612010a'], ['unknown op', '0085000000000307c612010a'],
  ] as const) assert.equal(parseNatpmpResponse(hex(h)), undefined, name);
});

const SSDP_ANSWER = 'HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n' +
  'USN: uuid:3f1a8c2e-5b7d-4e9a-9c1f-2a6b8d0e4f11::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\n' +
  'SERVER: Debian/6.1 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: http://10.77.0.1:44459/rootDesc.xml\r\n\r\n';

test('SSDP: the M-SEARCH, and the gateway\'s answer (must point at itself)', () => {
  assert.equal(new TextDecoder().decode(encodeSsdpSearch('urn:schemas-upnp-org:device:InternetGatewayDevice:1')),
    'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n');
  const enc = (s: string) => new TextEncoder().encode(s);
  const a = parseSsdpResponse(enc(SSDP_ANSWER), '10.77.0.1');
  assert.equal(a?.location.href, 'http://10.77.0.1:44459/rootDesc.xml');
  assert.equal(parseSsdpResponse(enc(SSDP_ANSWER), '10.77.0.9'), undefined, 'LOCATION on another host than the sender');
  assert.equal(parseSsdpResponse(enc(SSDP_ANSWER.replace('200 OK', '404 Not Found')), '10.77.0.1'), undefined);
  assert.equal(parseSsdpResponse(enc(SSDP_ANSWER.replace('http://', 'file://')), '10.77.0.1'), undefined);
  assert.equal(parseSsdpResponse(enc(SSDP_ANSWER.replace(/LOCATION.*\r\n/, '')), '10.77.0.1'), undefined);
  assert.equal(parseSsdpResponse(new Uint8Array(4096), '10.77.0.1'), undefined);
});

const DESCRIPTION = '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>' +
  '<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList>' +
  '<deviceList><device><deviceList><device><serviceList>' +
  '<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL></service>' +
  '</serviceList></device></deviceList></device></deviceList></device></root>';

test('device description: the WAN connection service and its control URL', () => {
  const loc = new URL('http://10.77.0.1:44459/rootDesc.xml');
  assert.deepEqual(parseDeviceDescription(DESCRIPTION, loc), { serviceType: 'urn:schemas-upnp-org:service:WANIPConnection:2', controlUrl: new URL('http://10.77.0.1:44459/ctl/IPConn') });
  const v1 = DESCRIPTION.replace('WANIPConnection:2', 'WANPPPConnection:1');
  assert.equal(parseDeviceDescription(v1, loc)?.serviceType, 'urn:schemas-upnp-org:service:WANPPPConnection:1');
  assert.equal(parseDeviceDescription(DESCRIPTION.replace('/ctl/IPConn', 'http://192.0.2.1/ctl'), loc), undefined, 'a control URL on another host');
  assert.equal(parseDeviceDescription(DESCRIPTION.replace('WANIPConnection:2', 'Foo:1'), loc), undefined);
  const withBase = DESCRIPTION.replace('<device>', '<URLBase>http://10.77.0.1:5000/</URLBase><device>');
  assert.equal(parseDeviceDescription(withBase, loc)?.controlUrl.href, 'http://10.77.0.1:5000/ctl/IPConn');
});

test('SOAP: requests, the answer from miniupnpd, faults', () => {
  const add = addPortMappingRequest('urn:schemas-upnp-org:service:WANIPConnection:1', { externalPort: 41641, internalPort: 41641, internalClient: '10.77.0.10', leaseS: 120, description: 'knit <&>' });
  assert.equal(add.headers.SOAPAction, '"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"');
  assert.match(add.body, /<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewRemoteHost><\/NewRemoteHost><NewExternalPort>41641<\/NewExternalPort><NewProtocol>UDP<\/NewProtocol><NewInternalPort>41641<\/NewInternalPort><NewInternalClient>10.77.0.10<\/NewInternalClient><NewEnabled>1<\/NewEnabled><NewPortMappingDescription>knit &lt;&amp;&gt;<\/NewPortMappingDescription><NewLeaseDuration>120<\/NewLeaseDuration><\/u:AddPortMapping>/);
  assert.match(deletePortMappingRequest('urn:x:1', 5).body, /<u:DeletePortMapping xmlns:u="urn:x:1"><NewRemoteHost><\/NewRemoteHost><NewExternalPort>5<\/NewExternalPort><NewProtocol>UDP<\/NewProtocol><\/u:DeletePortMapping>/);
  const ok = '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>198.18.1.10</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n';
  assert.deepEqual(parseSoapResponse(200, ok, 'GetExternalIPAddress'), { ok: true, values: { NewExternalIPAddress: '198.18.1.10' } });
  const fault = '<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>';
  assert.deepEqual(parseSoapResponse(500, fault, 'AddPortMapping'), { ok: false, errorCode: 718, description: 'ConflictInMappingEntry' });
  assert.equal(parseSoapResponse(200, '<html/>', 'AddPortMapping').ok, false);
  assert.deepEqual(parseSoapResponse(200, '<s:Body><u:AddPortMappingResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"/></s:Body>', 'AddPortMapping'), { ok: true, values: {} }, 'self-closing, as miniupnpd answers');
  assert.equal(parseSoapResponse(200, 'x'.repeat(20_000), 'AddPortMapping').ok, false);
});

test('default gateway from /proc/net/route, and our address towards it', () => {
  const text = [
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
    'eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    'wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0',
    'eth0\t00000000\t01004D0A\t0003\t0\t0\t100\t00000000\t0\t0\t0',
  ].join('\n');
  assert.deepEqual(parseProcNetRoute(text), { gateway: '10.77.0.1', iface: 'eth0' }, 'the lowest metric wins');
  assert.equal(parseProcNetRoute(text.split('\n').slice(0, 2).join('\n')), undefined, 'no default route');
  assert.equal(parseProcNetRoute('garbage'), undefined);
  const addrs = [
    { address: '192.168.5.2', netmask: '255.255.255.0', family: 'IPv4', internal: false },
    { address: '10.77.0.10', netmask: '255.255.255.0', family: 'IPv4', internal: false },
  ] as const;
  assert.equal(pickLocalAddress(addrs, '10.77.0.1'), '10.77.0.10');
  assert.equal(pickLocalAddress(addrs, '172.16.0.1'), '192.168.5.2');
  assert.equal(pickLocalAddress([], '10.0.0.1'), undefined);
});

test('STUN RESPONSE-PORT (RFC 5780 §7.5): encoded, parsed, and honoured by the observer', () => {
  const txid = new Uint8Array(12).fill(7);
  const req = encodeBindingRequest(txid, { padTo: STUN_KNIT_REQUEST_LEN, responsePort: 41641 });
  assert.equal(req.length, STUN_KNIT_REQUEST_LEN, 'still padded to the Knit size');
  assert.equal(toHex(req.subarray(20, 28)), '00270004a2a90000');
  assert.equal(parseBindingRequest(req)?.responsePort, 41641);
  assert.equal(parseBindingRequest(encodeBindingRequest(txid))?.responsePort, undefined);
  const zero = Uint8Array.from(req);
  zero[24] = 0; zero[25] = 0;
  assert.equal(parseBindingRequest(zero), undefined, 'port 0 (and a broken FINGERPRINT) is malformed');
  assert.throws(() => encodeBindingRequest(txid, { responsePort: 0 }), RangeError);
  const v = createObserverCore().handle(req, { address: '198.18.1.10', port: 50000 }, 0);
  assert.ok('answer' in v);
  assert.equal(v.port, 41641, 'the answer goes to the source address at RESPONSE-PORT');
  assert.ok(v.answer.length <= req.length, 'no amplification');
  assert.deepEqual(parseBindingResponse(v.answer)?.mapped, { address: '198.18.1.10', port: 50000 });
});
