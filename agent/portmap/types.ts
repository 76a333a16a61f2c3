/**
 * The port mapper's contract: the events the core (core.ts) takes, the
 * actions it returns, its status and counters, and the two deadlines the
 * shell (index.ts) keeps in step with it. No logic: the core's factory and
 * its tuning stay in core.ts, so the shell, the tests and the core's helpers
 * can share these without importing one another. docs/port-mapping.md.
 */
import type { RandomBytes } from '../../shared/clock.js';
import type { UdpEndpoint } from '../../shared/udp.js';

export type PortMapProtocol = 'pcp' | 'natpmp' | 'upnp';
export const PORTMAP_PROTOCOLS: readonly PortMapProtocol[] = ['pcp', 'natpmp', 'upnp'];

/** An HTTP exchange with the IGD (the shell also aborts at PORTMAP_HTTP_TIMEOUT_MS - 1 s). */
export const PORTMAP_HTTP_TIMEOUT_MS = 5000;
/** Stop waits this long for the gateway to confirm a delete before reporting `stopped` anyway. */
export const PORTMAP_STOP_TIMEOUT_MS = 1000;

export interface PortMapperOptions {
  random: RandomBytes;
  /** Which protocols to try, in order (default PCP, NAT-PMP, UPnP). Tests force one. */
  protocols?: readonly PortMapProtocol[];
  lifetimeS?: number;
  retransmitMs?: readonly number[];
  requestTimeoutMs?: number;
  /** The UPnP mapping's description, seen in the router's UI. */
  description?: string;
}

export type PortMapEvent =
  /** Begin (or begin again) on this network. No gateway: nothing to ask until a network change names one. */
  | { type: 'start'; gateway?: string; localAddress?: string; internalPort: number }
  | { type: 'network-changed'; gateway?: string; localAddress?: string }
  /** The STUN observers that can verify a mapping (the coordinator's). */
  | { type: 'observers'; servers: readonly UdpEndpoint[] }
  /** A datagram on the mapper's socket (PCP/NAT-PMP answers, or a STUN answer that ignored RESPONSE-PORT). */
  | { type: 'udp'; from: UdpEndpoint; bytes: Uint8Array }
  /** A datagram on the SSDP socket. */
  | { type: 'ssdp'; from: UdpEndpoint; bytes: Uint8Array }
  /** A STUN packet that arrived on the tunnel port (maybe the verification echo). */
  | { type: 'tunnel-stun'; from: UdpEndpoint; bytes: Uint8Array }
  | { type: 'http-response'; id: number; status: number; body: string }
  | { type: 'http-error'; id: number; error: string }
  | { type: 'tick' }
  | { type: 'stop' };

export interface PortMapping {
  protocol: PortMapProtocol;
  /** The mapped address as "ip:port": the endpoint candidate. */
  external: string;
  externalAddress: string;
  externalPort: number;
  internalPort: number;
  lifetimeS: number;
  /** `now` scale (the caller's clock). */
  expiresAt: number;
}

export type PortMapAction =
  | { type: 'send'; to: UdpEndpoint; bytes: Uint8Array }
  | { type: 'ssdp-send'; to: UdpEndpoint; bytes: Uint8Array }
  | { type: 'http'; id: number; method: 'GET' | 'POST'; url: string; headers: Record<string, string>; body?: string }
  /** The verified mapping (the endpoint candidate) appeared, moved or went away. */
  | { type: 'candidate'; mapping: PortMapping | undefined }
  /** Something worth a log line. */
  | { type: 'log'; level: 'info' | 'warn' | 'debug'; msg: string; fields?: Record<string, unknown> }
  /** After `stop`: the delete is done (or given up); the shell may close its sockets. */
  | { type: 'stopped' };

export type PortMapPhase = 'idle' | 'probing' | 'mapped' | 'waiting' | 'stopping' | 'stopped';

export interface PortMapStatus {
  phase: PortMapPhase;
  gateway?: string;
  /** The protocol being tried (probing) or holding the mapping. */
  protocol?: PortMapProtocol;
  mapping?: PortMapping;
  verified: boolean;
  /** Why the mapping is not (yet) a candidate, or why the last attempt failed. */
  detail?: string;
  /** Per protocol, why it failed last time. */
  errors: Partial<Record<PortMapProtocol, string>>;
}

export interface PortMapCounters {
  requestsSent: number;
  mappingsObtained: number;
  renewals: number;
  verified: number;
  verifyFailed: number;
  /** Datagrams or answers that were malformed, unexpected or from the wrong source. */
  dropped: number;
  epochResets: number;
}

export interface PortMapper {
  handle(event: PortMapEvent, now: number): PortMapAction[];
  nextWakeup(): number | undefined;
  status(): PortMapStatus;
  readonly counters: PortMapCounters;
}
