/**
 * The port mapper with real sockets, run by test/lab/portmap.test.ts inside a
 * lab host namespace: it binds the "tunnel port", maps it through the default
 * gateway (read from that namespace's /proc/net/route) with the protocols it
 * is told, verifies the mapping against the given STUN observer, and reports
 * JSON lines on stdout. SIGTERM stops it: the mapping is deleted first.
 *
 *   argv[2]: {"port":41641,"protocols":["pcp"],"lifetimeS":6,"observer":"198.18.1.10:3478"}
 *   stdout : {"event":"ready"} | {"event":"candidate","mapping":{…}} | {"event":"status",…}
 *            | {"event":"datagram","from":"198.18.1.11:40000","data":"hello"} | {"event":"stopped"}
 */
import { createSocket } from 'node:dgram';
import { createPortMapService, type PortMapProtocol } from '../../agent/portmap/index.js';
import { systemClock } from '../../shared/clock.js';
import { defaultRandomBytes } from '../../shared/crypto/seal.js';
import { createLogger } from '../../shared/log.js';
import { parseEndpoint } from '../../shared/net/addr.js';
import { isStunPacket } from '../../shared/wire/stun.js';

const STATUS_EVERY_MS = 500;

const cfg = JSON.parse(process.argv[2] ?? '{}') as { port: number; protocols: PortMapProtocol[]; lifetimeS: number; observer: string };
const say = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
const observer = parseEndpoint(cfg.observer);
if (!observer) throw new Error('observer must be ip:port');

const tunnel = createSocket({ type: 'udp4' });
await new Promise<void>((resolve) => tunnel.bind(cfg.port, resolve));
const service = createPortMapService(
  { protocols: cfg.protocols, lifetimeS: cfg.lifetimeS },
  { clock: systemClock, random: defaultRandomBytes, logger: createLogger({ level: 'debug', base: { component: 'driver' } }) },
);
service.onCandidate = (mapping) => say({ event: 'candidate', mapping: mapping ?? null });
tunnel.on('message', (msg, rinfo) => {
  const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
  const from = { address: rinfo.address, port: rinfo.port };
  if (isStunPacket(bytes)) service.tunnelStun(bytes, from);
  else say({ event: 'datagram', from: `${rinfo.address}:${rinfo.port}`, data: msg.toString('utf8') });
});
service.setObservers([observer]);
await service.start(cfg.port);
say({ event: 'ready' });
const timer = setInterval(() => say({ event: 'status', status: service.status(), counters: service.counters }), STATUS_EVERY_MS);

process.once('SIGTERM', () => {
  clearInterval(timer);
  void service.stop().then(() => {
    say({ event: 'stopped', status: service.status() });
    tunnel.close();
    process.exit(0);
  });
});
