import type { DataSource } from 'typeorm';
import { errorHeardOn, hearErrors, hearPoolErrors, isSymptomOfDeath } from '../connection-errors.js';
import { acquire } from './acquire.js';
import { logged, poolReader, runnerExecutor, type DriverDialect, type Executor, type QueryOutcome } from './driver.js';

interface MysqlConnection {
  query(sql: string, values: unknown[], callback: (err: unknown, result: unknown) => void): unknown;
  query(sql: string, callback: (err: unknown) => void): unknown;
  release(): void;
}
interface MysqlPool {
  getConnection(callback: (err: unknown, connection: MysqlConnection) => void): void;
}

/**
 * MySQL and MariaDB through mysql2. The store's statements go straight to the driver's pool (a replicated
 * DataSource has a pool cluster instead, and takes TypeORM's own path, which picks its master).
 */
export const mysql: DriverDialect = {
  name: 'mysql',
  singleConnection: false,

  executor(dataSource: DataSource): Executor {
    const viaRunner = runnerExecutor(dataSource);
    const pool = poolReader(dataSource, (driver: { pool?: MysqlPool }) => driver.pool, hearPoolErrors);
    return (statement, parameters) => {
      const current = pool();
      if (typeof current?.getConnection !== 'function') return viaRunner(statement, parameters);
      return logged(dataSource, statement, parameters, () => run(current, statement.sql, parameters));
    };
  },

  inTurn: (_dataSource, fn) => fn(),

  ownRunner: (dataSource, onReplica) => dataSource.createQueryRunner(onReplica ? 'slave' : 'master'),

  take: (runner, _dataSource, timeoutMs) => acquire(runner, timeoutMs),

  async giveBack(runner, _dataSource, broken) {
    if (runner.isReleased) return;
    const internal = runner as unknown as { databaseConnection?: { destroy?: () => void }; isReleased: boolean };
    if (broken && typeof internal.databaseConnection?.destroy === 'function') {
      // mysql2 removes a destroyed connection from its pool.
      internal.databaseConnection.destroy();
      internal.isReleased = true;
    } else {
      await runner.release();
    }
  },

  releaseUnused: (runner) => (runner.isReleased ? Promise.resolve() : runner.release()),

  sendControl(connection, sql) {
    const target = connection as Partial<MysqlConnection> | undefined;
    if (typeof target?.query !== 'function') return undefined;
    return new Promise((resolve, reject) => target.query!(sql, (err: unknown) => (err ? reject(err) : resolve(undefined))));
  },
};

function run(pool: MysqlPool, sql: string, values: unknown[]): Promise<QueryOutcome> {
  return new Promise<QueryOutcome>((resolve, reject) =>
    pool.getConnection((err, connection) => {
      if (err) return reject(err);
      hearErrors(connection);
      connection.query(sql, values, (queryError, raw) => {
        connection.release();
        if (queryError) {
          const died = errorHeardOn(connection);
          return reject(died !== undefined && isSymptomOfDeath(queryError) ? died : queryError);
        }
        if (Array.isArray(raw)) resolve({ records: raw, affected: 0 });
        else resolve({ records: [], affected: Number((raw as { affectedRows?: number } | undefined)?.affectedRows ?? 0) });
      });
    }),
  );
}
