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

export const mysqlUrl = () => process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

/** Runs `work` only on the databases that have the feature (a killed backend, roles, a TCP server). */
export const onlyOn = (...dialects: TestDialect[]) => dialects.includes(testDialect);

export async function mysqlAdmin<T>(work: (query: (sql: string) => Promise<unknown>) => Promise<T>): Promise<T> {
  const mysql = await import('mysql2/promise');
  const connection = await mysql.createConnection(mysqlUrl());
  try {
    return await work((sql) => connection.query(sql));
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
