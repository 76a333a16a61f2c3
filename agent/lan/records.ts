/**
 * The DNS-SD records (RFC 6763) a Knit agent announces over mDNS (RFC 6762),
 * built and parsed. Pure: no sockets, no clock.
 *
 *   _knit._udp.local                 PTR  <name>-<fp8>._knit._udp.local
 *   <name>-<fp8>._knit._udp.local    SRV  0 0 <tunnel port> knit-<fp16>.local   (cache-flush)
 *   <name>-<fp8>._knit._udp.local    TXT  v=1 mesh=<mesh id> fp=<node key fingerprint> dk=<disco key>
 *   knit-<fp16>.local                A    <this interface's IPv4 address>       (cache-flush)
 *
 * The instance and host names carry the node key's fingerprint, so they are
 * unique without RFC 6762 §8.1 probing. Everything in a record is a hint:
 * the disco layer trusts an address only after an authenticated pong, so a
 * forged announcement costs a few pings and nothing else. Parsing is strict
 * all the same: a record that doesn't look exactly like ours is dropped.
 */
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';
import dnsPacket, { type Answer, type Packet, type SrvAnswer, type StringAnswer, type TxtAnswer } from 'dns-packet';
import { decodeKey } from '../../shared/crypto/keys.js';
import { isMulticastIp, isUnspecifiedIp, isBroadcastIp } from '../../shared/net/addr.js';

export const SERVICE = '_knit._udp.local';
export const PROTOCOL_VERSION = '1';
/** RFC 6762 §10 recommends 120 s for records that name a host; ours all do, one way or another. */
export const RECORD_TTL_S = 120;
/** A packet is at most one MTU; more records than this in one packet is not one of ours. */
export const MAX_RECORDS = 64;
/** Addresses taken from one announcement (a host with more LAN addresses is fine with four). */
export const MAX_ADDRESSES = 4;

/** The largest mDNS datagram we read (RFC 6762 §17: 9000 bytes). */
export const MAX_DATAGRAM = 9000;
/** Records a datagram may declare before we decode it at all. */
export const MAX_DECLARED_RECORDS = 256;

/**
 * Decodes one mDNS datagram, or undefined. The header's record counts are checked against
 * the datagram's length first: the decoder allocates an array per count before reading, so
 * a 12-byte packet declaring 4 × 65,535 records would cost far more than it carries.
 */
export function decodeDatagram(bytes: Uint8Array): Packet | undefined {
  if (bytes.length < 12 || bytes.length > MAX_DATAGRAM) return undefined;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const questions = b.readUInt16BE(4);
  const records = b.readUInt16BE(6) + b.readUInt16BE(8) + b.readUInt16BE(10);
  // A question takes at least 5 bytes (root name, type, class), a record at least 11.
  if (questions + records > MAX_DECLARED_RECORDS || questions * 5 + records * 11 > b.length - 12) return undefined;
  try {
    return dnsPacket.decode(b);
  } catch {
    return undefined;
  }
}

export interface LanSelf {
  /** The node's name in the mesh (a DNS label: letters, digits, hyphens). */
  name: string;
  nodeKey: string;
  discoKey: string;
  /** The tunnel port peers should send to. */
  port: number;
  meshId: string;
}

/** One Knit instance as read from a response. */
export interface Announcement {
  instance: string;
  fingerprint: string;
  meshId: string;
  discoKey: string;
  port: number;
  /** IPv4 addresses of the instance's host (A records for the SRV target). */
  addresses: string[];
  /** 0 is a goodbye (RFC 6762 §10.1). */
  ttlS: number;
}

export type RejectReason = 'malformed' | 'version';

/** A node key's fingerprint: 128 bits of SHA-256, hex. Collisions would only cost a wasted ping. */
export function fingerprint(nodeKey: string): string {
  return createHash('sha256').update(`knit-fp\0${nodeKey}`).digest('hex').slice(0, 32);
}

/** The mesh identifier: a hash of the coordinator key, so meshes on one LAN ignore each other. */
export function meshIdOf(coordinatorKey: string): string {
  return createHash('sha256').update(`knit-mesh\0${coordinatorKey}`).digest('hex').slice(0, 16);
}

export function instanceName(self: Pick<LanSelf, 'name' | 'nodeKey'>): string {
  const label = self.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 48) || 'knit';
  return `${label}-${fingerprint(self.nodeKey).slice(0, 8)}.${SERVICE}`;
}

export function hostName(nodeKey: string): string {
  return `knit-${fingerprint(nodeKey).slice(0, 16)}.local`;
}

/** Our record set for one interface; ttlS 0 makes it a goodbye. */
export function ourRecords(self: LanSelf, address: string, ttlS = RECORD_TTL_S): { answers: Answer[]; additionals: Answer[] } {
  const instance = instanceName(self);
  const host = hostName(self.nodeKey);
  return {
    answers: [{ type: 'PTR', name: SERVICE, ttl: ttlS, data: instance }],
    additionals: [
      { type: 'SRV', name: instance, ttl: ttlS, flush: true, data: { priority: 0, weight: 0, port: self.port, target: host } },
      {
        type: 'TXT', name: instance, ttl: ttlS, flush: true,
        data: [`v=${PROTOCOL_VERSION}`, `mesh=${self.meshId}`, `fp=${fingerprint(self.nodeKey)}`, `dk=${self.discoKey}`],
      },
      { type: 'A', name: host, ttl: ttlS, flush: true, data: address },
    ],
  };
}

/** The query a browser sends: our PTR, with the instances it already knows as known answers (RFC 6762 §7.1). */
export function browseQuery(knownInstances: { instance: string; ttlS: number }[]): Packet {
  return {
    type: 'query',
    questions: [{ type: 'PTR', name: SERVICE }],
    answers: knownInstances.map((k) => ({ type: 'PTR', name: SERVICE, ttl: k.ttlS, data: k.instance })),
  };
}

const sameName = (a: unknown, b: string) => typeof a === 'string' && a.toLowerCase() === b.toLowerCase();

/** Whether a query asks for something we answer: the service, or our own instance or host. */
export function queryWantsUs(packet: Packet, self: LanSelf): boolean {
  const instance = instanceName(self);
  const host = hostName(self.nodeKey);
  for (const q of (packet.questions ?? []).slice(0, MAX_RECORDS)) {
    const t = q.type as string;
    if (sameName(q.name, SERVICE) && (t === 'PTR' || t === 'ANY')) return true;
    if (sameName(q.name, instance) && (t === 'SRV' || t === 'TXT' || t === 'ANY')) return true;
    if (sameName(q.name, host) && (t === 'A' || t === 'ANY')) return true;
  }
  return false;
}

/** Known-answer suppression: the querier already holds our PTR with at least half its TTL left. */
export function knownAnswerSuppresses(packet: Packet, self: LanSelf): boolean {
  const instance = instanceName(self);
  return (packet.answers ?? []).slice(0, MAX_RECORDS).some((a) =>
    a.type === 'PTR' && sameName(a.name, SERVICE) && sameName((a as StringAnswer).data, instance) && (a.ttl ?? 0) >= RECORD_TTL_S / 2);
}

function txtFields(data: unknown): Map<string, string> | undefined {
  const items = Array.isArray(data) ? data : [data];
  if (items.length === 0 || items.length > 16) return undefined;
  const out = new Map<string, string>();
  for (const item of items) {
    const text = Buffer.isBuffer(item) ? item.toString('utf8') : typeof item === 'string' ? item : undefined;
    if (text === undefined || text.length > 255) return undefined;
    const eq = text.indexOf('=');
    if (eq <= 0) continue; // a boolean attribute: not one of ours, harmless
    const key = text.slice(0, eq).toLowerCase();
    if (out.has(key)) continue; // RFC 6763 §6.4: only the first occurrence counts
    out.set(key, text.slice(eq + 1));
  }
  return out;
}

function usableIpv4(a: unknown): a is string {
  return typeof a === 'string' && isIPv4(a) && !isMulticastIp(a) && !isUnspecifiedIp(a) && !isBroadcastIp(a);
}

/**
 * Every Knit instance a response describes (SRV + TXT, with the A records of
 * the SRV target), and how many instance-looking records were rejected. Other
 * services' records in the same packet are ignored without complaint.
 */
export function parseResponse(packet: Packet): { announcements: Announcement[]; rejected: { instance: string; reason: RejectReason }[] } {
  const records = [...(packet.answers ?? []), ...(packet.additionals ?? [])].slice(0, MAX_RECORDS);
  const suffix = `.${SERVICE}`;
  const announcements: Announcement[] = [];
  const rejected: { instance: string; reason: RejectReason }[] = [];
  for (const r of records) {
    if (r.type !== 'SRV' || typeof r.name !== 'string' || !r.name.toLowerCase().endsWith(suffix)) continue;
    const srv = r as SrvAnswer;
    const instance = srv.name.toLowerCase();
    const label = instance.slice(0, -suffix.length);
    const reject = (reason: RejectReason) => rejected.push({ instance, reason });
    if (label.length === 0 || label.length > 63 || label.includes('.')) { reject('malformed'); continue; }
    const port = srv.data?.port;
    const target = srv.data?.target;
    if (!Number.isInteger(port) || port < 1 || port > 65535 || typeof target !== 'string' || target.length > 255) { reject('malformed'); continue; }
    const txt = records.find((x): x is TxtAnswer => x.type === 'TXT' && sameName(x.name, instance));
    const fields = txt && txtFields(txt.data);
    if (!fields) { reject('malformed'); continue; }
    if (fields.get('v') !== PROTOCOL_VERSION) { reject('version'); continue; }
    const meshId = fields.get('mesh') ?? '';
    const fp = fields.get('fp') ?? '';
    const dk = fields.get('dk') ?? '';
    if (!/^[0-9a-f]{16}$/.test(meshId) || !/^[0-9a-f]{32}$/.test(fp) || !decodeKey(dk)) { reject('malformed'); continue; }
    const addresses: string[] = [];
    for (const x of records) {
      if (x.type !== 'A' || !sameName(x.name, target)) continue;
      const ip = (x as StringAnswer).data;
      if (!usableIpv4(ip)) continue;
      if (!addresses.includes(ip) && addresses.length < MAX_ADDRESSES) addresses.push(ip);
    }
    const ttl = Math.min(srv.ttl ?? 0, txt!.ttl ?? 0);
    announcements.push({ instance, fingerprint: fp, meshId, discoKey: dk, port, addresses, ttlS: Number.isFinite(ttl) && ttl > 0 ? ttl : 0 });
  }
  return { announcements, rejected };
}
