import type { DataSource } from 'typeorm';
import { admin } from './database.js';

// pg-pool internals, read on both TypeORM majors (both drive node-postgres through `driver.master`).
interface PgClient {
  processID?: number;
  _ending?: boolean;
  once(event: 'end', listener: () => void): unknown;
}
interface PgPool {
  _clients: PgClient[];
}

function poolOf(dataSource: DataSource): PgPool | undefined {
  return (dataSource.driver as unknown as { master?: PgPool }).master;
}

/** Backend process ids of every connection the DataSource's pool holds right now (idle or busy). */
export function poolPids(dataSource: DataSource): number[] {
  const pool = poolOf(dataSource);
  if (!dataSource.isInitialized || !pool) return [];
  return pool._clients.map((c) => c.processID).filter((pid): pid is number => typeof pid === 'number');
}

/**
 * destroy(), then wait until every socket of the pool is really closed. pg-pool's end() resolves before its
 * clients' sockets close, so a backend can still be listed in pg_stat_activity right after destroy(); waiting for
 * each client's 'end' makes the leak checks exact without sleeping. A client that destroy() did not even start
 * ending is a leak and throws here instead of hanging.
 */
export async function destroyFully(dataSource: DataSource): Promise<void> {
  if (!dataSource.isInitialized) return;
  const clients = [...(poolOf(dataSource)?._clients ?? [])];
  const ended = clients.map((c) => new Promise<void>((resolve) => c.once('end', resolve)));
  await dataSource.destroy();
  const notEnding = clients.filter((c) => !c._ending);
  if (notEnding.length) throw new Error(`destroy() left ${notEnding.length} pool connection(s) open`);
  await Promise.all(ended);
}

/** Client connections to `database` (autovacuum workers and the asking connection excluded). */
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
