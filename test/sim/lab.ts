/**
 * Small helpers for the sim tests: a topology with no jitter, sockets that
 * record what reaches them, and a STUN-like echo server that answers with the
 * source address it saw (how a test learns a NAT mapping from outside).
 */
import type { UdpEndpoint } from '../../shared/udp.js';
import { Topology, type TopologyOptions } from '../../sim/topology.js';
import type { SimHost, VirtualUdpSocket } from '../../sim/net.js';

export interface Heard {
  at: number;
  to: string; // host:port that received
  from: string; // ip:port it saw
  text: string;
}

export function quietTopology(o: Partial<TopologyOptions> = {}): Topology {
  return new Topology({ seed: 5, internet: { jitterMs: 0 }, settle: false, ...o });
}

/** Binds `port` on `host` and records every packet into `log`. */
export function listen(host: SimHost, port: number, log: Heard[], options: { multicast?: string[] } = {}): VirtualUdpSocket {
  const s = host.bindUdp(port, options);
  s.onMessage((data, from) => log.push({ at: host.net.clock.elapsed(), to: `${host.name}:${s.port}`, from: `${from.address}:${from.port}`, text: new TextDecoder().decode(data) }));
  return s;
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** An echo server: answers every packet with "seen <ip:port>", the source it observed. */
export function reflector(host: SimHost, port: number): VirtualUdpSocket {
  const s = host.bindUdp(port);
  s.onMessage((_d, from) => s.send(text(`seen ${from.address}:${from.port}`), from));
  return s;
}

/** Parses the reflector's answer back into an endpoint. */
export function seen(h: Heard | undefined): UdpEndpoint | undefined {
  const m = h?.text.match(/^seen (\d+\.\d+\.\d+\.\d+):(\d+)$/);
  return m ? { address: m[1]!, port: Number(m[2]) } : undefined;
}
