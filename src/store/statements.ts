import { createHash } from 'node:crypto';
import { driverDialect, type DialectName, type Statement } from '../dialects/index.js';

/**
 * The store's statements and its table, built for one database from that database's SQL pieces
 * (dialects/<database>.ts). Nothing here branches on the database.
 */

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

/** The statements that create the table and its indexes, in order. */
export function createTableStatements(dialect: DialectName, table: string): string[] {
  const spec = driverDialect(dialect).sql;
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
  if (spec.indexesInTable) {
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
  const spec = driverDialect(dialect).sql;
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
  const q = driverDialect(dialect).sql.quote;
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
  const spec = driverDialect(dialect).sql;
  const q = spec.quote;
  const t = q(table);
  const compile = (text: string, prepared = true): Statement => {
    const names: string[] = [];
    const sql = text.replace(/:([a-zA-Z]\w*)/g, (_, name: string) => {
      if (spec.numberedPlaceholders) {
        const existing = names.indexOf(name);
        if (existing >= 0) return spec.placeholder(existing + 1);
      }
      names.push(name);
      return spec.placeholder(names.length);
    });
    // The name is the text's digest, so one name never stands for two texts on a connection (pg refuses that).
    const name =
      spec.namedPreparedStatements && prepared && prepareAll ? `tsess_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}` : undefined;
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
    // and the server log as an error on every first start.
    exists: compile(spec.tableExists(t, table), false),
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
