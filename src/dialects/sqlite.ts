import type { DataSource, QueryRunner } from 'typeorm';
import { AcquireTimeoutError } from '../errors.js';
import { runnerExecutor, type DriverDialect } from './driver.js';
import { hasCode, messageOf } from './statement.js';

// How long a store statement waits for SQLite's single connection while a request transaction holds it.
const STORE_TURN_TIMEOUT_MS = 10_000;

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

/** Runs `fn` (one of the store's autocommit statements) in its turn on SQLite's single connection. */
export async function withTurn<T>(dataSource: DataSource, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const lock = lockOf(dataSource);
  await lock.take(timeoutMs);
  try {
    return await fn();
  } finally {
    lock.give();
  }
}

/**
 * SQLite (better-sqlite3, sqlite, sql.js): one connection per DataSource, so request transactions and the
 * store's own statements take turns on it through a lock, one writer at a time, and every statement goes
 * through a QueryRunner (the driver is synchronous and has no socket, so no connection error can arrive
 * unheard).
 */
export const sqlite: DriverDialect = {
  name: 'sqlite',
  singleConnection: true,
  sql: {
    quote: (id) => `"${id}"`,
    placeholder: () => '?',
    numberedPlaceholders: false,
    namedPreparedStatements: false,
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: '',
    indexesInTable: false,
    tableExists: (_quoted, table) => `SELECT COUNT(*) AS "found" FROM sqlite_master WHERE type = 'table' AND name = '${table}'`,
    upsertTail: (set, keep) => `ON CONFLICT ("id") DO UPDATE SET ${set.map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE ${keep}`,
    excluded: (column) => `excluded.${column}`,
    existing: (table, column) => `${table}.${column}`,
    createIndex: (name, table, column) => `CREATE INDEX IF NOT EXISTS "${name}" ON "${table}" ("${column}")`,
    offset: 'LIMIT -1 OFFSET :keep',
    inSubquery: (select) => select,
    least: 'MIN',
    insertIgnore: (table, columns) => `INSERT OR IGNORE INTO ${table} ${columns}`,
    pruneBatch: (t, e, id) => `DELETE FROM ${t} WHERE ${id} IN (SELECT ${id} FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit)`,
  },

  // The drivers give these as messages only.
  isMissingTable: (err) => /no such table/i.test(messageOf(err)),
  isAlreadyExists: (err) => /already exists/i.test(messageOf(err)),
  isRetryable: (err) => hasCode(err, ['SQLITE_BUSY']) || /database is locked/i.test(messageOf(err)),
  isLostPreparedStatement: () => false,
  // IMMEDIATE takes the write lock up front, so two request transactions never both read and then deadlock
  // on upgrading; SQLite has no isolation levels to set (its transactions are serializable).
  beginStatements: () => ['BEGIN IMMEDIATE'],

  executor: (dataSource) => runnerExecutor(dataSource, (fn) => withTurn(dataSource, STORE_TURN_TIMEOUT_MS, fn)),

  inTurn: (dataSource, fn) => withTurn(dataSource, STORE_TURN_TIMEOUT_MS, fn),

  ownRunner(dataSource): QueryRunner {
    // TypeORM hands out one shared runner for SQLite; the request makes its own.
    const shared = dataSource.createQueryRunner('master');
    const Runner = Object.getPrototypeOf(shared).constructor as new (driver: unknown) => QueryRunner;
    const own = new Runner(dataSource.driver);
    // What DataSource.createQueryRunner() does after the driver made the runner.
    Object.assign(own, { manager: dataSource.createEntityManager(own) });
    return own;
  },

  take: (_runner, dataSource, timeoutMs) => lockOf(dataSource).take(timeoutMs),

  async giveBack(runner, dataSource) {
    await runner.release();
    lockOf(dataSource).give();
  },

  releaseUnused: async () => undefined,

  sendControl: () => undefined,
};
