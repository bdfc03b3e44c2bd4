import { readdirSync, readlinkSync } from 'node:fs';
import type { DataSource } from 'typeorm';
import { admin } from './database.js';
import { mysqlAdmin, sqliteFile, testDialect } from './dialect.js';

// Pool internals, read on both TypeORM majors: node-postgres's pg-pool at `driver.master`, mysql2's pool at
// `driver.pool`, better-sqlite3's single connection at `driver.databaseConnection`.
interface PgClient {
  processID?: number;
  _ending?: boolean;
  once(event: 'end', listener: () => void): unknown;
}
interface PgPool {
  _clients: PgClient[];
}
interface MysqlConnection {
  threadId?: number | null;
  _closing?: boolean;
  stream?: { closed?: boolean; once(event: 'close', listener: () => void): unknown };
}
interface MysqlPool {
  _allConnections: { length: number; get(i: number): MysqlConnection };
}

function pgPoolOf(dataSource: DataSource): PgPool | undefined {
  return testDialect === 'postgres' ? (dataSource.driver as unknown as { master?: PgPool }).master : undefined;
}

function mysqlConnectionsOf(dataSource: DataSource): MysqlConnection[] {
  const pool = testDialect === 'mysql' ? (dataSource.driver as unknown as { pool?: MysqlPool }).pool : undefined;
  if (!pool) return [];
  return Array.from({ length: pool._allConnections.length }, (_, i) => pool._allConnections.get(i));
}

function sqliteConnectionOf(dataSource: DataSource): { open: boolean } | undefined {
  return testDialect === 'sqlite'
    ? (dataSource.driver as unknown as { databaseConnection?: { open: boolean } }).databaseConnection
    : undefined;
}

/**
 * Server-side ids of every connection the DataSource's pool holds right now (idle or busy): backend pids on
 * PostgreSQL, thread ids on MySQL. Empty on SQLite, which has no server (see openConnections()).
 */
export function poolPids(dataSource: DataSource): number[] {
  if (!dataSource.isInitialized) return [];
  if (testDialect === 'mysql') {
    return mysqlConnectionsOf(dataSource)
      .map((c) => c.threadId)
      .filter((id): id is number => typeof id === 'number');
  }
  const pool = pgPoolOf(dataSource);
  if (!pool) return [];
  return pool._clients.map((c) => c.processID).filter((pid): pid is number => typeof pid === 'number');
}

/**
 * destroy(), then wait until every socket of the pool is really closed. The pools' end() resolves before their
 * sockets close (pg-pool before its clients end, mysql2 before it has even sent COM_QUIT), so a connection can
 * still be listed by the server right after destroy(); waiting for each socket makes the leak checks exact
 * without sleeping. A connection that destroy() did not even start closing is a leak and throws here instead of
 * hanging. On SQLite, destroy() closes the file synchronously, or it is a leak.
 */
export async function destroyFully(dataSource: DataSource): Promise<void> {
  if (!dataSource.isInitialized) return;
  const pgClients = [...(pgPoolOf(dataSource)?._clients ?? [])];
  const mysqlConnections = mysqlConnectionsOf(dataSource);
  const sqlite = sqliteConnectionOf(dataSource);
  const ended = [
    ...pgClients.map((c) => new Promise<void>((resolve) => c.once('end', resolve))),
    ...mysqlConnections.flatMap((c) =>
      c.stream && !c.stream.closed ? [new Promise<void>((resolve) => c.stream!.once('close', resolve))] : [],
    ),
  ];
  await dataSource.destroy();
  const notEnding =
    pgClients.filter((c) => !c._ending).length + mysqlConnections.filter((c) => !c._closing && !c.stream?.closed).length;
  if (notEnding) throw new Error(`destroy() left ${notEnding} pool connection(s) open`);
  if (sqlite?.open) throw new Error('destroy() left the SQLite database file open');
  await Promise.all(ended);
}

/** Client connections to the PostgreSQL database `database` (autovacuum workers and the asking connection excluded). */
export async function backendPids(database: string): Promise<number[]> {
  const { rows } = await admin((c) =>
    c.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
       WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid`,
      [database],
    ),
  );
  return rows.map((r) => r.pid);
}

/**
 * The client connections open on the test database right now, as the database sees them: backend pids
 * (pg_stat_activity) on PostgreSQL, thread ids (information_schema.processlist) on MySQL, comparable with
 * poolPids(). SQLite has no server: there it is this process's open file descriptors on the database file,
 * one per open connection.
 */
export async function openConnections(db: { name: string; url: string }): Promise<number[]> {
  if (testDialect === 'postgres') return backendPids(db.name);
  if (testDialect === 'mysql') {
    const [rows] = (await mysqlAdmin((q) =>
      q('SELECT ID AS id FROM information_schema.processlist WHERE DB = ? AND ID <> CONNECTION_ID() ORDER BY ID', [db.name]),
    )) as [Array<{ id: number | string }>];
    return rows.map((r) => Number(r.id));
  }
  const file = sqliteFile(db.url);
  const fds: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === file) fds.push(Number(fd));
    } catch {
      // closed between the listing and the readlink
    }
  }
  return fds.sort((x, y) => x - y);
}
