/**
 * Clock jumps. The wall clock can step (NTP, a VM resumed, an admin's `date`);
 * the monotonic clock can't. Durations — how long an ephemeral node has been
 * offline, how full a rate-limit bucket is, when a session must say hello — are
 * measured on the monotonic clock, so a step neither expires everything (a jump
 * forward) nor nothing (a jump back). Token expiry is a point in wall time an
 * admin chose, so it follows the wall clock by definition (docs/security.md).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Clock, TimerHandle } from '../../shared/clock.js';
import { encodeKey, generateKeyPair } from '../../shared/crypto/keys.js';
import { silentLogger } from '../../shared/log.js';
import { ControlHub } from '../../coordinator/control/hub.js';
import { CoordinatorMetrics } from '../../coordinator/metrics.js';
import { Registry } from '../../coordinator/registry/registry.js';
import { SqliteStore } from '../../coordinator/store/sqlite.js';
import { ManualClock } from '../helpers/manual-clock.js';

/** A ManualClock whose wall time can be stepped apart from its monotonic time, as a real host's can. */
class SteppingClock implements Clock {
  readonly mono = new ManualClock(1_000_000);
  private wallOffset = 1_700_000_000_000 - 1_000_000;
  now(): number { return this.mono.now(); }
  wallNow(): number { return this.mono.now() + this.wallOffset; }
  setTimeout(fn: () => void, ms: number): TimerHandle { return this.mono.setTimeout(fn, ms); }
  clearTimeout(h: TimerHandle): void { this.mono.clearTimeout(h); }
  /** Moves monotonic time timer by timer, letting the (asynchronous) work each timer starts finish. */
  advance(ms: number): Promise<void> { return this.mono.advanceAsync(ms, settle); }
  /** The wall clock steps; monotonic time doesn't move. */
  stepWall(ms: number): void { this.wallOffset += ms; }
}

const MIN = 60_000;
const DAY = 24 * 60 * MIN;
const TIMEOUT = 10 * MIN;

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

async function setup() {
  const clock = new SteppingClock();
  const store = new SqliteStore(':memory:');
  const reg = await Registry.open(store, { clock, url: 'http://127.0.0.1:1', exclusive: true });
  const hub = new ControlHub({ registry: reg, clock, logger: silentLogger, metrics: new CoordinatorMetrics(), stunPorts: [], ephemeralTimeoutMs: TIMEOUT });
  const eph = (await reg.createToken({ reusable: true, ephemeral: true })).token;
  const join = async (name: string) => (await reg.join({ token: eph, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: name })).response.node.id;
  return { clock, reg, hub, join };
}

/** Steps (table): what happens to the clock, and which ephemeral nodes must remain afterwards. */
const cases: { name: string; steps: { advance?: number; stepWall?: number }[]; remain: boolean }[] = [
  { name: 'wall jumps a day forward right after the node went offline', steps: [{ advance: MIN }, { stepWall: DAY }, { advance: MIN }], remain: true },
  { name: 'wall jumps a year forward', steps: [{ stepWall: 365 * DAY }, { advance: 2 * MIN }], remain: true },
  { name: 'no jump: offline past the timeout', steps: [{ advance: TIMEOUT + MIN }], remain: false },
  { name: 'wall jumps a day back, then the timeout passes', steps: [{ stepWall: -DAY }, { advance: TIMEOUT + MIN }], remain: false },
  { name: 'wall jumps back and forth, the timeout passes in between', steps: [{ stepWall: -DAY }, { advance: 5 * MIN }, { stepWall: 2 * DAY }, { advance: 6 * MIN }], remain: false },
];

for (const c of cases) {
  test(`ephemeral expiry on the monotonic clock: ${c.name}`, async () => {
    const { clock, reg, hub, join } = await setup();
    const id = await join('e');
    for (const s of c.steps) {
      if (s.stepWall) clock.stepWall(s.stepWall);
      if (s.advance) await clock.advance(s.advance);
    }
    await clock.advance(30_000); // one more housekeeping round
    assert.equal(reg.peer(id) !== undefined, c.remain);
    await hub.stop();
  });
}

test('a wall jump forward does not wipe a fleet: ten offline ephemeral nodes stay until their own timeout', async () => {
  const { clock, reg, hub, join } = await setup();
  const ids: number[] = [];
  for (let i = 0; i < 10; i++) ids.push(await join(`n${i}`));
  await clock.advance(MIN);
  clock.stepWall(7 * DAY);
  await clock.advance(MIN);
  assert.equal(ids.filter((id) => reg.peer(id)).length, 10, 'none expired by the jump');
  await clock.advance(TIMEOUT);
  assert.equal(ids.filter((id) => reg.peer(id)).length, 0, 'all expired on time');
  await hub.stop();
});

test('an online node is never expired by a jump, and its timeout starts when it goes offline', async () => {
  const { clock, reg, hub, join } = await setup();
  const id = await join('o');
  reg.setOnline(id, true);
  clock.stepWall(30 * DAY);
  await clock.advance(TIMEOUT * 3);
  assert.ok(reg.peer(id), 'online: kept');
  reg.setOnline(id, false);
  clock.stepWall(-60 * DAY);
  await clock.advance(TIMEOUT - MIN);
  assert.ok(reg.peer(id), 'offline for less than the timeout');
  await clock.advance(2 * MIN);
  assert.equal(reg.peer(id), undefined, 'offline past the timeout, whatever the wall clock did');
  await hub.stop();
});

test('token expiry is wall time by design: a jump past it expires the token, a jump back makes it usable again', async () => {
  const { clock, reg, hub } = await setup();
  const t = (await reg.createToken({ expiresInMs: 60 * MIN })).token;
  clock.stepWall(2 * 60 * MIN);
  await assert.rejects(reg.join({ token: t, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: 'x' }), { code: 'KNIT_ERR_TOKEN_EXPIRED' });
  clock.stepWall(-2 * 60 * MIN);
  assert.equal((await reg.join({ token: t, nodeKey: encodeKey(generateKeyPair().publicKey), hostname: 'x' })).created, true);
  await hub.stop();
});

test('the hello deadline is monotonic: a wall jump neither cuts a session early nor keeps a silent one', async () => {
  const { clock, hub } = await setup();
  const closes: number[] = [];
  hub.connect({ send() {}, close: (code) => closes.push(code), remoteAddress: '127.0.0.1' });
  clock.stepWall(DAY);
  await clock.advance(1000);
  assert.deepEqual(closes, []);
  clock.stepWall(-2 * DAY);
  await clock.advance(10_000);
  assert.deepEqual(closes, [4408]);
  await hub.stop();
});
