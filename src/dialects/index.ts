import type { DriverDialect } from './driver.js';
import { mysql } from './mysql.js';
import { postgres } from './postgres.js';
import { sqlite } from './sqlite.js';
import type { DialectName } from './statement.js';

export type { DriverDialect, Executor, QueryOutcome } from './driver.js';
export type { SqlSpec } from './sql-spec.js';
export { bind, dialectNames, type DialectName, type IsolationLevel, type Params, type Statement } from './statement.js';

const dialects: Record<DialectName, DriverDialect> = { postgres, mysql, sqlite };

/** Everything about the database `name` that differs from the others. */
export function driverDialect(name: DialectName): DriverDialect {
  return dialects[name];
}

/** Maps TypeORM's `type` option to a dialect, or undefined for a database this library does not support. */
export function dialectFor(type: string): DialectName | undefined {
  switch (type) {
    case 'postgres':
      return 'postgres';
    case 'mysql':
    case 'mariadb':
      return 'mysql';
    case 'better-sqlite3':
    case 'sqlite':
    case 'sqljs':
      return 'sqlite';
    default:
      return undefined;
  }
}

/** Why the store refuses a DataSource of `type` (one dialectFor() maps to no dialect). */
export function unsupportedTypeMessage(type: string): string {
  if (type === 'cockroachdb') {
    // TypeORM's CockroachQueryRunner answers a 40001 inside a transaction by ROLLBACK TO SAVEPOINT
    // cockroach_restart and replaying the statements it recorded, both set up by its own
    // startTransaction(). The request transaction is begun by this library instead, so that savepoint
    // does not exist: the retry would fail with "savepoint does not exist" in place of the 40001. Creating
    // the savepoint would not do either: the replay re-runs the handler's statements without the handler,
    // whose decisions rested on what the first run read.
    return (
      'typeorm-session: option "dataSource" uses database type "cockroachdb", which is not supported: TypeORM\'s ' +
      'CockroachDB driver retries a serialization failure (40001) from a SAVEPOINT cockroach_restart that only its own ' +
      'startTransaction() creates, and the request transaction here is begun by this library, so the retry would fail ' +
      'and hide the 40001. See README, "CockroachDB and YugabyteDB".'
    );
  }
  return (
    `typeorm-session: option "dataSource" uses database type "${type}", ` +
    'which is not supported (postgres, mysql, mariadb, better-sqlite3, sqlite, sqljs are)'
  );
}
