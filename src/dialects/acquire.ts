import type { QueryRunner } from 'typeorm';
import { AcquireTimeoutError } from '../errors.js';

/**
 * Takes a connection for `runner`, giving up after `timeoutMs`. pg-pool waits forever by default
 * (connectionTimeoutMillis = 0), so a saturated pool would otherwise hang requests. A
 * connection that arrives after the timeout is handed straight back to the pool.
 */
export async function acquire(runner: QueryRunner, timeoutMs: number): Promise<void> {
  const connecting = runner.connect();
  if (timeoutMs === Infinity) {
    await connecting;
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(resolve, timeoutMs, 'timeout');
    timer.unref();
  });
  try {
    const winner = await Promise.race([connecting.then(() => 'connected' as const), timedOut]);
    if (winner === 'timeout') {
      connecting.then(
        () => {
          // The unit of work usually releases the runner (on its 503) before this late connection arrives;
          // TypeORM's release() is then a no-op and the connection would stay checked out forever.
          (runner as { isReleased: boolean }).isReleased = false;
          return runner.release();
        },
        () => undefined,
      );
      throw new AcquireTimeoutError(
        `typeorm-session: no database connection became free within ${timeoutMs} ms ` +
          '(the pool is exhausted; raise the pool size or transaction.acquireTimeout)',
      );
    }
  } finally {
    clearTimeout(timer);
  }
}
