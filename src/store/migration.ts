import type { MigrationInterface, QueryRunner } from 'typeorm';
import { assertTableName, DEFAULT_TABLE_NAME } from './entity.js';
import { dialectFor, type DialectName } from '../dialects/index.js';
import { createTableStatements, dropTableStatements } from './statements.js';

function dialectOf(queryRunner: QueryRunner): DialectName {
  // `dataSource` on TypeORM 1.x (where `connection` is a deprecated alias), `connection` on 0.3.
  const runner = queryRunner as { dataSource?: QueryRunner['connection']; connection: QueryRunner['connection'] };
  const type = String((runner.dataSource ?? runner.connection).options.type);
  const dialect = dialectFor(type);
  if (!dialect) throw new TypeError(`typeorm-session: no session table SQL for database type "${type}"`);
  return dialect;
}

/**
 * A TypeORM migration class creating the session table for `tableName`, for projects that run migrations
 * (`createTable: false` on the store then). The SQL is the same the store would run and print-sql prints.
 */
export function sessionTableMigration(options: { tableName?: string } = {}) {
  const tableName = options.tableName ?? DEFAULT_TABLE_NAME;
  assertTableName(tableName);
  return class CreateSessionTable implements MigrationInterface {
    // TypeORM orders migrations by the trailing timestamp in the name and records the name once applied.
    name = `TypeormSession${tableName === DEFAULT_TABLE_NAME ? '' : `_${tableName}`}1763769600000`;

    async up(queryRunner: QueryRunner): Promise<void> {
      for (const statement of createTableStatements(dialectOf(queryRunner), tableName)) {
        await queryRunner.query(statement);
      }
    }

    async down(queryRunner: QueryRunner): Promise<void> {
      for (const statement of dropTableStatements(dialectOf(queryRunner), tableName)) {
        await queryRunner.query(statement);
      }
    }
  };
}

/** The migration for the default `sessions` table. */
export const SessionTableMigration = sessionTableMigration();
