/**
 * The coordinator's metrics in Prometheus text exposition format (0.0.4).
 * A handful of counters, gauges read at scrape time, and one histogram;
 * small enough that a client library would be more code than it saves.
 */

const FANOUT_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class Histogram {
  readonly counts = new Array<number>(FANOUT_BUCKETS_S.length).fill(0);
  sum = 0;
  count = 0;

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < FANOUT_BUCKETS_S.length; i++) if (seconds <= FANOUT_BUCKETS_S[i]!) this.counts[i]!++;
  }

  render(name: string, help: string): string[] {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    FANOUT_BUCKETS_S.forEach((b, i) => lines.push(`${name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${name}_bucket{le="+Inf"} ${this.count}`, `${name}_sum ${this.sum}`, `${name}_count ${this.count}`);
    return lines;
  }
}

export class CoordinatorMetrics {
  connections = 0;
  deltasSent = 0;
  snapshotsSent = 0;
  wsProtocolErrors = 0;
  authFailures = 0;
  /** Endpoints dropped from reports and call-me-maybes (loopback, multicast, …): the rest of the message stands. */
  endpointsRefused = 0;
  snapshotsEncoded = 0;
  readonly fanout = new Histogram();
  /** Time to commit one window and hand its delta to every session: the coordinator's work per change. */
  readonly flush = new Histogram();
  readonly joinFailures = new Map<string, number>();
  joins = 0;

  noteJoinFailure(reason: string): void {
    this.joinFailures.set(reason, (this.joinFailures.get(reason) ?? 0) + 1);
  }

  render(gauges: { nodes: number; online: number; stun?: { requests: number; responses: number; dropped: number; rateLimited: number } }): string {
    const out: string[] = [];
    const metric = (name: string, type: 'gauge' | 'counter', help: string, value: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
    metric('knit_nodes', 'gauge', 'Nodes registered in the mesh.', gauges.nodes);
    metric('knit_nodes_online', 'gauge', 'Nodes with an authenticated control session.', gauges.online);
    metric('knit_connections', 'gauge', 'Open control WebSocket connections (authenticated or not).', this.connections);
    metric('knit_joins_total', 'counter', 'Successful joins.', this.joins);
    metric('knit_deltas_sent_total', 'counter', 'Peer-map delta frames sent.', this.deltasSent);
    metric('knit_snapshots_sent_total', 'counter', 'Peer-map snapshot frames sent.', this.snapshotsSent);
    metric('knit_snapshots_encoded_total', 'counter', 'Peer-map snapshots encoded (at most one per version, shared by every client that needs it).', this.snapshotsEncoded);
    metric('knit_control_protocol_errors_total', 'counter', 'Control connections closed for malformed input.', this.wsProtocolErrors);
    metric('knit_endpoints_refused_total', 'counter', 'Endpoints dropped from reports and call-me-maybes as unreachable for peers (loopback, multicast, broadcast, unspecified).', this.endpointsRefused);
    metric('knit_control_auth_failures_total', 'counter', 'Control connections that failed proof of key possession.', this.authFailures);
    out.push(...this.fanout.render('knit_fanout_latency_seconds', 'Time from a change accepted to its delta handed to the last connected peer.'));
    out.push(...this.flush.render('knit_delta_flush_seconds', 'Time to commit a window and hand its delta to every connected peer.'));
    out.push('# HELP knit_join_failures_total Refused joins by reason.', '# TYPE knit_join_failures_total counter');
    for (const [reason, n] of this.joinFailures) out.push(`knit_join_failures_total{reason="${reason}"} ${n}`);
    if (gauges.stun) {
      metric('knit_stun_requests_total', 'counter', 'STUN binding requests received.', gauges.stun.requests);
      metric('knit_stun_responses_total', 'counter', 'STUN binding responses sent.', gauges.stun.responses);
      metric('knit_stun_dropped_total', 'counter', 'Malformed STUN packets dropped.', gauges.stun.dropped);
      metric('knit_stun_rate_limited_total', 'counter', 'STUN requests refused by the per-source rate limit.', gauges.stun.rateLimited);
    }
    return out.join('\n') + '\n';
  }
}
