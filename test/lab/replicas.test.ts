/**
 * Coordinator replicas in the lab, the ground truth for failover: two
 * `knit coordinator` processes on one PostgreSQL database behind a TCP load
 * balancer, real `knit up` agents with wireguard-go, and a `kill -9` of the
 * replica the agents are connected to while a continuous ping runs through the
 * tunnel between them. The tunnel must not notice (WireGuard and disco don't go
 * through the coordinator); the agents reconnect through the balancer to the
 * survivor, resume at its version, and the store records the survivor as their
 * sessions' holder; a node that joins after the kill reaches the others.
 *
 *   inet 198.18.0.0/15
 *     ├── dc  198.18.1.10   balancer :8080 → replica A :8081 (STUN 3478/3479)
 *     │                                     → replica B :8082 (STUN 3488/3489)
 *     │                     PostgreSQL on the namespace's own 127.0.0.1
 *     ├── a   198.18.1.11   knit up (wireguard-go)
 *     ├── b   198.18.1.12   knit up
 *     └── c   198.18.1.13   knit up, joins after the kill
 *
 * Agents look for STUN at the host of their coordinator URL (the balancer's
 * address) on the ports the replica they reach announces: with every replica in
 * the balancer's namespace, each replica's own STUN ports are those.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { postgresUnavailable } from '../../sim/bench/postgres-server.js';
import { parseJoinToken } from '../../agent/control/join.js';
import { until as untilHelper } from '../helpers/until.js';
import { registerSecret, saveTestLog } from '../security/log-secrets.js';
import { BIN, labAgents, type LabAgents } from './mesh.js';
import { canRunLab, createLab, type Lab, type LabHost, type LabProcess } from './netlab.js';
import { startLabPostgres, type LabPostgres } from './postgres-in-namespace.js';
import { startTcpBalancer, type TcpBalancer } from './tcp-balancer.js';

const check = canRunLab();
const noPostgres = check.ok ? postgresUnavailable() : undefined;

/** 75 echoes 200 ms apart: 15 s of tunnel traffic around the kill. */
const PING_COUNT = 75;
const PING_INTERVAL_S = 0.2;
/** Echoes answered before the kill, so the ping is known to flow before it. */
const PINGS_BEFORE_KILL = 10;
/** A lost echo is tolerated (one in flight at the kill could meet a busy machine); none is expected. */
const MAX_LOST_PINGS = 1;
/** The agents' first reconnect waits 0.1–1 s (docs/deployment.md); 15 s only bounds a failure. */
const RECONNECT_LIMIT_MS = 15_000;

interface Replica {
  name: 'A' | 'B';
  proc: LabProcess;
  /** Its id among the replicas, as the store's nodes.online_replica names it. */
  id: string;
  base: string;
}

interface NodeRow { id: number; name: string; online_replica: string | null }

if (!check.ok || noPostgres) {
  test('coordinator replicas fail over under real agents', (t) => { t.skip(`skipped: ${check.ok ? noPostgres : check.reason}`); });
} else {
  describe('coordinator replicas fail over under real agents (PostgreSQL, wireguard-go)', () => {
    let lab: Lab;
    let dir: string;
    let dc: LabHost;
    let pg: LabPostgres | undefined;
    let balancer: TcpBalancer | undefined;
    const replicas: Replica[] = [];
    let mesh: LabAgents;
    let holder: Replica;
    let survivor: Replica;
    const controlEvents = new Map<string, Array<{ at: number; status: string }>>();

    /** Only the JSON log lines: the first replica's stdout also carries the admin token it minted. */
    const jsonLines = (p: LabProcess, chars: number) => p.output().split('\n').filter((l) => l.startsWith('{')).join('\n').slice(-chars);
    const explainSide = () => [
      ...replicas.map((r) => `--- replica ${r.name} (${r.id})${r.proc.exited() ? ' [exited]' : ''}\n${jsonLines(r.proc, 1500)}`),
      `--- balancer\n${balancer ? jsonLines(balancer.proc, 800) : ''}`,
    ].join('\n');

    /** GET inside the datacenter namespace (nothing in it is reachable from the host). */
    const get = async (url: string): Promise<string> => {
      const script = 'fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }).then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })';
      return (await lab.run(dc.ns, [process.execPath, '-e', script, url])).stdout;
    };
    const health = async (r: Replica) => JSON.parse(await get(`${r.base}/healthz`)) as { version: number; online: number };
    const metric = async (r: Replica, name: string) => {
      const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(await get(`${r.base}/metrics`));
      assert.ok(m, `${name} in /metrics`);
      return Number(m[1]);
    };
    // id is a BIGINT, which pg hands over as a string.
    const nodes = async () => pg!.query<NodeRow>('SELECT id::integer AS id, name, online_replica FROM nodes ORDER BY id');
    const until = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number) => mesh.until(what, fn, timeoutMs);

    const startReplica = async (name: 'A' | 'B', port: number, stunPort: number, publicUrl: string): Promise<Replica> => {
      const proc = lab.spawn(dc.ns, [process.execPath, BIN, 'coordinator', '--listen', `${dc.address}:${port}`,
        '--stun', `${dc.address}:${stunPort}`, '--stun2', `${dc.address}:${stunPort + 1}`, '--url', publicUrl,
        '--data', join(dir, `replica-${name}`)], { KNIT_STORE: pg!.url }); // the URL carries a password: the environment, not argv
      let ready: { replica?: string } | undefined;
      proc.onLine((line) => {
        if (!line.includes('"coordinator ready"')) return;
        ready = JSON.parse(line) as { replica?: string };
      });
      const replica: Replica = { name, proc, id: '', base: `http://${dc.address}:${port}` };
      replicas.push(replica);
      const { replica: id } = await untilHelper(`replica ${name} ready`, () => {
        if (!ready && proc.exited()) throw new Error(`replica ${name} exited`);
        return ready;
      }, { timeoutMs: 20_000, intervalMs: 100, explain: explainSide });
      assert.ok(id, `replica ${name} logs its id`);
      replica.id = id;
      // A first start on an empty database prints the admin token (never logged): the scan must know it.
      for (const token of proc.output().match(/knit_[A-Za-z0-9_-]{90,}/g) ?? []) registerSecret(token);
      return replica;
    };

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'knit-replicas-lab-'));
      lab = await createLab();
      dc = await lab.addHost('dc');
      const hosts: Array<[string, LabHost]> = [['a', await lab.addHost('a')], ['b', await lab.addHost('b')]];
      const started = await startLabPostgres(lab, dc.ns);
      if ('skip' in started) throw new Error(`PostgreSQL was found but won't start: ${started.skip}`);
      pg = started;
      const publicUrl = `http://${dc.address}:8080`;
      // One after the other: the first start on the empty database migrates it and mints the admin token.
      await startReplica('A', 8081, 3478, publicUrl);
      await startReplica('B', 8082, 3488, publicUrl);
      balancer = await startTcpBalancer(lab, dc.ns, `${dc.address}:8080`, [`${dc.address}:8081`, `${dc.address}:8082`]);
      // A join token straight from the store, as an operator would make one; the URL goes in on stdin.
      const token = (await lab.run(dc.ns, ['sh', '-c', 'export KNIT_STORE="$(cat)" && exec "$@"', 'sh', process.execPath, BIN, 'token', 'create', '--reusable'], { input: pg.url })).stdout.trim();
      registerSecret(token);
      assert.equal(parseJoinToken(token).url, publicUrl, 'tokens carry the balancer\'s URL');
      mesh = labAgents(lab, token, dir, { explain: explainSide });
      for (const [name, host] of hosts) {
        mesh.start(name, host);
        watchControl(name);
      }
    });

    after(async () => {
      for (const r of replicas) saveTestLog(`lab-replica-${r.name}`, jsonLines(r.proc, 64 * 1024));
      if (balancer) saveTestLog('lab-balancer', balancer.proc.output());
      for (const [name, a] of mesh?.agents ?? []) saveTestLog(`lab-agent-${name}`, a.proc.output());
      // The replicas first (a clean stop commits its sessions' release), then the database, then the rest.
      await Promise.all(replicas.map((r) => r.proc.stop()));
      await pg?.stop();
      await lab?.teardown();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** Records when an agent's control connection changes status, from its log, as the lines arrive. */
    function watchControl(name: string): void {
      const events: Array<{ at: number; status: string }> = [];
      controlEvents.set(name, events);
      mesh.agents.get(name)!.proc.onLine((line) => {
        if (!line.includes('"coordinator connection"')) return;
        try {
          events.push({ at: performance.now(), status: String((JSON.parse(line) as { status?: string }).status) });
        } catch { /* a partial line */ }
      });
    }

    it('both agents ping each other through the tunnel, their sessions on one replica', { timeout: 60_000 }, async () => {
      await until('a pings b', () => mesh.pings('a', 'b'), 40_000);
      assert.ok(await mesh.pings('b', 'a'));
      // A path counts once WireGuard handshook over it (docs/disco.md): the side whose path came
      // after the first handshake shows `direct (handshaking)` until its own, so wait for it.
      for (const [x, y] of [['a', 'b'], ['b', 'a']] as const) {
        await until(`${x} → ${y} direct or lan`, async () => {
          const p = (await mesh.status(x)).peers.find((q) => q.name === y);
          return p && (p.path === 'direct' || p.path === 'lan');
        }, 20_000);
      }
      const ids = await Promise.all(['a', 'b'].map(async (n) => (await mesh.status(n)).self.id));
      const rows = await until('the store records who holds a\'s and b\'s sessions', async () => {
        const r = (await nodes()).filter((n) => ids.includes(n.id));
        return r.length === 2 && r.every((n) => n.online_replica !== null) && r;
      }, 10_000);
      // The balancer sends every connection to the first replica that accepts: both agents share one.
      assert.equal(rows[0]!.online_replica, rows[1]!.online_replica, `sessions: ${JSON.stringify(rows)}`);
      holder = replicas.find((r) => r.id === rows[0]!.online_replica)!;
      assert.ok(holder, `the holder ${rows[0]!.online_replica} is one of ${replicas.map((r) => r.id)}`);
      survivor = replicas.find((r) => r !== holder)!;
      assert.equal((await health(holder)).online, 2);
      assert.equal((await health(survivor)).online, 0);
    });

    it('kill -9 of that replica: the ping through the tunnel goes on, the agents resume on the survivor', { timeout: 60_000 }, async (t) => {
      assert.ok(holder && survivor, 'the agents were up');
      await until('the survivor follows the holder\'s feed', async () => (await health(survivor)).version === (await health(holder)).version, 10_000);
      const snapshotsBefore = await metric(survivor, 'knit_snapshots_sent_total');
      const bIp = (await mesh.status('b')).self.ips[0]!;

      // A continuous ping a → b through the tunnel, every reply recorded as it arrives.
      const ping = lab.spawn(mesh.agents.get('a')!.host.ns, ['ping', '-n', '-i', String(PING_INTERVAL_S), '-c', String(PING_COUNT), '-W', '2', bIp]);
      const replies = new Set<number>();
      ping.onLine((line) => {
        const m = /icmp_seq=(\d+)/.exec(line);
        if (m && line.includes('bytes from')) replies.add(Number(m[1]));
      });
      const pingDone = new Promise<void>((resolve) => ping.child.once('exit', () => resolve()));
      await until(`${PINGS_BEFORE_KILL} echoes answered before the kill`, () => replies.size >= PINGS_BEFORE_KILL || ping.exited(), 10_000);
      assert.ok(!ping.exited(), `ping ended early:\n${ping.output().slice(-800)}`);

      const killedAt = performance.now();
      const answeredAtKill = replies.size;
      holder.proc.child.kill('SIGKILL');
      await until(`replica ${holder.name} is gone`, () => holder.proc.exited(), 5_000);

      // (1) The control connections come back, through the balancer, to the survivor.
      const reconnectedAt = (name: string) => controlEvents.get(name)!.find((e) => e.at > killedAt && e.status === 'connected')?.at;
      await until('both agents reconnected', () => ['a', 'b'].every((n) => reconnectedAt(n) !== undefined), RECONNECT_LIMIT_MS);
      const reconnectMs = ['a', 'b'].map((n) => Math.round(reconnectedAt(n)! - killedAt));
      for (const n of ['a', 'b']) assert.equal((await mesh.status(n)).coordinator.status, 'connected', `${n}'s status`);
      t.diagnostic(`control connections back ${reconnectMs.join(' ms, ')} ms after the kill -9 (a, b)`);
      const dropped = ['a', 'b'].map((n) => controlEvents.get(n)!.filter((e) => e.at > killedAt).map((e) => e.status).join('→'));
      t.diagnostic(`control status after the kill: a ${dropped[0]}, b ${dropped[1]}`);

      // (3) They hold the survivor's version, resumed from theirs (no snapshot), and the store says the survivor holds them.
      let versions: number[] = [];
      await until('both agents at the survivor\'s version', async () => {
        const v = (await health(survivor)).version;
        versions = [v, ...await Promise.all(['a', 'b'].map(async (n) => (await mesh.status(n)).coordinator.version))];
        return versions.every((x) => x === v);
      }, 10_000);
      t.diagnostic(`map version: survivor ${versions[0]}, a ${versions[1]}, b ${versions[2]}`);
      assert.equal(await metric(survivor, 'knit_snapshots_sent_total'), snapshotsBefore, 'they resumed from their versions: the survivor sent no snapshot');
      assert.equal((await health(survivor)).online, 2, 'both agents are on the survivor');
      const ids = await Promise.all(['a', 'b'].map(async (n) => (await mesh.status(n)).self.id));
      await until('the store records the survivor as their sessions\' holder', async () => {
        const rows = (await nodes()).filter((n) => ids.includes(n.id));
        return rows.length === 2 && rows.every((n) => n.online_replica === survivor.id);
      }, 10_000);
      const refused = balancer!.events().filter((e) => e.msg === 'refused' && e.at > killedAt).length;
      t.diagnostic(`the balancer met ${refused} refused connection(s) at the dead replica and forwarded them to the survivor`);

      // (2) The ping: no more than MAX_LOST_PINGS lost out of PING_COUNT.
      const pingTimeout = setTimeout(() => ping.child.kill('SIGKILL'), (PING_COUNT * PING_INTERVAL_S + 10) * 1000);
      await pingDone;
      clearTimeout(pingTimeout);
      const summary = /(\d+) packets transmitted, (\d+) received/.exec(ping.output());
      assert.ok(summary, `ping's summary:\n${ping.output().slice(-800)}`);
      const sent = Number(summary[1]);
      const lostSeqs = Array.from({ length: sent }, (_, i) => i + 1).filter((s) => !replies.has(s));
      t.diagnostic(`ping a → b through the tunnel: ${sent} sent, ${replies.size} answered, ${lostSeqs.length} lost${lostSeqs.length ? ` (icmp_seq ${lostSeqs.join(', ')})` : ''}; the kill came after echo ${answeredAtKill}`);
      assert.equal(sent, PING_COUNT);
      assert.ok(lostSeqs.length <= MAX_LOST_PINGS, `${lostSeqs.length} echoes lost: ${lostSeqs.join(', ')}`);
      assert.ok(Math.max(...reconnectMs) < RECONNECT_LIMIT_MS);
      for (const [x, y] of [['a', 'b'], ['b', 'a']] as const) {
        const p = (await mesh.status(x)).peers.find((q) => q.name === y);
        assert.ok(p && (p.path === 'direct' || p.path === 'lan') && p.online, `${x} → ${y} after the failover: path ${p?.path}, online ${p?.online}`);
      }
    });

    it('a node that joins through the balancer after the kill reaches the others', { timeout: 60_000 }, async (t) => {
      assert.ok(survivor && holder?.proc.exited(), 'the failover happened');
      const c = await lab.addHost('c');
      const t0 = performance.now();
      mesh.start('c', c);
      watchControl('c');
      await until('c pings a and b', async () => await mesh.pings('c', 'a') && mesh.pings('c', 'b'), 40_000);
      t.diagnostic(`c joined through the balancer and pinged a and b ${Math.round(performance.now() - t0)} ms after it started`);
      assert.ok(await mesh.pings('a', 'c'));
      assert.ok(await mesh.pings('b', 'c'));
      const cId = (await mesh.status('c')).self.id;
      await until('the store records the survivor as c\'s holder', async () => (await nodes()).find((n) => n.id === cId)?.online_replica === survivor.id, 10_000);
      assert.equal((await health(survivor)).online, 3);
    });
  });
}
