/**
 * `knit status`, `knit down` and `knit ping`: thin clients of a running
 * agent's local API. The status document is defined in ../status.ts.
 */
import { callAgent } from '../api/client.js';
import { socketPath } from '../state.js';
import { healthSummary } from '../health.js';
import type { StatusDocument } from '../status.js';
import { KnitError } from '../../shared/errors.js';

function pad(s: string, n: number): string {
  return s.length >= n ? s + ' ' : s + ' '.repeat(n - s.length);
}

export function formatStatus(doc: StatusDocument, now = Date.now()): string {
  const self = doc.self;
  const lines = [
    `${self.name}  ${self.ips.join(', ')}  coordinator ${doc.coordinator.status}${doc.coordinator.detail ? ` (${doc.coordinator.detail})` : ''}`,
    `  engine ${doc.engine.kind}, port ${self.port}, mode ${doc.engine.portMode}, NAT ${self.natType}`,
    `  endpoints ${self.endpoints.length ? self.endpoints.join(' ') : '(none yet)'}`,
  ];
  const pm = doc.portMapping;
  if (pm) {
    const held = pm.external ? `${pm.protocol} ${pm.external}${pm.expiresAt ? `, expires in ${Math.max(0, Math.round((pm.expiresAt - now) / 1000))}s` : ''}${pm.verified ? ', verified' : ''}` : pm.state;
    lines.push(`  port mapping ${held}${pm.detail ? ` (${pm.detail})` : ''}`);
  }
  const health = healthSummary(doc.health ?? []);
  if (health) lines.push(`  ${health}`);
  if (doc.peers.length === 0) lines.push('', 'no peers yet');
  else {
    lines.push('', pad('PEER', 16) + pad('IP', 16) + pad('PATH', 22) + pad('ENDPOINT', 24) + pad('RTT', 8) + 'HANDSHAKE');
    for (const p of doc.peers) {
      const hs = p.lastHandshake ? `${Math.max(0, Math.round((now - p.lastHandshake) / 1000))}s ago` : '-';
      lines.push(pad(p.name, 16) + pad(p.ip, 16) + pad(p.transport === 'ws' ? p.path.replace('relay', 'relay-ws') : p.path, 22) + pad(p.endpoint ?? '-', 24) + pad(p.rttMs === undefined ? '-' : `${p.rttMs}ms`, 8) + hs);
      if (p.why) lines.push(`  └ ${p.why}`);
      if (p.mtu !== undefined && p.path !== 'none') lines.push(`  └ mtu ${p.mtu}${p.pathMtu !== undefined ? ` (path ${p.pathMtu})` : p.path.startsWith('relay') && p.transport !== 'ws' ? ' (relayed: not probed)' : ''}`);
    }
  }
  return lines.join('\n');
}

export async function fetchStatus(stateDir: string): Promise<StatusDocument> {
  return (await callAgent(socketPath(stateDir), 'GET', '/v1/status')) as StatusDocument;
}

export async function requestDown(stateDir: string): Promise<void> {
  await callAgent(socketPath(stateDir), 'POST', '/v1/down');
}

export interface PingReply {
  ok: boolean;
  path: string;
  endpoint?: string;
  rttMs?: number;
  error?: string;
}

export async function pingOnce(stateDir: string, peer: string): Promise<PingReply> {
  if (!/^[A-Za-z0-9.:+/=_-]{1,128}$/.test(peer)) throw new KnitError('KNIT_ERR_USAGE', `"${peer}" is not a peer name, mesh IP or key`);
  return (await callAgent(socketPath(stateDir), 'POST', `/v1/ping?peer=${encodeURIComponent(peer)}`)) as PingReply;
}
