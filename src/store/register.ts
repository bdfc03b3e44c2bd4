import { getMetadataArgsStorage, type DataSource, type EntitySchema } from 'typeorm';
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

/**
 * The table an entry of `options.entities` maps to, as TypeORM will name it: an EntitySchema (ours, or an equal
 * one from a second copy of this library) or a decorated class (found in TypeORM's global decorator storage).
 * Undefined for what cannot be known before initialize(), such as a glob path.
 */
function tableOf(dataSource: DataSource, entity: unknown): string | undefined {
  if (!entity) return undefined;
  let targetName: string | undefined;
  let given: string | undefined;
  if (typeof entity === 'function') {
    const args = getMetadataArgsStorage().tables.find((t) => t.target === entity);
    if (!args) return undefined;
    targetName = (entity as { name: string }).name;
    given = args.name;
  } else if (typeof entity === 'object') {
    const options = (entity as { options?: { tableName?: string; name?: string; target?: { name?: string } } }).options;
    if (!options || typeof options !== 'object') return undefined;
    targetName = options.target?.name ?? options.name;
    given = options.tableName;
  }
  if (targetName === undefined && given === undefined) return undefined;
  const naming = (dataSource as { namingStrategy?: { tableName(target: string, given?: string): string } }).namingStrategy;
  return naming ? naming.tableName(targetName ?? '', given) : (given ?? targetName);
}

/** True if the DataSource already knows an entity on this table, listed by the user or by us. */
export function isRegistered(dataSource: DataSource, schema: EntitySchema<any>): boolean {
  const table = tableOf(dataSource, schema) ?? schema.options.tableName!;
  const known = (m: { tableName: string; tableNameWithoutPrefix?: string }) =>
    (m.tableNameWithoutPrefix ?? m.tableName) === table;
  if (dataSource.isInitialized && dataSource.entityMetadatas.some(known)) return true;
  return entityList(dataSource).some((e) => e === schema || tableOf(dataSource, e) === table);
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
