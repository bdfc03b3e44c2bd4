import { createHash } from 'node:crypto';

/**
 * Everything that differs between databases lives here: identifier quoting, placeholders, column types,
 * the upsert, and the shipped CREATE TABLE text. The store only ever asks this file for statements.
 *
 * Times are stored as epoch milliseconds in BIGINT columns. That one choice removes the per-driver time zone
 * and precision differences (MySQL TIMESTAMP vs DATETIME, SQLite's untyped text) and lets tests inject a clock.
 */

export const dialectNames = ['postgres', 'mysql', 'sqlite'] as const;
export type DialectName = (typeof dialectNames)[number];

/** A statement with named placeholders (`:id`) compiled once into the driver's placeholder style. */
export interface Statement {
  readonly sql: string;
  readonly names: readonly string[];
  /** PostgreSQL: the prepared statement's name (derived from its text); unset for one-off statements. */
  readonly name?: string;
}

export type Params = Record<string, unknown>;

export function bind(statement: Statement, values: Params): unknown[] {
  return statement.names.map((name) => values[name]);
}

interface DialectSpec {
  quote(identifier: string): string;
  placeholder(index: number): string;
  /** Column types in order: id, data, times, user id. */
  types: { id: string; data: string; time: string; userId: string };
  tableSuffix: string;
  /**
   * `ON CONFLICT`-style tail of the upsert: `assignments` (quoted column, new value) apply only while the
   * existing row passes `keep` (a condition on its columns as they were before the upsert).
   */
  upsertTail(assignments: Array<[string, string]>, keep: string): string;
  /** The value the upsert tried to insert into a column, inside its update part. */
  excluded(column: string): string;
  /** The column's value as the row had it before this upsert, inside the upsert's update part. */
  existing(table: string, column: string): string;
  createIndex(name: string, table: string, column: string): string;
  /** Skips the first :keep rows of an ordered SELECT (only PostgreSQL has OFFSET without LIMIT). */
  offset: string;
  /** A SELECT that has a LIMIT, as the list of an IN (MySQL allows that only through a derived table). */
  inSubquery(select: string): string;
  /** The smaller of two numbers (LEAST is MIN in SQLite). */
  least: string;
  /** INSERT that does nothing when the key exists. */
  insertIgnore(table: string, columns: string): string;
  /**
   * One bounded batch of expired rows, live or dead (`:floor` is minus `:now`, see `dead` below). MySQL
   * rejects LIMIT inside an IN subquery but has DELETE ... LIMIT.
   */
  pruneBatch(table: string, expires: string, id: string): string;
}

const specs: Record<DialectName, DialectSpec> = {
  postgres: {
    quote: (id) => `"${id}"`,
    placeholder: (i) => `$${i}`,
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: '',
    upsertTail: (set, keep) => `ON CONFLICT ("id") DO UPDATE SET ${set.map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE ${keep}`,
    excluded: (column) => `EXCLUDED.${column}`,
    existing: (table, column) => `${table}.${column}`,
    createIndex: (name, table, column) => `CREATE INDEX IF NOT EXISTS "${name}" ON "${table}" ("${column}")`,
    offset: 'OFFSET :keep',
    inSubquery: (select) => select,
    least: 'LEAST',
    insertIgnore: (table, columns) => `INSERT INTO ${table} ${columns} ON CONFLICT DO NOTHING`,
    // = ANY(ARRAY(...)) makes each batch a primary-key lookup; with IN (subquery) the planner chose a scan of
    // the whole table per batch (about 260 ms per 10,000 rows at a million rows).
    pruneBatch: (t, e, id) => `DELETE FROM ${t} WHERE ${id} = ANY(ARRAY(SELECT ${id} FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit))`,
  },
  mysql: {
    quote: (id) => `\`${id}\``,
    placeholder: () => '?',
    // TEXT (64 KiB), like the entity's `text` column: anything else and TypeORM's synchronize would drop and
    // re-add the column, losing every session. A larger session fails its save with a clear error.
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: ' ENGINE=InnoDB DEFAULT CHARSET=utf8mb4',
    // ON DUPLICATE KEY UPDATE has no WHERE: each assignment keeps the old value when the row fails `keep`.
    // Assignments run left to right and later ones see earlier results, so `keep` must read only columns
    // that keep its answer (expires_at stays positive on a live row and negative on a dead one).
    upsertTail: (set, keep) => `ON DUPLICATE KEY UPDATE ${set.map(([c, v]) => `${c} = IF(${keep}, ${v}, ${c})`).join(', ')}`,
    // VALUES() is deprecated in MySQL 8.0.20 but is the only form MariaDB also accepts.
    excluded: (column) => `VALUES(${column})`,
    // Inside ON DUPLICATE KEY UPDATE a bare column is the existing row's value.
    existing: (_table, column) => column,
    // MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB does); indexes go inside CREATE TABLE instead.
    createIndex: () => '',
    offset: 'LIMIT 18446744073709551615 OFFSET :keep',
    // Also the way round "can't specify target table for update in FROM clause": the derived table is
    // materialized before the UPDATE changes rows.
    inSubquery: (select) => `SELECT ${'`id`'} FROM (${select}) AS ${'`older`'}`,
    least: 'LEAST',
    insertIgnore: (table, columns) => `INSERT IGNORE INTO ${table} ${columns}`,
    pruneBatch: (t, e) => `DELETE FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit`,
  },
  sqlite: {
    quote: (id) => `"${id}"`,
    placeholder: () => '?',
    types: { id: 'varchar(64)', data: 'text', time: 'bigint', userId: 'varchar(255)' },
    tableSuffix: '',
    upsertTail: (set, keep) => `ON CONFLICT ("id") DO UPDATE SET ${set.map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE ${keep}`,
    excluded: (column) => `excluded.${column}`,
    existing: (table, column) => `${table}.${column}`,
    createIndex: (name, table, column) => `CREATE INDEX IF NOT EXISTS "${name}" ON "${table}" ("${column}")`,
    offset: 'LIMIT -1 OFFSET :keep',
    inSubquery: (select) => select,
    least: 'MIN',
    insertIgnore: (table, columns) => `INSERT OR IGNORE INTO ${table} ${columns}`,
    pruneBatch: (t, e, id) => `DELETE FROM ${t} WHERE ${id} IN (SELECT ${id} FROM ${t} WHERE ${e} >= :floor AND ${e} <= :now LIMIT :limit)`,
  },
};

/** Names of the constraint and indexes for a table; the entity schema uses the same ones. */
export function objectNames(table: string) {
  return {
    primaryKey: `PK_${table}`,
    expiresIndex: `IDX_${table}_expires_at`,
    userIndex: `IDX_${table}_user_id`,
    lease: `${table}_lease`,
    leaseKey: `PK_${table}_lease`,
  };
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

/** The statements that create the table and its indexes, in order. */
export function createTableStatements(dialect: DialectName, table: string): string[] {
  const spec = specs[dialect];
  const q = spec.quote;
  const t = spec.types;
  const names = objectNames(table);
  const columns = [
    `  ${q('id')} ${t.id} NOT NULL`,
    `  ${q('data')} ${t.data} NOT NULL`,
    `  ${q('expires_at')} ${t.time} NOT NULL`,
    `  ${q('created_at')} ${t.time} NOT NULL`,
    `  ${q('updated_at')} ${t.time} NOT NULL`,
    `  ${q('user_id')} ${t.userId} NULL`,
    `  ${q('version')} integer NOT NULL DEFAULT 0`,
    `  CONSTRAINT ${q(names.primaryKey)} PRIMARY KEY (${q('id')})`,
  ];
  if (dialect === 'mysql') {
    columns.push(`  INDEX ${q(names.expiresIndex)} (${q('expires_at')})`, `  INDEX ${q(names.userIndex)} (${q('user_id')})`);
  }
  const create = `CREATE TABLE IF NOT EXISTS ${q(table)} (\n${columns.join(',\n')}\n)${spec.tableSuffix}`;
  return [
    create,
    spec.createIndex(names.expiresIndex, table, 'expires_at'),
    spec.createIndex(names.userIndex, table, 'user_id'),
    leaseTableStatement(dialect, table),
  ].filter(Boolean);
}

/**
 * The lease table of a session table: one row per background job ('prune'); whoever holds an unexpired
 * lease runs it. A lease row works on every database, where advisory locks do not.
 */
export function leaseTableStatement(dialect: DialectName, table: string): string {
  const spec = specs[dialect];
  const q = spec.quote;
  const names = objectNames(table);
  return (
    `CREATE TABLE IF NOT EXISTS ${q(names.lease)} (\n` +
    `  ${q('name')} varchar(64) NOT NULL,\n` +
    `  ${q('holder')} varchar(64) NOT NULL,\n` +
    `  ${q('expires_at')} ${spec.types.time} NOT NULL,\n` +
    `  CONSTRAINT ${q(names.leaseKey)} PRIMARY KEY (${q('name')})\n` +
    `)${spec.tableSuffix}`
  );
}

export function dropTableStatements(dialect: DialectName, table: string): string[] {
  const q = specs[dialect].quote;
  return [`DROP TABLE IF EXISTS ${q(objectNames(table).lease)}`, `DROP TABLE IF EXISTS ${q(table)}`];
}

/** The shipped, human-readable form of the table definition (sql/<dialect>.sql and `print-sql`). */
export function tableSql(dialect: DialectName, table: string): string {
  const header = `-- typeorm-session: session table for ${dialect} (generated; do not edit)\n`;
  return header + createTableStatements(dialect, table).map((s) => `${s};\n`).join('\n');
}

/** All statements the store runs against one table, compiled for one dialect. */
export interface Statements {
  exists: Statement;
  get: Statement;
  upsert: Statement;
  touch: Statement;
  destroy: Statement;
  all: Statement;
  ids: Statement;
  count: Statement;
  clear: Statement;
  destroyMany(count: number): Statement;
  update: Statement;
  versionOf: Statement;
  listByUser: Statement;
  destroyByUser: Statement;
  destroyByUserExcept: Statement;
  destroyOwned: Statement;
  capUser: Statement;
  countByUser: Statement;
  countExpired: Statement;
  pruneBatch: Statement;
  leaseCreate: Statement;
  leaseAcquire: Statement;
  leaseRelease: Statement;
}

export function compileStatements(dialect: DialectName, table: string, options: { prepare?: boolean } = {}): Statements {
  const prepareAll = options.prepare ?? true;
  const spec = specs[dialect];
  const q = spec.quote;
  const t = q(table);
  const compile = (text: string, prepared = true): Statement => {
    const names: string[] = [];
    const sql = text.replace(/:([a-zA-Z]\w*)/g, (_, name: string) => {
      if (dialect === 'postgres') {
        const existing = names.indexOf(name);
        if (existing >= 0) return spec.placeholder(existing + 1);
      }
      names.push(name);
      return spec.placeholder(names.length);
    });
    // The name is the text's digest, so one name never stands for two texts on a connection (pg refuses that).
    const name =
      dialect === 'postgres' && prepared && prepareAll ? `tsess_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}` : undefined;
    return { sql, names, name };
  };
  const lease = q(objectNames(table).lease);
  const live = `${q('expires_at')} > :now`;
  // A destroyed session stays as a dead row (a tombstone) until its own expiry, so that no later save of it
  // can bring it back, whatever object that save passes (a client may copy what it loaded). A dead row's
  // expires_at is its expiry negated: every `live` test above already refuses it, so the reads need no
  // change, and "expired" (the prune's range, live or dead) is `-now <= expires_at <= now`, one index range.
  // Its data and user id are cleared: what was destroyed is gone, only the id's digest remains.
  const kill =
    `${q('expires_at')} = -${q('expires_at')}, ${q('data')} = '', ${q('user_id')} = NULL, ` +
    `${q('version')} = ${q('version')} + 1`;
  const notDead = `${q('expires_at')} > 0`;
  const expired = `${q('expires_at')} >= :floor AND ${q('expires_at')} <= :now`;
  const upsertSet: Array<[string, string]> = [
    ...['data', 'updated_at', 'user_id'].map((c): [string, string] => [q(c), spec.excluded(q(c))]),
    [q('expires_at'), `${spec.least}(:expires, ${spec.existing(t, q('created_at'))} + :absolute)`],
    [q('version'), `${spec.existing(t, q('version'))} + 1`],
  ];
  // The user's live sessions other than :id, most recently seen first, past the :keep newest.
  const older =
    `SELECT ${q('id')} FROM ${t} WHERE ${q('user_id')} = :userId AND ${q('id')} <> :id AND ${live} ` +
    `ORDER BY ${q('updated_at')} DESC, ${q('id')} DESC ${spec.offset}`;
  return {
    // Each database's catalog answers, so a missing table is a 0/false row, not a failed query that TypeORM
    // and the server log as an error on every first start. (PostgreSQL resolves the name through
    // search_path, like every other statement here.)
    exists: compile(
      dialect === 'postgres'
        ? `SELECT to_regclass('${t}') IS NOT NULL AS ${q('found')}`
        : dialect === 'mysql'
          ? `SELECT COUNT(*) AS ${q('found')} FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '${table}'`
          : `SELECT COUNT(*) AS ${q('found')} FROM sqlite_master WHERE type = 'table' AND name = '${table}'`,
      false,
    ),
    get: compile(
      `SELECT ${q('data')}, ${q('expires_at')}, ${q('version')} FROM ${t} WHERE ${q('id')} = :id AND ${live}`,
    ),
    // A new session (or a save the store cannot tie to a load): insert, or overwrite on a concurrent insert.
    // The absolute lifetime caps the expiry at created_at + :absolute; on insert the caller caps it in JS.
    // Overwriting keeps the row's created_at, so the cap is taken from it there: a save of an existing id
    // that was not loaded (store.set() called directly) must not extend the absolute lifetime either. A dead
    // row is left as it is: a save of a destroyed session, whatever it carries, does not bring it back.
    upsert: compile(
      `INSERT INTO ${t} (${['id', 'data', 'expires_at', 'created_at', 'updated_at', 'user_id'].map(q).join(', ')}) ` +
        `VALUES (:id, :data, :expires, :now, :now, :userId) ${spec.upsertTail(upsertSet, spec.existing(t, notDead))}`,
    ),
    // A session loaded earlier in this request: update only the version that was loaded, and only while it
    // lives. A row destroyed meanwhile (logout, revocation) is therefore never re-created.
    update: compile(
      `UPDATE ${t} SET ${q('data')} = :data, ` +
        `${q('expires_at')} = ${spec.least}(:expires, ${q('created_at')} + :absolute), ` +
        `${q('updated_at')} = :now, ${q('user_id')} = :userId, ${q('version')} = ${q('version')} + 1 ` +
        `WHERE ${q('id')} = :id AND ${q('version')} = :version AND ${live}`,
    ),
    versionOf: compile(`SELECT ${q('version')} FROM ${t} WHERE ${q('id')} = :id AND ${live}`),
    // The threshold condition makes a touch inside the throttle window a no-op in SQL too, not only in JS.
    touch: compile(
      `UPDATE ${t} SET ${q('expires_at')} = ${spec.least}(:expires, ${q('created_at')} + :absolute), ` +
        `${q('updated_at')} = :now WHERE ${q('id')} = :id AND ${live} AND ${q('expires_at')} < :threshold`,
    ),
    destroy: compile(`UPDATE ${t} SET ${kill} WHERE ${q('id')} = :id AND ${notDead}`),
    // Revocation by the owner: one statement, so a handle of someone else's session changes nothing.
    destroyOwned: compile(`UPDATE ${t} SET ${kill} WHERE ${q('id')} = :id AND ${q('user_id')} = :userId AND ${notDead}`),
    all: compile(`SELECT ${q('id')}, ${q('data')} FROM ${t} WHERE ${live}`),
    ids: compile(`SELECT ${q('id')} FROM ${t} WHERE ${live}`),
    count: compile(`SELECT COUNT(*) AS ${q('n')} FROM ${t} WHERE ${live}`),
    clear: compile(`DELETE FROM ${t}`),
    // One text per count: not prepared, or each connection would keep up to 500 of them.
    destroyMany: (count) =>
      compile(
        `UPDATE ${t} SET ${kill} WHERE ${q('id')} IN (${Array.from({ length: count }, (_, i) => `:id${i}`).join(', ')}) AND ${notDead}`,
        false,
      ),
    listByUser: compile(
      `SELECT ${['id', 'data', 'created_at', 'updated_at', 'expires_at'].map(q).join(', ')} FROM ${t} ` +
        `WHERE ${q('user_id')} = :userId AND ${live} ORDER BY ${q('updated_at')} DESC`,
    ),
    destroyByUser: compile(`UPDATE ${t} SET ${kill} WHERE ${q('user_id')} = :userId AND ${notDead}`),
    destroyByUserExcept: compile(`UPDATE ${t} SET ${kill} WHERE ${q('user_id')} = :userId AND ${q('id')} <> :except AND ${notDead}`),
    // maxSessionsPerUser: ends the user's least recently seen live sessions beyond the :keep newest others.
    capUser: compile(`UPDATE ${t} SET ${kill} WHERE ${q('id')} IN (${spec.inSubquery(older)})`),
    countByUser: compile(
      `SELECT ${q('user_id')}, COUNT(*) AS ${q('n')} FROM ${t} WHERE ${live} AND ${q('user_id')} IS NOT NULL ` +
        `GROUP BY ${q('user_id')} ORDER BY ${q('n')} DESC LIMIT :limit`,
    ),
    countExpired: compile(`SELECT COUNT(*) AS ${q('n')} FROM ${t} WHERE ${expired}`),
    pruneBatch: compile(spec.pruneBatch(t, q('expires_at'), q('id'))),
    leaseCreate: compile(
      spec.insertIgnore(lease, `(${q('name')}, ${q('holder')}, ${q('expires_at')}) VALUES (:name, '', 0)`),
    ),
    leaseAcquire: compile(
      `UPDATE ${lease} SET ${q('holder')} = :holder, ${q('expires_at')} = :until ` +
        `WHERE ${q('name')} = :name AND (${q('expires_at')} < :now OR ${q('holder')} = :holder)`,
    ),
    leaseRelease: compile(
      `UPDATE ${lease} SET ${q('expires_at')} = 0 WHERE ${q('name')} = :name AND ${q('holder')} = :holder`,
    ),
  };
}

function driverCode(err: unknown): string | number | undefined {
  const e = err as { driverError?: { code?: string; errno?: number }; code?: string; errno?: number } | null;
  return e?.driverError?.code ?? e?.code ?? e?.driverError?.errno ?? e?.errno;
}

function message(err: unknown): string {
  return String((err as { message?: unknown } | null)?.message ?? '');
}

/** The database said the table does not exist (as opposed to: unreachable, denied, ...). */
export function isMissingTable(dialect: DialectName, err: unknown): boolean {
  const code = driverCode(err);
  if (dialect === 'postgres') return code === '42P01';
  if (dialect === 'mysql') return code === 'ER_NO_SUCH_TABLE' || code === 1146;
  return /no such table/i.test(message(err));
}

/**
 * The object a CREATE ... IF NOT EXISTS was making appeared concurrently. PostgreSQL's IF NOT EXISTS is not
 * atomic: two sessions creating one table can both pass the check and one fails on the catalog's unique index.
 */
export function isAlreadyExists(dialect: DialectName, err: unknown): boolean {
  const code = driverCode(err);
  if (dialect === 'postgres') return code === '42P07' || code === '23505' || code === '42710';
  if (dialect === 'mysql') return code === 'ER_TABLE_EXISTS_ERROR' || code === 1050 || code === 'ER_DUP_KEYNAME';
  return /already exists/i.test(message(err));
}

/**
 * A named prepared statement the connection believed it had was not on the server (26000), or one it
 * believed new was there already (42P05): what a pooler that hands each transaction to another server
 * connection does to them (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
 */
export function isLostPreparedStatement(dialect: DialectName, err: unknown): boolean {
  const code = driverCode(err);
  return dialect === 'postgres' && (code === '26000' || code === '42P05');
}

/** Isolation levels every supported database accepts in some form. */
export type IsolationLevel = 'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

/**
 * The statements that open a request's transaction. SQLite takes the write lock up front (IMMEDIATE) so two
 * request transactions never both read and then deadlock on upgrading; it has no isolation levels to set,
 * and no replicas (`readOnly` is never set there).
 */
export function beginStatements(dialect: DialectName, isolation?: IsolationLevel, readOnly = false): string[] {
  const mode = readOnly ? ' READ ONLY' : '';
  if (dialect === 'postgres') {
    const level = readOnly ? replicaIsolation(isolation) : isolation;
    return [level ? `START TRANSACTION ISOLATION LEVEL ${level}${mode}` : `START TRANSACTION${mode}`];
  }
  if (dialect === 'mysql') {
    const start = `START TRANSACTION${mode}`;
    return isolation ? [`SET TRANSACTION ISOLATION LEVEL ${isolation}`, start] : [start];
  }
  return ['BEGIN IMMEDIATE'];
}

/**
 * The isolation level of a read-only transaction on a PostgreSQL replica: a hot standby refuses SERIALIZABLE
 * (0A000), and REPEATABLE READ, one snapshot for the whole transaction, is the strongest it has. A replica's
 * snapshot trails the primary anyway, so SERIALIZABLE could promise nothing more there.
 */
function replicaIsolation(isolation: IsolationLevel | undefined): IsolationLevel | undefined {
  return isolation === 'SERIALIZABLE' ? 'REPEATABLE READ' : isolation;
}

export function savepointStatements(name: string) {
  return {
    create: `SAVEPOINT ${name}`,
    release: `RELEASE SAVEPOINT ${name}`,
    rollback: `ROLLBACK TO SAVEPOINT ${name}`,
  };
}

/**
 * The transaction lost to a concurrent one and nothing of it was kept: a serialization failure (40001, the
 * everyday case under SERIALIZABLE and REPEATABLE READ, and on YugabyteDB's snapshot isolation), a deadlock victim, or SQLite's
 * busy lock. Running the same work again is the remedy.
 */
export function isRetryable(dialect: DialectName, err: unknown): boolean {
  const code = driverCode(err);
  if (dialect === 'postgres') return code === '40001' || code === '40P01';
  if (dialect === 'mysql') return code === 'ER_LOCK_DEADLOCK' || code === 1213 || code === 'ER_LOCK_WAIT_TIMEOUT' || code === 1205;
  return code === 'SQLITE_BUSY' || /database is locked/i.test(message(err));
}
