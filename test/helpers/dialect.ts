import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DataSource, EntityManager } from 'typeorm';

/**
 * The database the suite runs against, chosen by TEST_DB: postgres (default), mysql (MariaDB/MySQL at
 * MYSQL_URL) or sqlite (better-sqlite3 files). Everything a test needs to say differently per database is
 * here, so the test files themselves stay one suite.
 */
export type TestDialect = 'postgres' | 'mysql' | 'sqlite';
export const testDialect: TestDialect = ((): TestDialect => {
  const value = process.env.TEST_DB ?? 'postgres';
  if (value !== 'postgres' && value !== 'mysql' && value !== 'sqlite') throw new Error(`TEST_DB=${value}: use postgres, mysql or sqlite`);
  return value;
})();

/** MYSQL_URL: mysql://... for MySQL, mariadb://... for MariaDB (TypeORM reads some catalog columns differently). */
export const mysqlUrl = () => process.env.MYSQL_URL ?? 'mariadb://root@127.0.0.1:3306/test';
const asMysqlScheme = (url: string) => url.replace(/^mariadb:/, 'mysql:');

/** Runs `work` only on the databases that have the feature (a killed backend, roles, a TCP server). */
export const onlyOn = (...dialects: TestDialect[]) => dialects.includes(testDialect);

/** Runs `work` on an admin connection to the MySQL server; `query` resolves to mysql2's [rows, fields]. */
export async function mysqlAdmin<T>(
  work: (query: (sql: string, params?: unknown[]) => Promise<unknown>) => Promise<T>,
): Promise<T> {
  const mysql = await import('mysql2/promise');
  const connection = await mysql.createConnection(asMysqlScheme(mysqlUrl()));
  try {
    return await work((sql, params) => connection.query(sql, params));
  } finally {
    await connection.end();
  }
}

/** A fresh database for one test file on the selected server; sqlite: a fresh file. */
export async function createDialectDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `tsess_${randomBytes(6).toString('hex')}`;
  if (testDialect === 'mysql') {
    await mysqlAdmin((q) => q(`CREATE DATABASE ${name}`));
    const url = new URL(mysqlUrl());
    url.pathname = `/${name}`;
    return { name, url: url.toString(), drop: () => mysqlAdmin(async (q) => void (await q(`DROP DATABASE IF EXISTS ${name}`))) };
  }
  const file = join(tmpdir(), `${name}.sqlite`);
  return {
    name,
    url: `sqlite:${file}`,
    drop: async () => {
      for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(file + suffix, { force: true });
    },
  };
}

/** DataSource options for a test database URL: postgres://, mysql:// or sqlite:<file>. */
export function optionsForUrl(url: string): Record<string, unknown> {
  if (url.startsWith('sqlite:')) return { type: 'better-sqlite3', database: url.slice('sqlite:'.length) };
  if (url.startsWith('mysql:')) return { type: 'mysql', url };
  if (url.startsWith('mariadb:')) return { type: 'mariadb', url: asMysqlScheme(url) };
  return { type: 'postgres', url };
}

/**
 * Test SQL is written once, PostgreSQL-style ("quoted" names, $1 parameters); this rewrites it for the
 * selected database.
 */
export function sql(text: string): string {
  if (testDialect === 'postgres') return text;
  const params = text.replace(/\$\d+/g, '?');
  return testDialect === 'mysql' ? params.replace(/"/g, '`') : params;
}

/** The connection's id as the server knows it; SQLite has one connection, so a constant. */
export async function connectionId(manager: EntityManager): Promise<string> {
  if (testDialect === 'sqlite') return 'sqlite';
  const rows = await manager.query(testDialect === 'mysql' ? 'SELECT CONNECTION_ID() AS id' : 'SELECT pg_backend_pid() AS id');
  return String(rows[0].id);
}

/** Ends a connection from another one, as a failover or an operator would. */
export async function killConnection(dataSource: DataSource, id: string): Promise<void> {
  if (testDialect === 'mysql') await dataSource.query(`KILL ${Number(id)}`);
  else if (testDialect === 'postgres') await dataSource.query('SELECT pg_terminate_backend($1)', [Number(id)]);
  else throw new Error('SQLite has no connection to kill');
}

/** Transactions left open on the server by this test database's connections. */
export async function openTransactions(dataSource: DataSource): Promise<number> {
  if (testDialect === 'sqlite') {
    return (dataSource.driver as unknown as { databaseConnection: { inTransaction: boolean } }).databaseConnection.inTransaction ? 1 : 0;
  }
  const rows = await dataSource.query(
    testDialect === 'mysql'
      ? 'SELECT COUNT(*) AS n FROM information_schema.innodb_trx t JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID()'
      : "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
  );
  return Number(rows[0].n);
}

/** Connections the DataSource's pool holds, and how many are idle and how many requests wait for one. */
export function poolState(dataSource: DataSource): { total: number; idle: number; waiting: number } {
  const driver = dataSource.driver as unknown as { master?: any; pool?: any };
  if (testDialect === 'postgres') {
    const pool = driver.master;
    return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
  }
  if (testDialect === 'mysql') {
    const pool = driver.pool;
    return {
      total: pool._allConnections.length,
      idle: pool._freeConnections.length,
      waiting: pool._connectionQueue.length,
    };
  }
  return { total: 1, idle: 1, waiting: 0 };
}

// ---- Catalog introspection: what a table looks like to the database itself, not to the store. ----

/** The file of a sqlite:<file> test database URL. */
export const sqliteFile = (url: string) => url.slice('sqlite:'.length);

/** How the store's error messages name the test database: its name on a server, its file on SQLite. */
export const databaseLabel = (db: { name: string; url: string }) => (testDialect === 'sqlite' ? sqliteFile(db.url) : db.name);

/** Whether `table` exists as a table in the DataSource's own database (schema, on PostgreSQL). */
export async function tableExists(dataSource: DataSource, table: string): Promise<boolean> {
  const query = {
    postgres: 'SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1',
    mysql:
      "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ? AND table_type = 'BASE TABLE'",
    sqlite: "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
  }[testDialect];
  const n = Number((await dataSource.query(query, [table]))[0].n);
  if (n > 1) throw new Error(`${n} tables named ${table}`);
  return n === 1;
}

/**
 * The table's indexes, primary key included, as sorted `name(column,...)` strings. Each database names the
 * primary key's index its own way: the constraint name on PostgreSQL, always PRIMARY on MySQL,
 * sqlite_autoindex_<table>_1 on SQLite (which keeps the constraint name only in the CREATE text).
 */
export async function indexesOf(dataSource: DataSource, table: string): Promise<string[]> {
  const query = {
    postgres: `SELECT i.relname AS name, string_agg(a.attname, ',' ORDER BY k.ord) AS columns
      FROM pg_index x
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_class i ON i.oid = x.indexrelid
      CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
      WHERE t.relname = $1 AND t.relnamespace = current_schema()::regnamespace
      GROUP BY i.relname`,
    mysql: `SELECT INDEX_NAME AS name, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) AS columns
      FROM information_schema.statistics WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? GROUP BY INDEX_NAME`,
    sqlite: `SELECT l.name AS name, (SELECT group_concat(name, ',') FROM (SELECT name FROM pragma_index_info(l.name) ORDER BY seqno)) AS columns
      FROM pragma_index_list(?) AS l`,
  }[testDialect];
  const rows: Array<{ name: string; columns: string }> = await dataSource.query(query, [table]);
  return rows.map((r) => `${r.name}(${r.columns})`).sort();
}

/** What indexesOf() shows for a session table made by the store, print-sql or the migration. */
export function sessionTableIndexes(table: string): string[] {
  const primaryKey = { postgres: `PK_${table}`, mysql: 'PRIMARY', sqlite: `sqlite_autoindex_${table}_1` }[testDialect];
  return [`IDX_${table}_expires_at(expires_at)`, `IDX_${table}_user_id(user_id)`, `${primaryKey}(id)`].sort();
}

export interface ColumnInfo {
  name: string;
  /** The type as the database reports it, length included: character varying(64), varchar(64), bigint(20) ... */
  type: string;
  nullable: boolean;
  default: string | null;
}

/** The table's columns, sorted by name, as the database's catalog describes them. */
export async function columnsOf(dataSource: DataSource, table: string): Promise<ColumnInfo[]> {
  if (testDialect === 'sqlite') {
    const rows: Array<{ name: string; type: string; notnull: number; dflt_value: string | null }> = await dataSource.query(
      'SELECT name, type, "notnull", dflt_value FROM pragma_table_info(?) ORDER BY name',
      [table],
    );
    return rows.map((r) => ({ name: r.name, type: r.type, nullable: !r.notnull, default: r.dflt_value }));
  }
  const rows: Array<{ name: string; type: string; length: number | null; nullable: string; dflt: string | null }> =
    await dataSource.query(
      testDialect === 'mysql'
        ? `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, NULL AS length, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS dflt
           FROM information_schema.columns WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY COLUMN_NAME`
        : `SELECT column_name AS name, data_type AS type, character_maximum_length AS length, is_nullable AS nullable,
             column_default AS dflt
           FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY column_name`,
      [table],
    );
  return rows.map((r) => ({
    name: r.name,
    type: r.length == null ? r.type : `${r.type}(${r.length})`,
    nullable: r.nullable === 'YES',
    default: r.dflt == null ? null : String(r.dflt),
  }));
}

/**
 * Runs a multi-statement SQL script (a sql/<dialect>.sql file, the SQL block of an error message) one
 * statement at a time: not every driver takes several statements in one query.
 */
export async function runScript(dataSource: DataSource, script: string): Promise<void> {
  for (const statement of script.split(';\n').map((s) => s.trim())) {
    if (statement && !/^(--[^\n]*\n?)*$/.test(statement)) await dataSource.query(statement);
  }
}

// ---- SQL on a side connection, and the per-database SQL the prune/users/koa suites need. ----

/**
 * Runs test SQL (PostgreSQL-style, rewritten by sql()) on a fresh connection of its own, outside every pool
 * under test, and returns the rows (none for a statement that returns none). SQLite: a second connection to
 * the file, so it waits (busy timeout) for a writer on the DataSource's own connection like any other client.
 */
export async function sideQuery<R = any>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  if (testDialect === 'postgres') {
    const { Client } = await import('pg');
    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query(text, params)).rows as R[];
    } finally {
      await client.end();
    }
  }
  if (testDialect === 'mysql') {
    const mysql = await import('mysql2/promise');
    const connection = await mysql.createConnection(url.replace(/^mariadb:/, 'mysql:'));
    try {
      // A recursive CTE may stop at 1,000 rows: MySQL 8's cte_max_recursion_depth, MariaDB's
      // max_recursive_iterations (when a server is configured so).
      if (/WITH RECURSIVE/i.test(text)) {
        const [[{ version }]] = (await connection.query('SELECT VERSION() AS version')) as unknown as [[{ version: string }]];
        const limit = /mariadb/i.test(version) ? 'max_recursive_iterations' : 'cte_max_recursion_depth';
        await connection.query(`SET SESSION ${limit} = 100000000`);
      }
      const [rows] = await connection.query(sql(text), params);
      return (Array.isArray(rows) ? rows : []) as R[];
    } finally {
      await connection.end();
    }
  }
  const { default: Database } = await import('better-sqlite3');
  const connection = new Database(url.slice('sqlite:'.length), { timeout: 10_000 });
  try {
    const statement = connection.prepare(sql(text));
    return (statement.reader ? statement.all(...params) : (statement.run(...params), [])) as R[];
  } finally {
    connection.close();
  }
}

/**
 * A statement that holds the connection (and its transaction) for `seconds` on the server: pg_sleep on
 * PostgreSQL, SLEEP() on MySQL. SQLite has no such function: null, and the caller awaits in JS instead, still
 * holding the transaction (see holdFor()).
 */
export function sleepSql(seconds: number): string | null {
  if (testDialect === 'postgres') return `SELECT pg_sleep(${seconds})`;
  if (testDialect === 'mysql') return `SELECT SLEEP(${seconds})`;
  return null;
}

/** Keeps the connection behind `manager` busy for `seconds`: a server-side sleep, or a JS wait on SQLite. */
export async function holdFor(manager: { query(sql: string): Promise<unknown> }, seconds: number): Promise<void> {
  const statement = sleepSql(seconds);
  if (statement) await manager.query(statement);
  else {
    await manager.query('SELECT 1');
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  }
}

/** A 64-hex-character id made in SQL from the integer expression `i`, distinct for distinct i. */
export function hexId64Sql(i: string): string {
  if (testDialect === 'postgres') return `md5((${i})::text) || md5(((${i}) + 1)::text)`;
  // In the order of i on MySQL and SQLite, so a bulk insert appends to the primary key instead of scattering.
  if (testDialect === 'mysql') return `LOWER(LPAD(HEX(${i}), 64, '0'))`;
  return `printf('%064x', ${i})`;
}

/**
 * `SELECT <columns> FROM <the integers lo..hi as i>`: generate_series on PostgreSQL, the sequence engine's
 * seq_<lo>_to_<hi> table on MariaDB (a recursive CTE on MySQL 8), WITH RECURSIVE on SQLite. lo and hi are
 * literal integers.
 */
export function selectSeries(lo: number, hi: number, columns: string): string {
  if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) throw new TypeError('selectSeries takes integers');
  if (testDialect === 'postgres') return `SELECT ${columns} FROM generate_series(${lo}, ${hi}) AS i`;
  if (testDialect === 'mysql' && /^mariadb:/.test(mysqlUrl())) return `SELECT ${columns} FROM (SELECT seq AS i FROM seq_${lo}_to_${hi}) AS s`;
  return `WITH RECURSIVE s(i) AS (SELECT ${lo} UNION ALL SELECT i + 1 FROM s WHERE i < ${hi}) SELECT ${columns} FROM s`;
}

// ---- Auto-increment ids, and a COMMIT that fails after every statement succeeded (the Express suites). ----

/** An auto-increment integer primary key column named id, for test tables. */
export const serialIdColumn = {
  postgres: 'id serial PRIMARY KEY',
  mysql: 'id int AUTO_INCREMENT PRIMARY KEY',
  sqlite: 'id INTEGER PRIMARY KEY AUTOINCREMENT',
}[testDialect];

/**
 * A table `uniq` whose constraint is checked only at COMMIT, so every statement succeeds and the COMMIT fails:
 * a DEFERRABLE INITIALLY DEFERRED unique constraint on PostgreSQL, a DEFERRABLE INITIALLY DEFERRED foreign key
 * on SQLite (TypeORM's better-sqlite3 driver turns foreign_keys on). null on MySQL/MariaDB: InnoDB checks every
 * constraint at the statement and has no deferred constraint or trigger, so no commit-time failure exists there.
 * `statement(key)` leaves one violation pending for the COMMIT; `code` is the driver's error code for it.
 */
export const commitFailure: { schema: string[]; statement(key: string): string; code: string } | null = {
  postgres: {
    schema: ['CREATE TABLE uniq (id serial PRIMARY KEY, k text NOT NULL, CONSTRAINT uniq_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)'],
    statement: (key: string) => `INSERT INTO uniq (k) VALUES ('${key}'), ('${key}')`,
    code: '23505',
  },
  mysql: null,
  sqlite: {
    schema: [
      'CREATE TABLE uniq_parent (k TEXT PRIMARY KEY)',
      'CREATE TABLE uniq (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL REFERENCES uniq_parent (k) DEFERRABLE INITIALLY DEFERRED)',
    ],
    statement: (key: string) => `INSERT INTO uniq (k) VALUES ('${key}')`,
    code: 'SQLITE_CONSTRAINT_FOREIGNKEY',
  },
}[testDialect];
