import { QueryFailedError, type DataSource, type QueryRunner } from 'typeorm';
import type { SqlSpec } from './sql-spec.js';
import type { DialectName, IsolationLevel, Statement } from './statement.js';

export interface QueryOutcome {
  records: unknown[];
  affected: number;
}

/** Runs one of the store's statements as a single autocommit statement. */
export type Executor = (statement: Statement, parameters: unknown[]) => Promise<QueryOutcome>;

/**
 * Everything that differs between databases: the SQL the store's statements are built from, what the
 * database's errors mean, where the store's own statements run, how a request's transaction takes and gives
 * back its connection, and how BEGIN/COMMIT/ROLLBACK reach it. One implementation per database
 * (postgres.ts, mysql.ts, sqlite.ts); nothing outside this folder branches on the database.
 */
export interface DriverDialect {
  readonly name: DialectName;
  readonly sql: SqlSpec;
  /** The database said the table does not exist (as opposed to: unreachable, denied, ...). */
  isMissingTable(err: unknown): boolean;
  /** The object a CREATE ... IF NOT EXISTS was making appeared concurrently. */
  isAlreadyExists(err: unknown): boolean;
  /**
   * The transaction lost to a concurrent one and nothing of it was kept (a serialization failure, a
   * deadlock victim, a busy lock): running the same work again is the remedy.
   */
  isRetryable(err: unknown): boolean;
  /** A named prepared statement went missing under the connection (a pooler in transaction mode). */
  isLostPreparedStatement(err: unknown): boolean;
  /** The statements that open a request's transaction; `readOnly`: READ ONLY, on a replica (never on SQLite). */
  beginStatements(isolation?: IsolationLevel, readOnly?: boolean): string[];
  /**
   * True when the DataSource has one connection that request transactions hold until their end (SQLite):
   * a store statement made inside such a request cannot wait for its turn, it can only join.
   */
  readonly singleConnection: boolean;
  /** The store's own statements, one autocommit statement each, outside any request transaction. */
  executor(dataSource: DataSource): Executor;
  /** Runs `fn`, which uses a connection of the store's own, when it may (on SQLite: in its turn). */
  inTurn<T>(dataSource: DataSource, fn: () => Promise<T>): Promise<T>;
  /** A query runner the request owns; `onReplica`: on one of the DataSource's replicas (TypeORM's 'slave' mode). */
  ownRunner(dataSource: DataSource, onReplica: boolean): QueryRunner;
  /** Takes the connection for a request's transaction; fails with AcquireTimeoutError after `timeoutMs`. */
  take(runner: QueryRunner, dataSource: DataSource, timeoutMs: number): Promise<void>;
  /**
   * Gives the connection back. `broken` is set when it may still be inside the transaction (a failed
   * ROLLBACK, a lost COMMIT): it is then destroyed, since TypeORM's release() does not roll back and the
   * next borrower would see its uncommitted rows.
   */
  giveBack(runner: QueryRunner, dataSource: DataSource, broken: unknown): Promise<void>;
  /** Releases a runner that never took a connection. */
  releaseUnused(runner: QueryRunner): Promise<void>;
  /**
   * Sends BEGIN, COMMIT or ROLLBACK straight on the driver's connection (through the QueryRunner each would
   * cost subscriber broadcasts and several awaits); undefined when it must go through the runner.
   */
  sendControl(connection: unknown, sql: string): Promise<unknown> | undefined;
}

/** Logs a store statement like TypeORM does and turns a driver failure into TypeORM's QueryFailedError. */
export function logged(dataSource: DataSource, statement: Statement, parameters: unknown[], run: () => Promise<QueryOutcome>): Promise<QueryOutcome> {
  const logger = dataSource.logger;
  logger.logQuery(statement.sql, parameters);
  return run().catch((err: unknown) => {
    logger.logQueryError(err as Error, statement.sql, parameters);
    throw new QueryFailedError(statement.sql, parameters, err as Error);
  });
}

/** One statement through a TypeORM QueryRunner of its own (`around` may make it wait its turn). */
export function runnerExecutor(
  dataSource: DataSource,
  around: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn(),
): Executor {
  return (statement, parameters) =>
    around(async () => {
      const queryRunner = dataSource.createQueryRunner();
      try {
        const result = (await queryRunner.query(statement.sql, parameters, true)) as { records?: unknown[]; affected?: number };
        return { records: result.records ?? [], affected: result.affected ?? 0 };
      } finally {
        await queryRunner.release();
      }
    });
}

/**
 * Watches the driver's pool once per pool (the DataSource makes a new one when it is initialized again)
 * and returns it; see connection-errors.ts.
 */
export function poolReader<P>(dataSource: DataSource, pick: (driver: any) => P | undefined, watch: (driver: unknown) => void): () => P | undefined {
  let watched: unknown;
  return () => {
    const driver = dataSource.driver;
    const pool = pick(driver);
    if (pool !== undefined && pool !== watched) {
      watch(driver);
      watched = pool;
    }
    return pool;
  };
}
