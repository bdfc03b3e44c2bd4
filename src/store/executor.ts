import { QueryFailedError, type DataSource } from 'typeorm';
import type { DialectName, Statement } from './sql.js';
import { withTurn } from '../unit-of-work/connection.js';

export interface QueryOutcome {
  records: unknown[];
  affected: number;
}

/** Runs one of the store's statements as a single autocommit statement. */
export type Executor = (statement: Statement, parameters: unknown[]) => Promise<QueryOutcome>;

// How long a store statement waits for SQLite's single connection while a request transaction holds it.
const SQLITE_TURN_TIMEOUT_MS = 10_000;

interface PgPool {
  query(config: { name?: string; text: string; values: unknown[] }): Promise<{ rows?: unknown[]; rowCount?: number | null }>;
}
interface MysqlPool {
  query(sql: string, values: unknown[], callback: (err: unknown, result: unknown) => void): unknown;
}

/**
 * Where the store's own statements (the session reads and writes outside a request transaction, pruning,
 * listing) go. On PostgreSQL and MySQL that is the pool TypeORM's driver created, used directly: a statement
 * through a TypeORM QueryRunner costs a runner, an EntityManager, subscriber broadcasts and several awaits,
 * which for a one-row session read was a fifth of the request. On PostgreSQL each statement is a named
 * prepared statement, so the server parses and plans it once per connection. The DataSource's logger still
 * sees every statement, and failures are TypeORM's QueryFailedError, as if a QueryRunner had run them.
 * SQLite keeps the QueryRunner: it has one connection, shared with request transactions through a turn lock.
 */
export function poolExecutor(dataSource: DataSource, dialect: DialectName): Executor {
  const viaRunner = runnerExecutor(dataSource, dialect);
  if (dialect === 'sqlite') return viaRunner;
  const logger = dataSource.logger;
  // Read at each call: the driver's pool exists only once the DataSource is initialized.
  const driver = () => dataSource.driver as { master?: PgPool; pool?: MysqlPool };
  const failed = (statement: Statement, parameters: unknown[]) => (err: unknown) => {
    logger.logQueryError(err as Error, statement.sql, parameters);
    throw new QueryFailedError(statement.sql, parameters, err as Error);
  };

  if (dialect === 'postgres') {
    return (statement, parameters) => {
      const pool = driver().master;
      // No pool of ours to use (a driver variant without one): TypeORM's own path.
      if (typeof pool?.query !== 'function') return viaRunner(statement, parameters);
      logger.logQuery(statement.sql, parameters);
      return pool.query({ name: statement.name, text: statement.sql, values: parameters }).then(
        (raw) => ({ records: raw.rows ?? [], affected: raw.rowCount ?? 0 }),
        failed(statement, parameters),
      );
    };
  }

  return (statement, parameters) => {
    const pool = driver().pool;
    // A replicated DataSource has a pool cluster instead: TypeORM's own path picks its master.
    if (typeof pool?.query !== 'function') return viaRunner(statement, parameters);
    logger.logQuery(statement.sql, parameters);
    return new Promise<QueryOutcome>((resolve, reject) => {
      pool.query(statement.sql, parameters, (err, raw) => {
        if (err) return reject(err);
        if (Array.isArray(raw)) resolve({ records: raw, affected: 0 });
        else resolve({ records: [], affected: Number((raw as { affectedRows?: number } | undefined)?.affectedRows ?? 0) });
      });
    }).catch(failed(statement, parameters));
  };
}

/** One statement through a TypeORM QueryRunner of its own, taking its turn on SQLite's single connection. */
function runnerExecutor(dataSource: DataSource, dialect: DialectName): Executor {
  return (statement, parameters) =>
    withTurn(dataSource, dialect, SQLITE_TURN_TIMEOUT_MS, async () => {
      const queryRunner = dataSource.createQueryRunner();
      try {
        const result = (await queryRunner.query(statement.sql, parameters, true)) as { records?: unknown[]; affected?: number };
        return { records: result.records ?? [], affected: result.affected ?? 0 };
      } finally {
        await queryRunner.release();
      }
    });
}
