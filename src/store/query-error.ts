import { StoreQueryError } from '../errors.js';
import { driverDialect, type DialectName, type Statement } from '../dialects/index.js';

/**
 * The error a failed store statement reaches the caller as. A named prepared statement the server lost
 * is a configuration problem, not a failing query: the message says which option fixes it.
 */
export function storeQueryError(dialect: DialectName, operation: string, statement: Statement, cause: unknown): StoreQueryError {
  if (statement.name !== undefined && driverDialect(dialect).isLostPreparedStatement(cause)) {
    return new StoreQueryError(
      `typeorm-session: session ${operation} failed: the server's prepared statements are not this connection's ` +
        `(${String((cause as { message?: unknown } | null)?.message ?? cause)}). A connection pooler in transaction mode ` +
        '(PgBouncer before 1.21, or without max_prepared_statements) hands each statement to another server ' +
        'connection: set the store option `preparedStatements: false`.',
      { cause },
    );
  }
  return new StoreQueryError(`typeorm-session: session ${operation} failed`, { cause });
}
