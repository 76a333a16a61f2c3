/**
 * SelfEndpoints' report: endpoints the coordinator would drop are not sent.
 * Loopback ones go out only once the welcome said the coordinator passes them on.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../shared/log.js';
import { SelfEndpoints } from '../../agent/self-endpoints.js';
import { ManualClock } from '../helpers/manual-clock.js';

test('reports leave out loopback endpoints unless the coordinator accepts them', () => {
  const cases: { accepted: boolean; local: string[]; want: string[] }[] = [
    { accepted: false, local: ['127.0.0.1', '10.0.0.2'], want: ['10.0.0.2:41641'] },
    { accepted: false, local: ['::1'], want: [] },
    { accepted: true, local: ['127.0.0.1', '10.0.0.2'], want: ['127.0.0.1:41641', '10.0.0.2:41641'] },
  ];
  for (const c of cases) {
    const reports: string[][] = [];
    const self = new SelfEndpoints({
      clock: new ManualClock(0), random: (n) => new Uint8Array(n), logger: silentLogger, udp: { send() {} },
      localAddresses: () => c.local, tunnelPort: () => 41641,
      report: (endpoints) => reports.push(endpoints), publicEndpointMoved() {}, arm() {},
    });
    self.loopbackAccepted = c.accepted;
    self.resetToLocal();
    self.report();
    assert.deepEqual(reports, [c.want], JSON.stringify(c));
  }
});
