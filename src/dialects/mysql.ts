import type { DataSource } from 'typeorm';
import { errorHeardOn, hearErrors, hearPoolErrors, isSymptomOfDeath } from '../connection-errors.js';
import { acquire } from './acquire.js';
import { logged, poolReader, runnerExecutor, type DriverDialect, type Executor, type QueryOutcome } from './driver.js';
import { hasCode } from './statement.js';

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
  sql: {
    quote: (id) => `\`${id}\``,
    placeholder: () => '?',
    numberedPlaceholders: false,
    namedPreparedStatements: false,
    // TEXT (64 KiB), like the entity's `text` column: anything else and TypeORM's synchronize would drop and
    // re-add the column, losing every session. A larger session fails its save with a clear error.
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: ' ENGINE=InnoDB DEFAULT CHARSET=utf8mb4',
    // MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB does); indexes go inside CREATE TABLE instead.
    indexesInTable: true,
    createIndex: () => '',
    tableExists: (_quoted, table) =>
      `SELECT COUNT(*) AS \`found\` FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '${table}'`,
    // ON DUPLICATE KEY UPDATE has no WHERE: each assignment keeps the old value when the row fails `keep`.
    // Assignments run left to right and later ones see earlier results, so `keep` must read only columns
    // that keep its answer (expires_at stays positive on a live row and negative on a dead one).
    upsertTail: (set, keep) => `ON DUPLICATE KEY UPDATE ${set.map(([c, v]) => `${c} = IF(${keep}, ${v}, ${c})`).join(', ')}`,
    // VALUES() is deprecated in MySQL 8.0.20 but is the only form MariaDB also accepts.
    excluded: (column) => `VALUES(${column})`,
    // Inside ON DUPLICATE KEY UPDATE a bare column is the existing row's value.
    existing: (_table, column) => column,
    offset: 'LIMIT 18446744073709551615 OFFSET :keep',
    // MySQL rejects LIMIT inside an IN subquery but takes it in a derived table, which is also the way round
    // "can't specify target table for update in FROM clause": it is materialized before the UPDATE changes rows.
    inSubquery: (select) => `SELECT \`id\` FROM (${select}) AS \`older\``,
    least: 'LEAST',
    insertIgnore: (table, columns) => `INSERT IGNORE INTO ${table} ${columns}`,
    // No LIMIT in an IN subquery, but DELETE ... LIMIT exists.
    pruneBatch: (t, e) => `DELETE FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit`,
  },

  isMissingTable: (err) => hasCode(err, ['ER_NO_SUCH_TABLE', 1146]),
  isAlreadyExists: (err) => hasCode(err, ['ER_TABLE_EXISTS_ERROR', 1050, 'ER_DUP_KEYNAME']),
  isRetryable: (err) => hasCode(err, ['ER_LOCK_DEADLOCK', 1213, 'ER_LOCK_WAIT_TIMEOUT', 1205]),
  isLostPreparedStatement: () => false,
  // The level applies to the next transaction only, so it goes right before it.
  beginStatements(isolation, readOnly = false) {
    const start = readOnly ? 'START TRANSACTION READ ONLY' : 'START TRANSACTION';
    return isolation ? [`SET TRANSACTION ISOLATION LEVEL ${isolation}`, start] : [start];
  },

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
