/**
 * Shared setup for the Express suites: one real database per test file (PostgreSQL, MySQL/MariaDB or SQLite, by
 * TEST_DB), DataSources whose pools (SQLite: turn lock) are checked after every test, raw HTTP helpers that
 * observe a response byte by byte, and small async tools.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DataSource, DataSourceOptions } from 'typeorm';
import express from 'express';
import { sessionStore, type SessionStoreOptions, type SessionStoreMiddleware } from '../../src/index.js';
import { withTurn } from '../../src/dialects/sqlite.js';
import { createTestDatabase, openDataSource, QueryLog, throughPgBouncer, type TestDatabase } from '../helpers/database.js';
import { openTransactions, poolState, sideQuery, sql, testDialect } from '../helpers/dialect.js';
import { serialIdColumn } from '../helpers/dialect.js';
import { destroyFully } from '../helpers/pool.js';

export { express };
/** The Express major under test (jest maps `express` to express 4 when EXPRESS_VERSION=4). */
export const EXPRESS_MAJOR = process.env.EXPRESS_VERSION === '4' ? 4 : 5;

import { eventually, sleep, within } from '../helpers/async.js';
export { deferred, eventually, sleep, within, type Deferred } from '../helpers/async.js';

export interface Context {
  db: TestDatabase;
  /** The file's main DataSource (logs every statement into `log`). */
  ds: DataSource;
  log: QueryLog;
  /** Another DataSource on the same database; its pool is checked after each test and it is destroyed after the file. */
  open(options?: Partial<DataSourceOptions>): Promise<DataSource>;
  /** Runs SQL on a fresh connection that is not part of any pool under test. */
  sql<R = any>(text: string, params?: unknown[]): Promise<R[]>;
  /** An app with sessionStore() mounted (closed after the test), then the test's routes. */
  app(routes: (app: express.Express) => void, options?: Partial<SessionStoreOptions>, dataSource?: DataSource): express.Express;
  /** Starts `app` on an ephemeral port; closed after the test. */
  listen(app: express.Express | http.RequestListener): Promise<number>;
}

/**
 * Registers the hooks of one test file. `schema` runs once on the new database; `tables` are emptied after each
 * test. After every test: every pool opened here is fully idle, and no connection to the database is
 * 'idle in transaction'.
 */
export function useDatabase(schema: string[], tables: string[] = [], mainOptions: Partial<DataSourceOptions> = {}): Context {
  const dataSources: DataSource[] = [];
  const servers: http.Server[] = [];
  const middlewares: SessionStoreMiddleware[] = [];
  const log = new QueryLog();
  const ctx = { log } as Context;

  ctx.open = async (options = {}) => {
    const ds = await openDataSource(ctx.db.url, options);
    dataSources.push(ds);
    return ds;
  };
  ctx.sql = (text, params = []) => sideQuery(ctx.db.url, text, params);
  ctx.app = (routes, options = {}, dataSource = ctx.ds) => {
    const app = express();
    // Through PgBouncer in transaction mode, the documented setting (README, "PgBouncer").
    const pooler = throughPgBouncer() ? { preparedStatements: false } : {};
    const middleware = sessionStore({ dataSource, secret: 'test-secret', ...pooler, ...options });
    middlewares.push(middleware);
    app.locals.sessionStore = middleware;
    app.use(middleware);
    routes(app);
    return app;
  };
  ctx.listen = (app) =>
    new Promise((resolve, reject) => {
      const server = http.createServer(app as http.RequestListener);
      servers.push(server);
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
    });

  beforeAll(async () => {
    ctx.db = await createTestDatabase();
    ctx.ds = await ctx.open({ logging: ['query'], logger: log, ...mainOptions });
    await installSlowHooks(ctx.ds);
    for (const statement of schema) await ctx.sql(statement);
  });

  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    for (const middleware of middlewares.splice(0)) await middleware.close();
    // Work the handlers left running (a rollback after an abort) may still be finishing: a bounded wait.
    const idle = async () => {
      for (const ds of dataSources) {
        const { total, idle: free, waiting } = poolState(ds);
        if (total !== free || waiting !== 0) return false;
        if (testDialect === 'sqlite' && (await openTransactions(ds)) !== 0) return false;
      }
      return true;
    };
    await eventually(idle, 3000);
    for (const ds of dataSources) {
      const { total, idle: free, waiting } = poolState(ds);
      expect({ total, idle: free, waiting }).toEqual({ total, idle: total, waiting: 0 });
      if (testDialect === 'sqlite') {
        // SQLite has no pool: what a leak holds is the DataSource's turn lock, or its connection's transaction.
        expect(await openTransactions(ds)).toBe(0);
        await expect(withTurn(ds, 1000, async () => 'free')).resolves.toBe('free');
      }
    }
    // On a server: no connection to the test database is left inside a transaction.
    if (testDialect !== 'sqlite') expect(await openTransactions(ctx.ds)).toBe(0);
    const catalog = {
      postgres: "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'",
      mysql: 'SELECT TABLE_NAME AS name FROM information_schema.tables WHERE TABLE_SCHEMA = DATABASE()',
      sqlite: "SELECT name FROM sqlite_master WHERE type = 'table'",
    }[testDialect];
    const existing = new Set((await ctx.sql<{ name: string }>(catalog)).map((r) => r.name));
    for (const table of [...tables, 'sessions']) {
      if (!existing.has(table)) continue;
      if (testDialect === 'postgres') await ctx.sql(`TRUNCATE "${table}" RESTART IDENTITY CASCADE`);
      else if (testDialect === 'mysql') await ctx.sql(`TRUNCATE TABLE "${table}"`);
      else {
        await ctx.sql(`DELETE FROM "${table}"`);
        if (existing.has('sqlite_sequence')) await ctx.sql('DELETE FROM sqlite_sequence WHERE name = $1', [table]);
      }
    }
    log.clear();
  });

  afterAll(async () => {
    for (const ds of dataSources) {
      // A connection leaked by a test (already reported by afterEach) would make destroy() wait forever and
      // keep the run from ending: hand such connections back as broken first (pg-pool; mysql2's end() does not wait).
      const p = testDialect === 'postgres'
        ? ((ds.driver as unknown as { master: unknown }).master as { _clients: Array<{ release?: (err?: Error) => void }>; _idle: Array<{ client: unknown }> })
        : undefined;
      const idle = new Set(p?._idle.map((item) => item.client));
      for (const client of p?._clients ?? []) {
        if (idle.has(client)) continue;
        try {
          client.release?.(new Error('leaked by a test'));
        } catch {
          // already released
        }
      }
      // Likewise a runner TypeORM still lists as connected but that is marked released: destroy() would
      // loop on it forever, starving every timer (the acquire-timeout leak did exactly that).
      const driver = ds.driver as unknown as { connectedQueryRunners?: Array<{ isReleased: boolean }> };
      if (driver.connectedQueryRunners) driver.connectedQueryRunners = driver.connectedQueryRunners.filter((runner) => !runner.isReleased);
      await within(destroyFully(ds), 10_000, 'the DataSource to close');
    }
    await ctx.db?.drop();
  });

  return ctx;
}

/** Makes the app's session store ready (its table checked or created), so a test sees only request work. */
export async function warm(app: express.Express): Promise<void> {
  await (app.locals.sessionStore as SessionStoreMiddleware).store.ready();
}

/** The `name` column of every row of `table`, in insertion order, read on a separate connection. */
export async function names(ctx: Context, table = 'items'): Promise<string[]> {
  const rows = await ctx.sql<{ name: string }>(`SELECT name FROM "${table}" ORDER BY id`);
  return rows.map((r) => r.name);
}

/** The number of rows of `table`, read on a separate connection. */
export async function count(ctx: Context, table: string): Promise<number> {
  return Number((await ctx.sql(`SELECT COUNT(*) AS n FROM "${table}"`))[0].n);
}

/** The table items(id, name), created the same on every database. */
export const namedTable = (table: string) => `CREATE TABLE "${table}" (${serialIdColumn}, name text NOT NULL)`;

/** Statements that create `name`d table `slow`, whose COMMIT takes 300 ms after an insert into it. */
export function slowCommitSchema(): string[] {
  if (testDialect !== 'postgres') return [namedTable('slow')]; // the delay is installSlowHooks()'s, on the client side
  return [
    namedTable('slow'),
    `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`,
    `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow DEFERRABLE INITIALLY DEFERRED
       FOR EACH ROW EXECUTE FUNCTION slow_commit()`,
  ];
}

/**
 * INSERT INTO `table` (name) VALUES (`name`) that stays running for `seconds` inside the transaction: a
 * server-side sleep on PostgreSQL and MySQL; on SQLite (no sleep function, and a synchronous driver) the query
 * runner awaits in JS before running it, still holding the transaction (installSlowHooks()).
 */
export function slowInsertSql(table: string, name: string, seconds: number): string {
  if (testDialect === 'postgres') return `INSERT INTO ${table} (name) SELECT '${name}' FROM pg_sleep(${seconds})`;
  if (testDialect === 'mysql') return `INSERT INTO ${table} (name) SELECT '${name}' FROM (SELECT SLEEP(${seconds})) AS s`;
  return `INSERT INTO ${table} (name) SELECT '${name}' /* tsess-delay ${seconds} */`;
}

const hooked = new WeakSet<object>();

/**
 * Outside PostgreSQL, the two slow things the suites need are made on the client side, just before the
 * database gets the statement (so in the library's own path, between its decision and the database's
 * answer): a COMMIT of a transaction that inserted into `slow` takes 300 ms (PostgreSQL: a deferred trigger
 * with pg_sleep; MySQL has no deferred trigger, SQLite no sleep), and a statement marked by slowInsertSql()
 * on SQLite waits before it runs. On MySQL the hook is on mysql2's connection, which the library's COMMIT
 * reaches without TypeORM's runner; on SQLite it is on the runner, which every statement goes through.
 */
async function installSlowHooks(dataSource: DataSource): Promise<void> {
  if (testDialect === 'postgres') return;
  if (testDialect === 'mysql') {
    const runner = dataSource.createQueryRunner();
    let proto = Object.getPrototypeOf(await runner.connect()) as object | null;
    await runner.release();
    while (proto && !Object.prototype.hasOwnProperty.call(proto, 'query')) proto = Object.getPrototypeOf(proto) as object | null;
    if (!proto || hooked.has(proto)) return;
    hooked.add(proto);
    const connection = proto as { query(this: SlowFlag, statement: unknown, values?: unknown, callback?: unknown): unknown };
    const original = connection.query;
    connection.query = function (this: SlowFlag, statement: unknown, values?: unknown, callback?: unknown) {
      const text = typeof statement === 'string' ? statement : (statement as { sql?: unknown } | null)?.sql;
      if (typeof text === 'string') {
        if (/^INSERT INTO [`"]?slow[`"]? /.test(text)) this.tsessSlowCommit = true;
        if (text === 'COMMIT' && this.tsessSlowCommit) {
          this.tsessSlowCommit = false;
          setTimeout(() => original.call(this, statement, values, callback), 300);
          return undefined;
        }
        if (text === 'COMMIT' || text === 'ROLLBACK') this.tsessSlowCommit = false;
      }
      return original.call(this, statement, values, callback);
    };
    return;
  }
  const probe = dataSource.createQueryRunner();
  const proto = Object.getPrototypeOf(probe) as { query(text: string, ...rest: unknown[]): Promise<unknown> };
  void probe.release();
  if (hooked.has(proto)) return;
  hooked.add(proto);
  const original = proto.query;
  proto.query = async function (this: SlowFlag, text: string, ...rest: unknown[]) {
    const delay = /\/\* tsess-delay ([\d.]+) \*\//.exec(text);
    if (delay) await sleep(Number(delay[1]) * 1000);
    if (/^INSERT INTO [`"]?slow[`"]? /.test(text)) this.tsessSlowCommit = true;
    if (text === 'COMMIT' && this.tsessSlowCommit) await sleep(300);
    if (text === 'COMMIT' || text === 'ROLLBACK') this.tsessSlowCommit = false;
    return original.call(this, text, ...rest);
  };
}

type SlowFlag = { tsessSlowCommit?: boolean };

export { sql, testDialect };

export { rawRequest, type RawResponse } from '../helpers/raw-http.js';

/** The name=value part of a Set-Cookie header, for sending back. */
export function cookieOf(setCookie: string[] | string | undefined): string {
  const first = Array.isArray(setCookie) ? setCookie[0] : setCookie;
  if (!first) throw new Error('the response set no cookie');
  return first.split(';')[0]!;
}
