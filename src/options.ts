import type { DataSource } from 'typeorm';
import type { TypeormSessionError } from './errors.js';
import { assertTableName, DEFAULT_TABLE_NAME } from './store/entity.js';
import { resolveKeys } from './store/encryption.js';

/** How session data becomes the text in the `data` column and back. */
export interface Serializer {
  stringify(value: unknown): string;
  parse(text: string): any;
}

export interface StoreOptions {
  /** The TypeORM DataSource to keep sessions in. Initialized before or after the store is made. Required. */
  dataSource: DataSource;
  /** Table name; a plain identifier. Default `'sessions'`. */
  tableName?: string;
  /** Lifetime in seconds of a session whose cookie has no expiry (a browser-session cookie). Default `86400`. */
  ttl?: number;
  /**
   * Seconds the stored expiry may lag before touch() writes it again. A touch inside this window costs no
   * query at all. The window never exceeds a tenth of the session's lifetime, so short sessions still roll.
   * Default `60`; `0` writes on every touch.
   */
  touchAfter?: number;
  /** Create the table on first use when it is missing. Default `true`. */
  createTable?: boolean;
  /** Session field (dotted path allowed, e.g. `'passport.user'`) stored in the indexed user_id column. Default `'userId'`. */
  userIdField?: string;
  /** Encoding of session data. Default `JSON`. */
  serializer?: Serializer;
  /** Called with problems that do not fail the request, such as an undecodable row. Default: `debug` log. */
  onError?: (error: TypeormSessionError) => void;
  /** Clock in epoch milliseconds, for tests. Default `Date.now`. */
  now?: () => number;
  /**
   * Absolute lifetime in seconds: a session older than this is expired however active it is (OWASP's
   * absolute timeout). Default: none, only the idle timeout (cookie maxAge / ttl, extended by touch) applies.
   */
  absoluteTimeout?: number;
  /** Session field whose value listByUser() returns as each session's `metadata`. Default `'device'`. */
  metadataField?: string;
  /**
   * A save based on a version of the session that another request has saved since: `'overwrite'` (the
   * later save wins, as in every other store, and onError hears a SessionConflictError) or `'reject'` (the
   * later save fails with that error; under the middleware its request rolls back and answers 409).
   * Default `'overwrite'`. A session destroyed meanwhile is never re-created either way.
   */
  onConflict?: 'overwrite' | 'reject';
  /** Seconds between background prunes of expired rows (±20%), or `false` for none. Default `900`. */
  pruneInterval?: number | false;
  /** Rows deleted per prune statement. Default `1000`. */
  pruneBatchSize?: number;
  /**
   * PostgreSQL: send the store's statements as named prepared statements, parsed and planned once per
   * connection. Turn off behind a pooler that cannot keep them across transactions (PgBouncer in transaction
   * mode before 1.21, or without `max_prepared_statements`). Default `true`.
   */
  preparedStatements?: boolean;
  /**
   * Most live sessions one user may have. Saving a new session of a user (a sign-in) beyond it ends that
   * user's least recently seen sessions, in the same transaction as the new session. Default: no limit.
   */
  maxSessionsPerUser?: number;
  /**
   * Keys for encrypting session data at rest (AES-256-GCM): the first encrypts, every one decrypts, so a
   * new key goes first and older ones follow until their rows have been rewritten. Each is 32 bytes: a
   * Buffer/Uint8Array, 64 hex digits or base64. Default: none, data is stored as the serializer writes it.
   */
  encryptionKeys?: ReadonlyArray<EncryptionKey>;
}

/** A 32-byte key: the bytes, or their 64-digit hex or base64 text. */
export type EncryptionKey = Uint8Array | string;

export interface ResolvedStoreOptions {
  dataSource: DataSource;
  tableName: string;
  ttlMs: number;
  touchAfterMs: number;
  createTable: boolean;
  userIdPath: readonly string[];
  serializer: Serializer;
  onError: ((error: TypeormSessionError) => void) | undefined;
  now: () => number;
  absoluteMs: number;
  metadataField: string;
  onConflict: 'overwrite' | 'reject';
  pruneIntervalMs: number | undefined;
  pruneBatchSize: number;
  preparedStatements: boolean;
  maxSessionsPerUser: number | undefined;
  encryptionKeys: readonly Buffer[] | undefined;
}

export const storeOptionNames = [
  'dataSource',
  'tableName',
  'ttl',
  'touchAfter',
  'createTable',
  'userIdField',
  'serializer',
  'onError',
  'now',
  'absoluteTimeout',
  'metadataField',
  'onConflict',
  'pruneInterval',
  'pruneBatchSize',
  'preparedStatements',
  'maxSessionsPerUser',
  'encryptionKeys',
] as const;

/** Stands for "no absolute lifetime" in SQL that caps expiry at created_at + absolute. */
export const NO_ABSOLUTE_LIMIT = 2 ** 52;

function fail(option: string, expected: string, got: unknown): never {
  const shown = typeof got === 'function' ? 'a function' : JSON.stringify(got) ?? String(got);
  throw new TypeError(`typeorm-session: option "${option}" must be ${expected}, got ${shown}`);
}

function seconds(option: string, value: unknown, fallback: number, allowZero: boolean): number {
  if (value === undefined) return fallback * 1000;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    fail(option, allowZero ? 'a number of seconds >= 0' : 'a number of seconds > 0', value);
  }
  return value * 1000;
}

export function rejectUnknown(options: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`typeorm-session: unknown option "${key}" passed to ${where}`);
    }
  }
}

export function resolveStoreOptions(options: StoreOptions, where = 'TypeormSessionStore'): ResolvedStoreOptions {
  if (!options || typeof options !== 'object') fail('options', 'an object', options);
  rejectUnknown(options, storeOptionNames, where);
  const { dataSource } = options;
  if (!dataSource || typeof dataSource !== 'object' || typeof dataSource.createQueryRunner !== 'function') {
    fail('dataSource', 'a TypeORM DataSource', dataSource);
  }
  const tableName = options.tableName ?? DEFAULT_TABLE_NAME;
  assertTableName(tableName);
  const userIdField = options.userIdField ?? 'userId';
  if (typeof userIdField !== 'string' || !/^[^.]+(\.[^.]+)*$/.test(userIdField)) {
    fail('userIdField', 'a field name or dotted path', userIdField);
  }
  const serializer = options.serializer ?? JSON;
  if (typeof serializer?.stringify !== 'function' || typeof serializer?.parse !== 'function') {
    fail('serializer', 'an object with stringify() and parse()', serializer);
  }
  if (options.onError !== undefined && typeof options.onError !== 'function') fail('onError', 'a function', options.onError);
  if (options.now !== undefined && typeof options.now !== 'function') fail('now', 'a function', options.now);
  if (options.createTable !== undefined && typeof options.createTable !== 'boolean') {
    fail('createTable', 'a boolean', options.createTable);
  }
  if (options.absoluteTimeout !== undefined) seconds('absoluteTimeout', options.absoluteTimeout, 0, false);
  const metadataField = options.metadataField ?? 'device';
  if (typeof metadataField !== 'string' || !metadataField) fail('metadataField', 'a field name', metadataField);
  const onConflict = options.onConflict ?? 'overwrite';
  if (onConflict !== 'overwrite' && onConflict !== 'reject') fail('onConflict', "'overwrite' or 'reject'", onConflict);
  const pruneBatchSize = options.pruneBatchSize ?? 1000;
  if (!Number.isInteger(pruneBatchSize) || pruneBatchSize < 1) fail('pruneBatchSize', 'a whole number >= 1', pruneBatchSize);
  const preparedStatements = options.preparedStatements ?? true;
  if (typeof preparedStatements !== 'boolean') fail('preparedStatements', 'a boolean', preparedStatements);
  const { maxSessionsPerUser } = options;
  if (maxSessionsPerUser !== undefined && (!Number.isInteger(maxSessionsPerUser) || maxSessionsPerUser < 1)) {
    fail('maxSessionsPerUser', 'a whole number >= 1', maxSessionsPerUser);
  }
  return {
    maxSessionsPerUser,
    encryptionKeys: options.encryptionKeys === undefined ? undefined : resolveKeys(options.encryptionKeys),
    dataSource,
    tableName,
    absoluteMs: options.absoluteTimeout === undefined ? NO_ABSOLUTE_LIMIT : options.absoluteTimeout * 1000,
    metadataField,
    onConflict,
    pruneIntervalMs: options.pruneInterval === false ? undefined : seconds('pruneInterval', options.pruneInterval, 900, false),
    pruneBatchSize,
    preparedStatements,
    ttlMs: seconds('ttl', options.ttl, 86400, false),
    touchAfterMs: seconds('touchAfter', options.touchAfter, 60, true),
    createTable: options.createTable ?? true,
    userIdPath: userIdField.split('.'),
    serializer,
    onError: options.onError,
    now: options.now ?? Date.now,
  };
}
