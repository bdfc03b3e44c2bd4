export { TypeormSessionStore } from './store/store.js';
export { sessionEntity, type SessionRow } from './store/entity.js';
export { SessionTableMigration, sessionTableMigration } from './store/migration.js';
export { tableSql, dialectNames, type DialectName } from './store/sql.js';
export type { StoreOptions, Serializer } from './options.js';
export * from './errors.js';
