import type { DataSource, QueryRunner } from 'typeorm';
import { errorHeardOn, hearErrors, hearPoolErrors, isSymptomOfDeath } from '../connection-errors.js';
import { acquire } from './acquire.js';
import { logged, poolReader, runnerExecutor, type DriverDialect, type Executor, type QueryOutcome } from './driver.js';

interface PgClient {
  query(config: { name?: string; text: string; values: unknown[] } | string): Promise<{ rows?: unknown[]; rowCount?: number | null }>;
  release(err?: Error | boolean): void;
}
interface PgPool {
  connect(callback: (err: Error | undefined, client: PgClient | undefined, release: unknown) => void): void;
}

/**
 * PostgreSQL through node-postgres. The store's statements go straight to the pool TypeORM's driver made,
 * as named prepared statements (parsed and planned once per connection): through a QueryRunner a one-row
 * session read cost a fifth more. The connection is borrowed and returned here rather than through
 * pool.query(), which returns it from inside the driver's socket handler: the pool then hands it to a
 * waiting borrower while the rest of the same network read (a termination notice right behind the answer)
 * is still being parsed.
 */
export const postgres: DriverDialect = {
  name: 'postgres',
  singleConnection: false,

  executor(dataSource: DataSource): Executor {
    const viaRunner = runnerExecutor(dataSource);
    const pool = poolReader(dataSource, (driver: { master?: PgPool }) => driver.master, hearPoolErrors);
    return (statement, parameters) => {
      const master = pool();
      // No pool of ours to use (a driver variant without one): TypeORM's own path.
      if (typeof master?.connect !== 'function') return viaRunner(statement, parameters);
      return logged(dataSource, statement, parameters, () => run(master, { name: statement.name, text: statement.sql, values: parameters }));
    };
  },

  inTurn: (_dataSource, fn) => fn(),

  ownRunner: (dataSource, onReplica) => dataSource.createQueryRunner(onReplica ? 'slave' : 'master'),

  take: (runner, _dataSource, timeoutMs) => acquire(runner, timeoutMs),

  async giveBack(runner, _dataSource, broken) {
    if (runner.isReleased) return;
    const internal = runner as unknown as { releasePostgresConnection?: (err?: unknown) => Promise<void> };
    // TypeORM's own way of handing pg-pool a client to destroy.
    if (broken && typeof internal.releasePostgresConnection === 'function') await internal.releasePostgresConnection.call(runner, broken);
    else await runner.release();
  },

  releaseUnused: releaseIfHeld,

  sendControl(connection, sql) {
    const client = connection as Partial<PgClient> | undefined;
    return typeof client?.query === 'function' ? client.query(sql) : undefined;
  },
};

function releaseIfHeld(runner: QueryRunner): Promise<void> {
  return runner.isReleased ? Promise.resolve() : runner.release();
}

function run(pool: PgPool, config: { name?: string; text: string; values: unknown[] }): Promise<QueryOutcome> {
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
