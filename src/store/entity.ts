import { EntitySchema } from 'typeorm';
import { objectNames } from './statements.js';

/** The shape of one row, as TypeORM repositories see it. Times are epoch milliseconds (strings on pg). */
export interface SessionRow {
  id: string;
  data: string;
  expiresAt: string | number;
  createdAt: string | number;
  updatedAt: string | number;
  userId: string | null;
  /** Bumped by every save; a save based on an older version is refused (see README, concurrency). */
  version: number;
}

export const DEFAULT_TABLE_NAME = 'sessions';

// One schema object per table name for the life of the module: TypeORM resolves an EntitySchema by name, and
// handing it two different objects for one table is what produces duplicate metadata.
const schemas = new Map<string, EntitySchema<SessionRow>>();

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,39}$/;

export function assertTableName(tableName: unknown, option = 'tableName'): asserts tableName is string {
  if (typeof tableName !== 'string' || !TABLE_NAME.test(tableName)) {
    throw new TypeError(
      `typeorm-session: option "${option}" must be a plain SQL identifier of at most 40 characters ` +
        `(letters, digits, underscore), got ${JSON.stringify(tableName)}`,
    );
  }
}

/** The entity name TypeORM knows the table by: distinct per table, so two stores can share one DataSource. */
export function entityName(tableName: string): string {
  return tableName === DEFAULT_TABLE_NAME ? 'TypeormSession' : `TypeormSession_${tableName}`;
}

/**
 * The TypeORM EntitySchema of the session table. Returns the same object for the same table name however
 * often it is called, so listing it in `entities` from several places registers it once.
 */
export function sessionEntity(options: { tableName?: string } = {}): EntitySchema<SessionRow> {
  const tableName = options.tableName ?? DEFAULT_TABLE_NAME;
  assertTableName(tableName);
  let schema = schemas.get(tableName);
  if (!schema) {
    const names = objectNames(tableName);
    schema = new EntitySchema<SessionRow>({
      name: entityName(tableName),
      tableName,
      columns: {
        id: { type: 'varchar', length: 64, primary: true, primaryKeyConstraintName: names.primaryKey },
        data: { type: 'text' },
        expiresAt: { name: 'expires_at', type: 'bigint' },
        createdAt: { name: 'created_at', type: 'bigint' },
        updatedAt: { name: 'updated_at', type: 'bigint' },
        userId: { name: 'user_id', type: 'varchar', length: 255, nullable: true },
        version: { type: 'integer', default: 0 },
      },
      indices: [
        { name: names.expiresIndex, columns: ['expiresAt'] },
        { name: names.userIndex, columns: ['userId'] },
      ],
    });
    schemas.set(tableName, schema);
  }
  return schema;
}
