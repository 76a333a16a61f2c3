/**
 * Talks to a running agent's local API over its unix socket.
 */
import { request } from 'node:http';
import { KnitError } from '../../shared/errors.js';

export async function callAgent(socketPath: string, method: 'GET' | 'POST', path: string, timeoutMs = 15_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return reject(new KnitError('KNIT_ERR_PROTOCOL', 'the agent sent a malformed answer'));
        }
        if ((res.statusCode ?? 500) >= 400) {
          const e = (body as { error?: { message?: string } }).error;
          return reject(new KnitError('KNIT_ERR_INTERNAL', e?.message ?? `agent answered ${res.statusCode}`));
        }
        resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new KnitError('KNIT_ERR_UNREACHABLE', `no agent is running for this state dir (nothing answers on ${socketPath}); start one with knit up`));
      } else reject(new KnitError('KNIT_ERR_INTERNAL', `talking to the agent failed: ${err.message}`));
    });
    req.end();
  });
}
