/**
 * Which endpoints a member may have sent to its peers, pure: a peer pings every endpoint
 * in a report or a call-me-maybe, so multicast, broadcast, unspecified and (unless the
 * coordinator allows them, single-machine tests) loopback endpoints are dropped, and no
 * member can aim its peers' pings at their own loopback services or a multicast group.
 * One such endpoint costs that endpoint, never the session: closing it made the agent
 * reconnect and send the same report, several times a second, for good. The hub
 * (hub.ts) counts and logs what is dropped.
 */
import { isReportableEndpoint, parseEndpoint } from '../../shared/net/addr.js';

/** The endpoints a peer may be sent to (`keep`, in order) and the rest (`dropped`). Endpoints are decoded ones ("ip:port"). */
export function reportableEndpoints(endpoints: string[], allowLoopback: boolean): { keep: string[]; dropped: string[] } {
  const keep: string[] = [];
  const dropped: string[] = [];
  for (const e of endpoints) (isReportableEndpoint(parseEndpoint(e)!, { allowLoopback }) ? keep : dropped).push(e);
  return { keep, dropped };
}
