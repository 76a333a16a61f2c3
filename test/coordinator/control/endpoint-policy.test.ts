import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reportableEndpoints } from '../../../coordinator/control/endpoint-policy.js';

test('endpoint policy: what a peer may be sent to is kept in order, the rest dropped; loopback only when allowed', () => {
  const rows: Array<{ endpoints: string[]; allowLoopback: boolean; keep: string[]; dropped: string[] }> = [
    { endpoints: ['198.18.0.3:41641', '10.0.0.2:41641'], allowLoopback: false, keep: ['198.18.0.3:41641', '10.0.0.2:41641'], dropped: [] },
    { endpoints: ['127.0.0.1:41641', '198.18.0.3:41641'], allowLoopback: false, keep: ['198.18.0.3:41641'], dropped: ['127.0.0.1:41641'] },
    { endpoints: ['127.0.0.1:41641'], allowLoopback: true, keep: ['127.0.0.1:41641'], dropped: [] },
    { endpoints: ['224.0.0.251:5353', '0.0.0.0:1', '255.255.255.255:9', '[ff02::1]:41641'], allowLoopback: true, keep: [], dropped: ['224.0.0.251:5353', '0.0.0.0:1', '255.255.255.255:9', '[ff02::1]:41641'] },
  ];
  for (const r of rows) assert.deepEqual(reportableEndpoints(r.endpoints, r.allowLoopback), { keep: r.keep, dropped: r.dropped }, JSON.stringify(r.endpoints));
});
