import type { DataSource, QueryRunner } from 'typeorm';
import { AcquireTimeoutError } from '../errors.js';
import type { DialectName } from '../store/sql.js';
import { acquire } from './acquire.js';

/**
 * How a request's transaction gets, and gives back, its connection on each database. PostgreSQL and MySQL
 * have a pool: each request takes its own connection. SQLite has one connection per DataSource, so request
 * transactions (and the store's own statements) take turns on it through a lock: one writer at a time.
 */

/** A FIFO lock with a bounded wait; one per SQLite DataSource. */
class TurnLock {
  private held = false;
  private readonly waiting: Array<() => void> = [];

  async take(timeoutMs: number): Promise<void> {
    if (!this.held) {
      this.held = true;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const turn = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiting.push(turn);
      if (timeoutMs !== Infinity) {
        timer = setTimeout(() => {
          const at = this.waiting.indexOf(turn);
          if (at >= 0) this.waiting.splice(at, 1);
          reject(
            new AcquireTimeoutError(
              `typeorm-session: the SQLite connection stayed busy for ${timeoutMs} ms (another request's transaction holds it)`,
            ),
          );
        }, timeoutMs);
        timer.unref();
      }
    });
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held = false;
  }
}

const locks = new WeakMap<DataSource, TurnLock>();

function lockOf(dataSource: DataSource): TurnLock {
  let lock = locks.get(dataSource);
  if (!lock) locks.set(dataSource, (lock = new TurnLock()));
  return lock;
}

/** A query runner this request owns. On SQLite TypeORM hands out one shared runner, so we make our own. */
export function ownRunner(dataSource: DataSource, dialect: DialectName): QueryRunner {
  const runner = dataSource.createQueryRunner('master');
  if (dialect !== 'sqlite') return runner;
  const Runner = Object.getPrototypeOf(runner).constructor as new (driver: unknown) => QueryRunner;
  const own = new Runner(dataSource.driver);
  // What DataSource.createQueryRunner() does after the driver made the runner.
  Object.assign(own, { manager: dataSource.createEntityManager(own) });
  return own;
}

export async function takeConnection(runner: QueryRunner, dataSource: DataSource, dialect: DialectName, timeoutMs: number) {
  if (dialect === 'sqlite') await lockOf(dataSource).take(timeoutMs);
  else await acquire(runner, timeoutMs);
}

/**
 * Gives the connection back. `broken` is set when the connection may still be inside the transaction (a
 * failed ROLLBACK): it is then destroyed instead of returned to the pool, where the next borrower would see its uncommitted rows.
 */
export async function giveBack(runner: QueryRunner, dataSource: DataSource, dialect: DialectName, broken: unknown) {
  if (dialect === 'sqlite') {
    await runner.release();
    lockOf(dataSource).give();
    return;
  }
  if (runner.isReleased) return;
  const internal = runner as unknown as {
    releasePostgresConnection?: (err?: unknown) => Promise<void>;
    databaseConnection?: { destroy?: () => void };
    isReleased: boolean;
  };
  if (broken && dialect === 'postgres' && typeof internal.releasePostgresConnection === 'function') {
    await internal.releasePostgresConnection.call(runner, broken);
  } else if (broken && dialect === 'mysql' && typeof internal.databaseConnection?.destroy === 'function') {
    internal.databaseConnection.destroy();
    internal.isReleased = true;
  } else {
    await runner.release();
  }
}

/** Runs one autocommit statement of the store's, taking its turn on SQLite's single connection. */
export async function withTurn<T>(dataSource: DataSource, dialect: DialectName, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  if (dialect !== 'sqlite') return fn();
  const lock = lockOf(dataSource);
  await lock.take(timeoutMs);
  try {
    return await fn();
  } finally {
    lock.give();
  }
}
