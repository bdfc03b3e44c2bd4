import { randomBytes } from 'node:crypto';
import createDebug from 'debug';

const debug = createDebug('typeorm-session:prune');

export interface PruneQueries {
  /** Makes sure the lease row exists. */
  createLease(): Promise<void>;
  /** Takes or renews the lease until `until`; true when this holder has it. */
  acquire(holder: string, now: number, until: number): Promise<boolean>;
  release(holder: string): Promise<void>;
  /** Deletes at most `limit` expired rows; returns how many. */
  deleteBatch(now: number, limit: number): Promise<number>;
}

export interface PruneOptions {
  batchSize: number;
  now: () => number;
  /** Called after each batch with the running total. */
  onProgress?: (deleted: number) => void;
  /** Checked after each batch: true ends the run there (the store is closing), releasing the lease. */
  stop?: () => boolean;
}

/** How long a lease lasts without renewal; renewed before every batch, so only a dead holder lets it lapse. */
export const LEASE_MS = 60_000;

/**
 * Deletes expired rows in bounded batches, each its own short statement, so a million expired rows never
 * become one long transaction or lock, and requests are served between batches. Only the holder of the
 * 'prune' lease runs; another instance calling at the same time gets 0 at once.
 */
export async function pruneInBatches(queries: PruneQueries, options: PruneOptions): Promise<number> {
  const holder = randomBytes(12).toString('hex');
  await queries.createLease();
  const started = options.now();
  if (!(await queries.acquire(holder, started, started + LEASE_MS))) {
    debug('another instance holds the prune lease');
    return 0;
  }
  let deleted = 0;
  try {
    for (;;) {
      // Rows that expire while we run are left for the next round, so one prune always ends.
      const count = await queries.deleteBatch(started, options.batchSize);
      deleted += count;
      options.onProgress?.(deleted);
      if (count < options.batchSize) break;
      if (options.stop?.()) {
        debug('stopping after %d rows: the store is closing', deleted);
        break;
      }
      const now = options.now();
      if (!(await queries.acquire(holder, now, now + LEASE_MS))) {
        debug('lost the prune lease after %d rows', deleted);
        break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    await queries.release(holder).catch((err) => debug('releasing the lease failed: %O', err));
  }
  debug('pruned %d expired sessions', deleted);
  return deleted;
}

/**
 * The background pruner: started lazily by the store's first use, never in a constructor; its timer is
 * unref'd (it never keeps a process alive), its period randomised by ±20% so instances started together
 * spread out, and stop() ends it.
 */
export class PruneTimer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly intervalMs: number,
    private readonly prune: () => Promise<number>,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    if (this.timer || this.stopped) return;
    this.schedule();
  }

  private schedule(): void {
    const jitter = 0.8 + Math.random() * 0.4;
    this.timer = setTimeout(() => this.tick(), Math.round(this.intervalMs * jitter));
    this.timer.unref();
  }

  private tick(): void {
    this.running = this.prune()
      .catch(this.onError)
      .finally(() => {
        this.running = undefined;
        if (!this.stopped) this.schedule();
      });
  }

  /** Stops the timer and waits for a prune in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
