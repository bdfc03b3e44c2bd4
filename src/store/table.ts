import type { DataSource } from 'typeorm';
import { TableCreateError, TableMissingError } from '../errors.js';
import { driverDialect, type DialectName } from '../dialects/index.js';
import { createTableStatements } from './statements.js';

export type RunSql = (sql: string) => Promise<unknown>;

function databaseName(dataSource: DataSource): string {
  const driver = dataSource.driver as { database?: string } | undefined;
  const name = driver?.database ?? (dataSource.options as { database?: unknown }).database;
  return typeof name === 'string' && name ? name : '(the DataSource default database)';
}

function howToCreate(dialect: DialectName, table: string): string {
  const sql = createTableStatements(dialect, table).map((s) => `${s};`).join('\n');
  return (
    `Run this SQL as a user allowed to create tables:\n\n${sql}\n\n` +
    `(also printed by \`npx typeorm-session print-sql --dialect ${dialect} --table ${table}\`, ` +
    `or created by the exported SessionTableMigration)`
  );
}

/**
 * Runs the dialect's existence check: either a lookup returning one row whose `found` says it, or a probe of
 * the table itself that fails with the dialect's "no such table" error when it is missing.
 */
async function tableExists(dialect: DialectName, run: RunSql, existsSql: string): Promise<boolean> {
  try {
    const rows = await run(existsSql);
    const first = Array.isArray(rows) ? (rows[0] as { found?: unknown } | undefined) : undefined;
    if (first && typeof first === 'object' && 'found' in first) {
      const found = first.found;
      return !(found === false || found === null || found === 0 || found === '0' || found === 'f');
    }
    return true;
  } catch (err) {
    if (driverDialect(dialect).isMissingTable(err)) return false;
    throw err;
  }
}

/**
 * Makes sure the session table exists. Checks first, so a database user without CREATE rights works with a
 * table made by someone else; creates it otherwise, treating "already exists" from a concurrent creator as
 * success. Throws errors that name the table, the database and the SQL to run. Nothing here is cached: the
 * caller retries on the next use after a failure.
 */
export async function ensureTable(args: {
  dataSource: DataSource;
  dialect: DialectName;
  table: string;
  createTable: boolean;
  existsSql: string;
  run: RunSql;
}): Promise<void> {
  const { dataSource, dialect, table, run, existsSql } = args;
  if (await tableExists(dialect, run, existsSql)) return;
  const where = `the session table "${table}" does not exist in database "${databaseName(dataSource)}"`;
  if (!args.createTable) {
    throw new TableMissingError(`typeorm-session: ${where} and createTable is false. ${howToCreate(dialect, table)}`);
  }
  for (const statement of createTableStatements(dialect, table)) {
    try {
      await run(statement);
    } catch (err) {
      if (driverDialect(dialect).isAlreadyExists(err)) continue;
      throw new TableCreateError(
        `typeorm-session: ${where} and creating it failed: ${(err as Error).message}. ${howToCreate(dialect, table)}`,
        { cause: err },
      );
    }
  }
}
