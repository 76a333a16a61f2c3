/**
 * What the coordinator benchmark reports (coordinator-bench.ts): the figures a
 * single coordinator and a set of replicas share, measured and computed the
 * same way, and what each kind adds. With replicas every shared figure is over
 * the whole set (all replicas' agents, all their memory).
 */

export interface ClusterFigures {
  agents: number;
  connected: number;
  loadWorkers: number;
  /** With replicas, joins spread over them, each a transaction under the database's write lock. */
  joinPerSec: number;
  connectPerSec: number;
  /** RSS per agent, after GC: the coordinators' growth from N/2 to N connected agents, per agent. */
  bytesPerAgent: number;
  idleWindowMs: number;
  fanoutChanges: number;
  /** (change, receiver) pairs delivered: every agent but the reporter, on every replica. */
  fanoutDeliveries: number;
  fanoutMissed: number;
  /** From the report reaching a coordinator to the delta's arrival at every other agent. */
  fanoutP50Ms: number;
  fanoutP99Ms: number;
  /** Per change, the time until the last peer had it: the median over changes. */
  fanoutLastPeerP50Ms: number;
  /**
   * The committing coordinator's own work per endpoint change: commit, persist, hand to every
   * socket (with replicas, the commit to PostgreSQL and reading it back from the feed too).
   */
  perChangeMs: number;
  deltaBytesPerEndpointChange: number;
  snapshotBytes: number;
  snapshotsEncoded: number;
  snapshotsSent: number;
  reconnectStormMs: number;
  reconnectStormHeld: number;
  problems: Record<string, number>;
  problemSamples: string[];
  wallMs: number;
  /** The machine's 1-minute load average at the start and the end: other work skews every figure above. */
  loadAvg: [number, number];
}

/** One coordinator process on SQLite. */
export interface CoordinatorBenchResult extends ClusterFigures {
  /** bytesPerAgent from V8's view: heap used plus external (Buffers). */
  heapBytesPerAgent: number;
  /** The whole coordinator process with N agents connected, and empty. */
  coordinatorRssMB: number;
  emptyCoordinatorRssMB: number;
  idleCpuPct: number;
}

/** Replicas on PostgreSQL. */
export interface ReplicaBenchResult extends ClusterFigures {
  replicas: number;
  /** Agents holding a session on each replica (round-robin: N/R each). */
  agentsPerReplica: number[];
  /** Each replica's RSS growth over the same span, per agent that connected to it (each replica also holds every node's record). */
  replicaBytesPerAgent: number[];
  replicaRssMB: number[];
  emptyReplicaRssMB: number[];
  /** Each replica's CPU over the idle window (percent of one core). */
  idleCpuPct: number[];
  /** Receivers on the reporter's own replica only. */
  sameReplicaFanoutP50Ms: number;
  sameReplicaFanoutP99Ms: number;
  /** Receivers on the other replicas only: commit, NOTIFY, the other replica reading the feed, its sends. */
  crossReplicaFanoutP50Ms: number;
  crossReplicaFanoutP99Ms: number;
  /**
   * CPU seconds over the phases (join to storm), of each replica and of the PostgreSQL
   * server (all its processes), against `measuredMs` of wall time on this machine's cores:
   * who used the machine. The load generators take most of the rest.
   */
  replicaCpuS: number[];
  postgresCpuS: number;
  measuredMs: number;
  /** Each replica's peer-map version at the end; they must all be equal. */
  versions: number[];
  versionsAgree: boolean;
}
