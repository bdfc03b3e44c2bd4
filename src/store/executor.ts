import { QueryFailedError, type DataSource } from 'typeorm';
import type { DialectName, Statement } from './sql.js';
import { withTurn } from '../unit-of-work/connection.js';
import { errorHeardOn, hearErrors, hearPoolErrors, isSymptomOfDeath } from '../connection-errors.js';

export interface QueryOutcome {
  records: unknown[];
  affected: number;
}

/** Runs one of the store's statements as a single autocommit statement. */
export type Executor = (statement: Statement, parameters: unknown[]) => Promise<QueryOutcome>;

// How long a store statement waits for SQLite's single connection while a request transaction holds it.
const SQLITE_TURN_TIMEOUT_MS = 10_000;

interface PgClient {
  query(config: { name?: string; text: string; values: unknown[] }): Promise<{ rows?: unknown[]; rowCount?: number | null }>;
  release(err?: Error | boolean): void;
}
interface PgPool {
  connect(callback: (err: Error | undefined, client: PgClient | undefined, release: unknown) => void): void;
}
interface MysqlConnection {
  query(sql: string, values: unknown[], callback: (err: unknown, result: unknown) => void): unknown;
  release(): void;
}
interface MysqlPool {
  getConnection(callback: (err: unknown, connection: MysqlConnection) => void): void;
}

/**
 * Where the store's own statements (the session reads and writes outside a request transaction, pruning,
 * listing) go. On PostgreSQL and MySQL that is the pool TypeORM's driver created, used directly: a statement
 * through a TypeORM QueryRunner costs a runner, an EntityManager, subscriber broadcasts and several awaits,
 * which for a one-row session read was a fifth of the request. On PostgreSQL each statement is a named
 * prepared statement, so the server parses and plans it once per connection. The DataSource's logger still
 * sees every statement, and failures are TypeORM's QueryFailedError, as if a QueryRunner had run them.
 * SQLite keeps the QueryRunner: it has one connection, shared with request transactions through a turn lock.
 *
 * The connection is borrowed and returned here rather than through the pools' query(): those return it from
 * inside the driver's socket handler, so the pool hands it to a waiting borrower while the rest of the same
 * network read (a termination notice right behind the answer) is still being parsed; and a borrowed
 * connection gets our error listener before anything else can happen to it (connection-errors.ts).
 */
export function poolExecutor(dataSource: DataSource, dialect: DialectName): Executor {
  const viaRunner = runnerExecutor(dataSource, dialect);
  if (dialect === 'sqlite') return viaRunner;
  const logger = dataSource.logger;
  let heard: unknown;
  // Read at each call: the driver's pool exists only once the DataSource is initialized (and is another
  // one after the DataSource is destroyed and initialized again).
  const driver = () => {
    const current = dataSource.driver as { master?: PgPool; pool?: MysqlPool };
    const pool = current.master ?? current.pool;
    if (pool !== heard) {
      hearPoolErrors(current);
      heard = pool;
    }
    return current;
  };
  const failed = (statement: Statement, parameters: unknown[]) => (err: unknown) => {
    logger.logQueryError(err as Error, statement.sql, parameters);
    throw new QueryFailedError(statement.sql, parameters, err as Error);
  };

  if (dialect === 'postgres') {
    return (statement, parameters) => {
      const pool = driver().master;
      // No pool of ours to use (a driver variant without one): TypeORM's own path.
      if (typeof pool?.connect !== 'function') return viaRunner(statement, parameters);
      logger.logQuery(statement.sql, parameters);
      return pgStatement(pool, { name: statement.name, text: statement.sql, values: parameters }).catch(failed(statement, parameters));
    };
  }

  return (statement, parameters) => {
    const pool = driver().pool;
    // A replicated DataSource has a pool cluster instead: TypeORM's own path picks its master.
    if (typeof pool?.getConnection !== 'function') return viaRunner(statement, parameters);
    logger.logQuery(statement.sql, parameters);
    return mysqlStatement(pool, statement.sql, parameters).catch(failed(statement, parameters));
  };
}

function pgStatement(pool: PgPool, config: { name?: string; text: string; values: unknown[] }): Promise<QueryOutcome> {
  return new Promise<PgClient>((resolve, reject) =>
    pool.connect((err, client) => {
      if (err || !client) return reject(err ?? new Error('pg-pool gave no client'));
      hearErrors(client);
      resolve(client);
    }),
  ).then(async (client) => {
    let raw: { rows?: unknown[]; rowCount?: number | null };
    try {
      raw = await client.query(config);
    } catch (err) {
      const died = errorHeardOn(client);
      // A connection that failed goes back as broken, so the pool discards it instead of lending it again.
      client.release(died ?? false);
      throw died !== undefined && isSymptomOfDeath(err) ? died : err;
    }
    client.release();
    return { records: raw.rows ?? [], affected: raw.rowCount ?? 0 };
  });
}

function mysqlStatement(pool: MysqlPool, sql: string, values: unknown[]): Promise<QueryOutcome> {
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
