import type { DataSource, QueryRunner } from 'typeorm';
import { errorHeardOn, hearErrors, hearPoolErrors, isSymptomOfDeath } from '../connection-errors.js';
import { acquire } from './acquire.js';
import { logged, poolReader, runnerExecutor, type DriverDialect, type Executor, type QueryOutcome } from './driver.js';
import { hasCode, type IsolationLevel } from './statement.js';

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
  sql: {
    quote: (id) => `"${id}"`,
    placeholder: (i) => `$${i}`,
    numberedPlaceholders: true,
    namedPreparedStatements: true,
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: '',
    indexesInTable: false,
    // Resolved through search_path, like every other statement of the store.
    tableExists: (t) => `SELECT to_regclass('${t}') IS NOT NULL AS "found"`,
    upsertTail: (set, keep) => `ON CONFLICT ("id") DO UPDATE SET ${set.map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE ${keep}`,
    excluded: (column) => `EXCLUDED.${column}`,
    existing: (table, column) => `${table}.${column}`,
    createIndex: (name, table, column) => `CREATE INDEX IF NOT EXISTS "${name}" ON "${table}" ("${column}")`,
    // The only one of the three with OFFSET without LIMIT.
    offset: 'OFFSET :keep',
    inSubquery: (select) => select,
    least: 'LEAST',
    insertIgnore: (table, columns) => `INSERT INTO ${table} ${columns} ON CONFLICT DO NOTHING`,
    // = ANY(ARRAY(...)) makes each batch a primary-key lookup; with IN (subquery) the planner chose a scan of
    // the whole table per batch (about 260 ms per 10,000 rows at a million rows).
    pruneBatch: (t, e, id) => `DELETE FROM ${t} WHERE ${id} = ANY(ARRAY(SELECT ${id} FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit))`,
  },

  isMissingTable: (err) => hasCode(err, ['42P01']),
  // IF NOT EXISTS is not atomic here: two sessions creating one table can both pass the check, and one then
  // fails on the catalog's unique index (23505) instead of 42P07.
  isAlreadyExists: (err) => hasCode(err, ['42P07', '23505', '42710']),
  // 40001: the everyday serialization failure under SERIALIZABLE and REPEATABLE READ (and on YugabyteDB's
  // snapshot isolation); 40P01: a deadlock victim.
  isRetryable: (err) => hasCode(err, ['40001', '40P01']),
  // 26000: a named prepared statement the connection believed it had was not on the server; 42P05: one it
  // believed new was there already. What a pooler that hands each transaction to another server connection
  // does to them (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
  isLostPreparedStatement: (err) => hasCode(err, ['26000', '42P05']),
  beginStatements(isolation, readOnly = false) {
    const level = readOnly ? replicaIsolation(isolation) : isolation;
    const mode = readOnly ? ' READ ONLY' : '';
    return [level ? `START TRANSACTION ISOLATION LEVEL ${level}${mode}` : `START TRANSACTION${mode}`];
  },

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

/**
 * The isolation level of a read-only transaction on a replica: a hot standby refuses SERIALIZABLE (0A000),
 * and REPEATABLE READ, one snapshot for the whole transaction, is the strongest it has. A replica's snapshot
 * trails the primary anyway, so SERIALIZABLE could promise nothing more there.
 */
function replicaIsolation(isolation: IsolationLevel | undefined): IsolationLevel | undefined {
  return isolation === 'SERIALIZABLE' ? 'REPEATABLE READ' : isolation;
}
