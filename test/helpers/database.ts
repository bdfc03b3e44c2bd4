import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { DataSource, type DataSourceOptions, type Logger } from 'typeorm';
import { createDialectDatabase, optionsForUrl, testDialect } from './dialect.js';

const adminUrl = () => {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: the global setup should have set it');
  return url;
};

export async function admin<T>(work: (client: Client) => Promise<T>, url = adminUrl()): Promise<T> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Whether this run reaches PostgreSQL through PgBouncer in transaction mode (TEST_PGBOUNCER). */
export const throughPgBouncer = () => Boolean(process.env.TEST_PGBOUNCER_PORT);

/** A fresh database per test file, so parallel files never see each other's tables or connections. */
export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  if (testDialect !== 'postgres') return createDialectDatabase();
  const name = `tsess_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  // The PgBouncer configuration: the test reaches its database through PgBouncer; admin work stays direct.
  const bouncerPort = process.env.TEST_PGBOUNCER_PORT;
  if (bouncerPort) {
    url.hostname = '127.0.0.1';
    url.port = bouncerPort;
    url.password = '';
  }
  return {
    name,
    url: url.toString(),
    drop: async () => {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** Records every SQL statement TypeORM sends, so tests can count writes and BEGINs. */
export class QueryLog implements Logger {
  readonly queries: string[] = [];
  logQuery(query: string) {
    this.queries.push(query);
  }
  logQueryError() {}
  logQuerySlow() {}
  logSchemaBuild() {}
  logMigration() {}
  log() {}
  matching(pattern: RegExp): string[] {
    return this.queries.filter((q) => pattern.test(q));
  }
  clear() {
    this.queries.length = 0;
  }
}

export function dataSourceFor(url: string, extra: Partial<DataSourceOptions> = {}): DataSource {
  return new DataSource({ ...optionsForUrl(url), ...extra } as DataSourceOptions);
}

export async function openDataSource(url: string, extra: Partial<DataSourceOptions> = {}): Promise<DataSource> {
  const dataSource = dataSourceFor(url, extra);
  await dataSource.initialize();
  return dataSource;
}
