import type { DataSource, EntitySchema } from 'typeorm';
import createDebug from 'debug';

const debug = createDebug('typeorm-session:register');

// Per DataSource, the rebuild in flight: two stores registering on one initialized DataSource must not
// rebuild its metadata concurrently (interleaved rebuilds can leave duplicates). Weak, so it dies with it.
const rebuilds = new WeakMap<DataSource, Promise<void>>();

function entityList(dataSource: DataSource): unknown[] {
  const entities = dataSource.options.entities;
  if (!entities) return [];
  return Array.isArray(entities) ? entities : Object.values(entities);
}

function tableOf(entity: unknown): string | undefined {
  const options = (entity as { options?: { tableName?: string; name?: string } } | null)?.options;
  return entity && typeof entity === 'object' && options ? (options.tableName ?? options.name) : undefined;
}

/** True if the DataSource already knows an entity on this table, listed by the user or by us. */
export function isRegistered(dataSource: DataSource, schema: EntitySchema<any>): boolean {
  const table = schema.options.tableName!;
  if (dataSource.isInitialized && dataSource.entityMetadatas.some((m) => m.tableName === table)) return true;
  return entityList(dataSource).some((e) => e === schema || tableOf(e) === table);
}

/**
 * Adds the session entity to a DataSource that lacks it, exactly once. Before initialize() this only appends
 * to `options.entities`; after it, the metadata is rebuilt through `buildMetadatas()`, which TypeORM marks
 * protected: it is guarded here and tested on both supported TypeORM majors.
 */
export function registerEntity(dataSource: DataSource, schema: EntitySchema<any>): Promise<void> {
  if (isRegistered(dataSource, schema)) {
    return rebuilds.get(dataSource) ?? Promise.resolve();
  }
  // A new array: the user's array may be shared with other DataSources.
  (dataSource.options as { entities?: unknown[] }).entities = [...entityList(dataSource), schema];
  if (!dataSource.isInitialized) return Promise.resolve();

  const rebuild = (dataSource as unknown as { buildMetadatas?: () => Promise<void> }).buildMetadatas;
  if (typeof rebuild !== 'function') {
    debug('this TypeORM has no buildMetadatas(); the session entity is usable through SQL only');
    return Promise.resolve();
  }
  const previous = rebuilds.get(dataSource) ?? Promise.resolve();
  const next = previous
    .catch(() => undefined)
    .then(() => rebuild.call(dataSource))
    .finally(() => {
      if (rebuilds.get(dataSource) === next) rebuilds.delete(dataSource);
    });
  rebuilds.set(dataSource, next);
  return next;
}
