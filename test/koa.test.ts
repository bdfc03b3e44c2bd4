/**
 * The Koa adapter against a real database (TEST_DB): ctx.session on the TypeORM store, and ctx.db, the request's
 * transaction: taken lazily, committed before Koa answers (streams included), rolled back on every kind of
 * failure, fenced once it ends, and shared with the session writes. Runs on koa 2 and 3 (KOA_VERSION) and on
 * typeorm 0.3 and 1.x (TYPEORM_VERSION).
 */
import http from 'node:http';
import type { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import Koa from 'koa';
import koaSession from 'koa-session';
import request from 'supertest';
import type { DataSource, DataSourceOptions } from 'typeorm';
import { currentManager, koaSessionStore, withTransaction, type KoaSessionStoreMiddleware, type KoaSessionStoreOptions } from '../src/koa.js';
import {
  CommitError,
  MiddlewareOrderError,
  NoRequestScopeError,
  TransactionClosedError,
  AcquireTimeoutError,
  SessionDecodeError,
  type TypeormSessionError,
} from '../src/index.js';
import { damagedRows } from './helpers/damaged-rows.js';
import { createTestDatabase, openDataSource, QueryLog, type TestDatabase } from './helpers/database.js';
import { connectionId, holdFor, onlyOn, openTransactions, poolState, sideQuery, sql as dialectSql, testDialect } from './helpers/dialect.js';
import { destroyFully } from './helpers/pool.js';
import { deferred, eventually, within, type Deferred } from './helpers/async.js';
import { rawRequest } from './helpers/raw-http.js';

const serial = { postgres: 'serial PRIMARY KEY', mysql: 'INT AUTO_INCREMENT PRIMARY KEY', sqlite: 'INTEGER PRIMARY KEY AUTOINCREMENT' }[testDialect];
const SCHEMA = [
  `CREATE TABLE items (id ${serial}, name text NOT NULL)`,
  `CREATE TABLE users (id ${serial}, email text NOT NULL)`,
  // A constraint checked at COMMIT, so the COMMIT itself fails: a deferred unique constraint on PostgreSQL; on
  // SQLite a deferred foreign key to a row that never exists (TypeORM turns foreign_keys on). MySQL checks
  // every constraint at once: there the commit-failure tests are not registered.
  ...({
    postgres: ['CREATE TABLE uniq (id serial PRIMARY KEY, k text NOT NULL, CONSTRAINT uniq_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)'],
    mysql: [],
    sqlite: [
      'CREATE TABLE uniq_parent (k text PRIMARY KEY)',
      'CREATE TABLE uniq (id INTEGER PRIMARY KEY AUTOINCREMENT, k text NOT NULL REFERENCES uniq_parent (k) DEFERRABLE INITIALLY DEFERRED)',
    ],
  }[testDialect]),
  // A COMMIT that takes 300 ms: a response sent before COMMIT returned would be seen before the row is. Only
  // PostgreSQL can slow a COMMIT down (a deferred trigger); elsewhere `slow` is a plain table and the tests
  // still check the row is visible when the response arrives.
  `CREATE TABLE slow (id ${serial}, name text NOT NULL)`,
  ...(testDialect === 'postgres'
    ? [
        `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$`,
        `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow DEFERRABLE INITIALLY DEFERRED
     FOR EACH ROW EXECUTE FUNCTION slow_commit()`,
      ]
    : []),
];
const TABLES = ['items', 'users', 'uniq', 'uniq_parent', 'slow', 'sessions'];
/** The error code of the COMMIT that fails on the deferred constraint. */
const COMMIT_FAILURE_CODE = testDialect === 'sqlite' ? 'SQLITE_CONSTRAINT_FOREIGNKEY' : '23505';

// ---- async and raw-HTTP tools ------------------------------------------------------------------------------

// (the async and raw-HTTP tools are shared with the Express suite: test/helpers/async.ts, raw-http.ts)

// ---- harness -----------------------------------------------------------------------------------------------

let db: TestDatabase;
let ds: DataSource;
const log = new QueryLog();
const dataSources: DataSource[] = [];
const servers: http.Server[] = [];
const middlewares: KoaSessionStoreMiddleware[] = [];
/** DataSources whose pool did not come back idle after a test: no longer checked, closed in afterAll. */
const quarantined: DataSource[] = [];

async function open(options: Partial<DataSourceOptions> = {}): Promise<DataSource> {
  const dataSource = await openDataSource(db.url, options);
  dataSources.push(dataSource);
  return dataSource;
}

/** SQL (PostgreSQL-style, rewritten per database) on a fresh connection outside every pool under test. */
const sql = <R = any>(text: string, params: unknown[] = []) => sideQuery<R>(db.url, text, params);
const names = async (table = 'items') => (await sql<{ name: string }>(`SELECT name FROM ${table} ORDER BY id`)).map((r) => r.name);
/** The rows of sessions that are not destroyed (a destroyed session leaves a dead row, expires_at < 0, until its expiry). */
const sessionRows = () =>
  sql<{ data: string; expires_at: string; user_id: string | null }>('SELECT data, expires_at, user_id FROM sessions WHERE expires_at > 0');

type Handler = (ctx: Koa.Context) => unknown;

interface TestApp {
  app: Koa;
  middleware: KoaSessionStoreMiddleware;
  /** Errors Koa emitted ('error' event): what reached Koa's own error handling. */
  errors: unknown[];
  /** Errors the middleware reported through onError. */
  reported: TypeormSessionError[];
  /** Requests whose whole middleware chain has settled (the outermost middleware returned or threw). */
  settled: () => number;
  server: http.RequestListener;
}

/**
 * A Koa app: [outermost settle counter] [before] koaSessionStore [after] [routes by path]. `before`/`after`
 * are extra middlewares (an error handler, a second session middleware, ...).
 */
function koaApp(
  routes: Record<string, Handler>,
  options: Partial<KoaSessionStoreOptions> = {},
  extra: { before?: Koa.Middleware[]; after?: Koa.Middleware[]; dataSource?: DataSource } = {},
): TestApp {
  const app = new Koa();
  app.keys = ['test-key'];
  const errors: unknown[] = [];
  const reported: TypeormSessionError[] = [];
  // With a listener, Koa emits instead of printing; the tests look at what arrived.
  app.on('error', (err) => errors.push(err));
  let settled = 0;
  app.use(async (_ctx, next) => {
    try {
      await next();
    } finally {
      settled++;
    }
  });
  for (const m of extra.before ?? []) app.use(m);
  const middleware = koaSessionStore(app, {
    dataSource: extra.dataSource ?? ds,
    onError: (err) => reported.push(err),
    ...options,
  });
  middlewares.push(middleware);
  app.use(middleware);
  for (const m of extra.after ?? []) app.use(m);
  app.use(async (ctx) => {
    const handler = routes[ctx.path];
    if (!handler) return;
    await handler(ctx);
  });
  return { app, middleware, errors, reported, settled: () => settled, server: app.callback() };
}

function listen(target: TestApp): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = http.createServer(target.server);
    servers.push(server);
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** Every Set-Cookie of a response as one Cookie request header (koa.sess and its signature). */
function cookies(res: { headers: Record<string, unknown> }): string {
  const set = res.headers['set-cookie'] as string[] | undefined;
  if (!set?.length) throw new Error('the response set no cookie');
  return set.map((c) => c.split(';')[0]).join('; ');
}

/** The session key koa-session put in the cookie (the store's external key). */
function sessionKey(res: { headers: Record<string, unknown> }): string {
  const cookie = (res.headers['set-cookie'] as string[]).find((c) => c.startsWith('koa.sess='));
  if (!cookie) throw new Error('the response set no session cookie');
  return cookie.split(';')[0]!.slice('koa.sess='.length);
}

/** The pool behind a DataSource: pg-pool on PostgreSQL, mysql2's pool on MySQL (both EventEmitters). */
const driverPool = (dataSource: DataSource) =>
  (dataSource.driver as unknown as { master?: EventEmitter; pool?: EventEmitter })[testDialect === 'postgres' ? 'master' : 'pool']!;

/**
 * Counts connections taken from the pool from now on ('acquire' events). SQLite has no pool: a request takes
 * its turn on the one connection to open its transaction, so there the transactions started are counted.
 */
function acquisitions(dataSource = ds): () => number {
  let n = 0;
  if (testDialect === 'sqlite') {
    const runnerClass = Object.getPrototypeOf(dataSource.createQueryRunner()) as { startTransaction(...args: unknown[]): Promise<void> };
    const start = runnerClass.startTransaction;
    jest.spyOn(runnerClass, 'startTransaction').mockImplementation(function (this: unknown, ...args: unknown[]) {
      n++;
      return start.apply(this, args);
    });
  } else driverPool(dataSource).on('acquire', () => n++);
  return () => n;
}

/** BEGIN as TypeORM spells it on each database (BEGIN TRANSACTION on SQLite) reads START TRANSACTION here. */
const txStatements = () =>
  log.matching(/^(START TRANSACTION|BEGIN|COMMIT|ROLLBACK)/i).map((q) => (/^BEGIN/i.test(q) ? 'START TRANSACTION' : q));
const BEGIN = /^(START TRANSACTION|BEGIN)/;
/** A statement on the session table, whatever the database quotes names with. */
const SESSIONS = /[`"]sessions[`"]/;
const session = (ctx: Koa.Context) => ctx.session as unknown as Record<string, unknown>;
const insert = (ctx: Koa.Context, name: string, table = 'items') =>
  ctx.db.query(dialectSql(`INSERT INTO ${table} (name) VALUES ($1)`), [name]);

/** The errors in `err` and its `cause` chain. */
function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e && out.length < 10; e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

beforeAll(async () => {
  db = await createTestDatabase();
  ds = await open({ logging: ['query'], logger: log });
  for (const statement of SCHEMA) await sql(statement);
});

afterEach(async () => {
  jest.restoreAllMocks();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  for (const middleware of middlewares.splice(0)) await middleware.close();
  // A rollback started by an abort may still be on its way: a bounded wait, then exact checks.
  const idleNow = (d: DataSource) => {
    const { total, idle, waiting } = poolState(d);
    return total === idle && waiting === 0;
  };
  await eventually(() => dataSources.every(idleNow), 3000);
  const leaking = dataSources.filter((d) => !idleNow(d));
  const leaks = leaking.map((d) => poolState(d));
  // Only the test that leaked fails: the leaking DataSource leaves the next tests' checks; afterAll closes it.
  for (const d of leaking) {
    dataSources.splice(dataSources.indexOf(d), 1);
    quarantined.push(d);
  }
  // Transactions left open: server-wide for the test database on PostgreSQL and MySQL; on SQLite each
  // DataSource has its own connection to the file, so each is asked.
  let inTransaction = 0;
  for (const d of testDialect === 'sqlite' ? dataSources.filter((x) => x.isInitialized) : [ds]) inTransaction += await openTransactions(d);
  await emptyTables();
  log.clear();
  expect(leaks).toEqual([]);
  expect(inTransaction).toBe(0);
});

/** Empties the test's tables and restarts their ids. */
async function emptyTables(): Promise<void> {
  const existing = (
    await sql<{ name: string }>(
      {
        postgres: `SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'`,
        mysql: `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()`,
        sqlite: `SELECT name FROM sqlite_master WHERE type = 'table'`,
      }[testDialect],
    )
  )
    .map((t) => t.name)
    .filter((name) => TABLES.includes(name));
  if (!existing.length) return;
  if (testDialect === 'postgres') await sql(`TRUNCATE ${existing.map((t) => `"${t}"`).join(', ')} RESTART IDENTITY`);
  else if (testDialect === 'mysql') for (const t of existing) await sql(`TRUNCATE TABLE "${t}"`);
  else {
    for (const t of existing) await sql(`DELETE FROM "${t}"`);
    await sql(`DELETE FROM sqlite_sequence`);
  }
}

afterAll(async () => {
  let leaked = 0;
  for (const d of [...dataSources, ...quarantined]) {
    if (testDialect !== 'postgres') {
      // No pool internals to repair here: a leak already failed its test through poolState().
      await destroyFully(d).catch(async () => {
        if (d.isInitialized) await d.destroy();
      });
      continue;
    }
    const pool = (x: DataSource) => (x.driver as unknown as { master: unknown }).master;
    type PgClient = { release?: (err?: unknown) => void };
    const p = pool(d) as unknown as { totalCount: number; idleCount: number; _clients: PgClient[]; _idle: Array<{ client: PgClient }> };
    if (p.totalCount !== p.idleCount) {
      // A connection never given back (afterEach has already failed the test that leaked it). TypeORM's
      // destroy() would wait for it forever, spinning on a runner it believes released: hand the connections
      // back destroyed, and forget those runners, so the run fails instead of hanging.
      leaked += p.totalCount - p.idleCount;
      const driver = d.driver as unknown as { connectedQueryRunners?: Array<{ isReleased: boolean }> };
      if (driver.connectedQueryRunners) driver.connectedQueryRunners = driver.connectedQueryRunners.filter((r) => !r.isReleased);
      const idle = new Set(p._idle.map((item) => item.client));
      for (const client of p._clients.filter((c) => !idle.has(c))) {
        client.release?.(new Error('leaked connection closed by the test teardown'));
      }
    }
    await destroyFully(d).catch(async () => {
      if (d.isInitialized) await d.destroy();
    });
  }
  await db?.drop();
  if (leaked) throw new Error(`${leaked} pool connection(s) were never given back`);
});

// ---- 1. lazy acquisition ---------------------------------------------------------------------------------------

describe('lazy acquisition', () => {
  test('a request that never touches ctx.db sends no statement and takes no connection', async () => {
    const t = koaApp({ '/plain': (ctx) => void (ctx.body = 'plain') });
    // The store prepares its table on the app's first request; that is not the request's doing.
    await t.middleware.store.ready();
    const acquired = acquisitions();
    const before = poolState(ds).total;
    log.clear();

    const res = await request(t.server).get('/plain');

    expect(res.status).toBe(200);
    expect(res.text).toBe('plain');
    expect(log.queries).toEqual([]);
    expect(acquired()).toBe(0);
    expect(poolState(ds).total).toBe(before);
  });

  test('reading the ctx.db property without querying sends nothing either', async () => {
    const t = koaApp({
      '/peek': (ctx) => {
        const manager = ctx.db;
        ctx.body = typeof manager.query;
      },
    });
    await t.middleware.store.ready();
    const acquired = acquisitions();
    log.clear();

    const res = await request(t.server).get('/peek');

    expect(res.text).toBe('function');
    expect(log.queries).toEqual([]);
    expect(acquired()).toBe(0);
  });

  test('a request that only reads its session opens no transaction', async () => {
    const t = koaApp({
      '/set': (ctx) => {
        session(ctx).n = 1;
        ctx.body = 'set';
      },
      '/read': (ctx) => void (ctx.body = { n: session(ctx).n }),
    });
    const cookie = cookies(await request(t.server).get('/set'));
    log.clear();

    const res = await request(t.server).get('/read').set('Cookie', cookie);

    expect(res.body).toEqual({ n: 1 });
    expect(log.matching(SESSIONS)).toHaveLength(1);
    expect(txStatements()).toEqual([]);
  });

  // SQLite has no pool: its one connection is never handed out, so no listener can be left on one.
  if (onlyOn('postgres', 'mysql')) test('connections go back to the pool without listeners left on them', async () => {
    const t = koaApp({
      '/q': async (ctx) => {
        await ctx.db.query('SELECT 1');
        ctx.body = 'ok';
      },
    });
    const clients = (): EventEmitter[] => {
      const p = driverPool(ds) as unknown as { _clients?: EventEmitter[]; _allConnections?: { toArray(): EventEmitter[] } };
      return testDialect === 'postgres' ? p._clients! : p._allConnections!.toArray();
    };
    const listeners = () => clients().map((c) => c.listenerCount('error'));
    await request(t.server).get('/q').expect(200);
    const before = listeners();

    for (let i = 0; i < 15; i++) await request(t.server).get('/q').expect(200);

    expect(clients()).toHaveLength(before.length);
    expect(listeners()).toEqual(before);
  });

  test('the first query opens the transaction, and one request is one transaction', async () => {
    const t = koaApp({
      '/two': async (ctx) => {
        await insert(ctx, 'one');
        await insert(ctx, 'two');
        ctx.body = 'ok';
      },
    });
    log.clear();

    await request(t.server).post('/two').expect(200);

    expect(txStatements()).toEqual(['START TRANSACTION', 'COMMIT']);
    expect(await names()).toEqual(['one', 'two']);
  });
});

// ---- 2. commit before the response ---------------------------------------------------------------------------

describe('the commit happens before Koa answers', () => {
  test('the row is visible from another connection when the status line arrives', async () => {
    const t = koaApp({
      '/slow': async (ctx) => {
        await insert(ctx, 'committed', 'slow');
        ctx.status = 201;
        ctx.body = { ok: true };
      },
    });
    const port = await listen(t);

    const { res, rest } = await rawRequest(port, '/slow', { method: 'POST' });
    // COMMIT takes 300 ms (deferred trigger): only a response held until it returned sees the row here.
    const seen = await names('slow');
    const { body } = await rest();

    expect(res.statusCode).toBe(201);
    expect(seen).toEqual(['committed']);
    expect(JSON.parse(body)).toEqual({ ok: true });
  });

  test('with a streamed body (ctx.body = a Readable) the row is visible when the first chunk arrives', async () => {
    const t = koaApp({
      '/stream': async (ctx) => {
        await insert(ctx, 'streamed', 'slow');
        ctx.type = 'text/plain';
        ctx.body = Readable.from(['first;', 'second;', 'third']);
      },
    });
    const port = await listen(t);

    const { res, nextChunk, rest } = await rawRequest(port, '/stream');
    const atHeaders = await names('slow');
    const first = await nextChunk();
    const atFirstChunk = await names('slow');
    const { body, complete } = await rest();

    expect(res.statusCode).toBe(200);
    expect(first).toMatch(/^first;/);
    expect(atHeaders).toEqual(['streamed']);
    expect(atFirstChunk).toEqual(['streamed']);
    expect(first + body).toBe('first;second;third');
    expect(complete).toBe(true);
  });

  test('right after supertest resolves, the session row and the request rows are both there', async () => {
    const t = koaApp({
      '/login': async (ctx) => {
        await insert(ctx, 'audit', 'slow');
        session(ctx).userId = 'u-1';
        ctx.redirect('/home');
      },
    });

    const res = await request(t.server).post('/login');

    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('/home');
    expect(await names('slow')).toEqual(['audit']);
    expect((await sessionRows()).map((r) => r.user_id)).toEqual(['u-1']);
  });
});

// ---- 3. commit failure -----------------------------------------------------------------------------------------

// MySQL has no deferred constraints: no COMMIT fails there for the data's sake.
if (onlyOn('postgres', 'sqlite')) describe('a failing COMMIT', () => {
  test('answers 500 without Set-Cookie and leaves no rows, even though the handler answered 200', async () => {
    const t = koaApp({
      '/dup': async (ctx) => {
        // The constraint is deferred: both inserts succeed, COMMIT fails.
        await ctx.db.query(`INSERT INTO uniq (k) VALUES ('same')`);
        await ctx.db.query(`INSERT INTO uniq (k) VALUES ('same')`);
        session(ctx).x = 1;
        ctx.status = 200;
        ctx.body = 'looks fine';
      },
    });
    log.clear();

    const res = await request(t.server).post('/dup');

    expect(res.status).toBe(500);
    expect(res.text).not.toContain('looks fine');
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await sql('SELECT k FROM uniq')).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    // The session was written inside the transaction that failed to commit.
    const statements = log.queries;
    const upsertAt = statements.findIndex((q) => /^INSERT INTO [`"]sessions[`"]/.test(q));
    expect(upsertAt).toBeGreaterThan(statements.findIndex((q) => BEGIN.test(q)));
    expect(statements.slice(upsertAt)).toContain('COMMIT');
    expect(t.reported).toHaveLength(1);
    expect(t.reported[0]).toBeInstanceOf(CommitError);
    expect((t.reported[0]!.cause as { code?: string }).code).toBe(COMMIT_FAILURE_CODE);
  });

  test('a client with a session keeps its old session when COMMIT fails', async () => {
    const t = koaApp({
      '/set': (ctx) => {
        session(ctx).n = 1;
        ctx.body = 'ok';
      },
      '/dup': async (ctx) => {
        await ctx.db.query(`INSERT INTO uniq (k) VALUES ('same'), ('same')`);
        session(ctx).n = 2;
        ctx.body = 'ok';
      },
      '/read': (ctx) => void (ctx.body = { n: session(ctx).n ?? null }),
    });
    const cookie = cookies(await request(t.server).get('/set'));

    const failed = await request(t.server).post('/dup').set('Cookie', cookie);
    const after = await request(t.server).get('/read').set('Cookie', cookie);

    expect(failed.status).toBe(500);
    expect(failed.headers['set-cookie']).toBeUndefined();
    expect(after.body).toEqual({ n: 1 });
  });
});

// ---- 4. rollback on errors -------------------------------------------------------------------------------------

describe('rollback when the request fails', () => {
  const failing = {
    '/throw': async (ctx: Koa.Context) => {
      await insert(ctx, 'thrown');
      session(ctx).x = 1;
      throw new Error('boom');
    },
    '/status': async (ctx: Koa.Context) => {
      await insert(ctx, 'status');
      ctx.status = 503;
      ctx.body = 'unavailable';
    },
  };
  const handle: Koa.Middleware = async (ctx, next) => {
    try {
      await next();
    } catch {
      ctx.status = 500;
      ctx.body = 'handled';
    }
  };

  test('a thrown error rolls back; Koa answers 500', async () => {
    const t = koaApp(failing);
    log.clear();

    const res = await request(t.server).post('/throw');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await names()).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    expect(txStatements()).toEqual(['START TRANSACTION', 'ROLLBACK']);
    expect((t.errors[0] as Error).message).toBe('boom');
  });

  test('a 5xx status set by the handler rolls back', async () => {
    const t = koaApp(failing);
    log.clear();

    const res = await request(t.server).post('/status');

    expect(res.status).toBe(503);
    expect(res.text).toBe('unavailable');
    expect(await names()).toEqual([]);
    expect(txStatements()).toEqual(['START TRANSACTION', 'ROLLBACK']);
  });

  test.each([
    ['before', { before: [handle] }],
    ['after', { after: [handle] }],
  ])('an error-handling middleware mounted %s koaSessionStore that turns the error into a 500 still rolls back', async (_where, extra) => {
    const t = koaApp(failing, {}, extra);
    log.clear();

    const res = await request(t.server).post('/throw');

    expect(res.status).toBe(500);
    expect(res.text).toBe('handled');
    expect(await names()).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    expect(txStatements()).toEqual(['START TRANSACTION', 'ROLLBACK']);
    // The cookie would name a session that was never stored.
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(t.errors).toEqual([]);
  });

  test('commitOn decides: a 404 commits by default, and a custom commitOn can refuse a 2xx', async () => {
    const routes = {
      '/missing': async (ctx: Koa.Context) => {
        await insert(ctx, 'on-404');
        ctx.status = 404;
      },
      '/accepted': async (ctx: Koa.Context) => {
        await insert(ctx, 'on-202');
        ctx.status = 202;
      },
    };
    const byDefault = koaApp(routes);
    await request(byDefault.server).get('/missing').expect(404);
    expect(await names()).toEqual([]);

    const custom = koaApp(routes, { transaction: { commitOn: (status) => status === 200 || status === 404 } });
    await request(custom.server).get('/missing').expect(404);
    await request(custom.server).get('/accepted').expect(202);
    expect(await names()).toEqual(['on-404']);
  });
});

// ---- 5. client abort -------------------------------------------------------------------------------------------

describe('a client that disconnects mid-handler', () => {
  function abortingRoute(after: (ctx: Koa.Context) => Promise<void>) {
    const entered = deferred();
    const outcome = deferred<unknown>();
    const route = async (ctx: Koa.Context) => {
      await insert(ctx, 'before-abort');
      const closed = new Promise<void>((resolve) => ctx.res.once('close', () => resolve()));
      entered.resolve();
      await closed;
      try {
        await after(ctx);
        outcome.resolve('ran');
      } catch (err) {
        outcome.resolve(err);
        throw err;
      }
      ctx.body = 'nobody is listening';
    };
    return { entered, outcome, route };
  }

  async function abortAt(port: number, path: string, entered: Deferred) {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false });
    req.on('error', () => undefined);
    req.end();
    await entered.promise;
    req.destroy();
  }

  test('rolls back at once: the handler’s later query is rejected and none of its rows appear', async () => {
    const { entered, outcome, route } = abortingRoute((ctx) => insert(ctx, 'after-abort'));
    const t = koaApp({ '/abort': route });
    const port = await listen(t);

    await abortAt(port, '/abort', entered);
    const result = await within(outcome.promise, 5000, 'the handler after the abort');
    await within(eventually(() => t.settled() === 1), 5000, 'the request to settle');

    expect(result).toBeInstanceOf(TransactionClosedError);
    expect(await names()).toEqual([]);
    expect(log.matching(/^ROLLBACK/)).toHaveLength(1);
    expect(log.matching(/^COMMIT/)).toHaveLength(0);
  });

  test('a session set after the abort is not saved either (it would outlive the rolled-back rows)', async () => {
    const { entered, outcome, route } = abortingRoute(async (ctx) => {
      session(ctx).userId = 'ghost';
    });
    const t = koaApp({ '/abort': route });
    const port = await listen(t);

    await abortAt(port, '/abort', entered);
    expect(await within(outcome.promise, 5000, 'the handler after the abort')).toBe('ran');
    await within(eventually(() => t.settled() === 1), 5000, 'the request to settle');

    expect(await names()).toEqual([]);
    expect(await sessionRows()).toEqual([]);
  });
});

// ---- 6. late queries -------------------------------------------------------------------------------------------

describe('queries after the request ended', () => {
  test('a query from a timer the handler left behind is rejected and never persisted', async () => {
    const responded = deferred();
    const late = deferred<{ queryError: unknown; managerError: unknown; nestedError: unknown }>();
    const t = koaApp({
      '/late': async (ctx) => {
        const manager = ctx.db;
        setTimeout(async () => {
          await responded.promise;
          let managerError: unknown = 'none';
          try {
            currentManager();
          } catch (err) {
            managerError = err;
          }
          const queryError = await manager.query(`INSERT INTO items (name) VALUES ('late')`).then(() => 'none', (err) => err);
          const nestedError = await withTransaction((m) => m.query(`INSERT INTO items (name) VALUES ('late-nested')`)).then(
            () => 'none',
            (err) => err,
          );
          late.resolve({ queryError, managerError, nestedError });
        }, 0);
        await insert(ctx, 'in-request');
        ctx.body = 'ok';
      },
    });

    const res = await request(t.server).post('/late');
    responded.resolve();
    const { queryError, managerError, nestedError } = await within(late.promise, 5000, 'the timer');

    expect(res.status).toBe(200);
    // The connection is back in the pool by now: the fence, not TypeORM's "already released", answers.
    expect(queryError).toBeInstanceOf(TransactionClosedError);
    expect(nestedError).toBeInstanceOf(TransactionClosedError);
    expect(managerError).toBeInstanceOf(NoRequestScopeError);
    expect(await names()).toEqual(['in-request']);
    expect(log.matching(/late/)).toEqual([]);
  });

  test('in a request that never used ctx.db, a later ctx.db is refused instead of opening a transaction', async () => {
    const responded = deferred();
    const late = deferred<unknown>();
    const t = koaApp({
      '/idle': (ctx) => {
        setTimeout(async () => {
          await responded.promise;
          try {
            await ctx.db.query(`INSERT INTO items (name) VALUES ('late')`);
            late.resolve('ran');
          } catch (err) {
            late.resolve(err);
          }
        }, 0);
        ctx.body = 'ok';
      },
    });
    await t.middleware.store.ready();
    const acquired = acquisitions();

    await request(t.server).get('/idle').expect(200);
    responded.resolve();

    expect(await within(late.promise, 5000, 'the timer')).toBeInstanceOf(TransactionClosedError);
    expect(await names()).toEqual([]);
    expect(acquired()).toBe(0);
  });
});

// ---- 7. pool exhaustion ----------------------------------------------------------------------------------------

describe('a saturated pool', () => {
  test('fails fast with 503 instead of queueing forever, and every connection comes back', async () => {
    // One connection on SQLite, whatever poolSize says: there the requests wait for the one connection.
    const small = await open({ poolSize: 2 });
    const t = koaApp(
      {
        '/sleep': async (ctx) => {
          await holdFor(ctx.db, 0.3);
          ctx.body = 'slept';
        },
      },
      { transaction: { acquireTimeoutMs: 500 } },
      { dataSource: small },
    );
    const port = await listen(t);

    const responses = await within(
      Promise.all(Array.from({ length: 30 }, () => request(`http://127.0.0.1:${port}`).get('/sleep'))),
      30_000,
      '30 requests on a pool of 2',
    );

    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThanOrEqual(1);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2);
    const unavailable = responses.find((r) => r.status === 503)!;
    expect(unavailable.text).toMatch(testDialect === 'sqlite' ? /SQLite connection stayed busy/ : /no database connection/);
    expect(t.errors.some((e) => e instanceof AcquireTimeoutError)).toBe(true);
    expect(await within(eventually(() => poolState(small).total === poolState(small).idle), 5000, 'pool idle')).toBe(true);
    expect(poolState(small).waiting).toBe(0);
  });
});

// ---- 8. session writes inside the transaction -----------------------------------------------------------------

/** INSERT ... RETURNING id; MySQL has no RETURNING: LAST_INSERT_ID() on the same connection instead. */
async function insertUser(ctx: Koa.Context, email: string): Promise<{ id: number }> {
  if (testDialect !== 'mysql') return (await ctx.db.query(dialectSql(`INSERT INTO users (email) VALUES ($1) RETURNING id`), [email]))[0];
  await ctx.db.query(`INSERT INTO users (email) VALUES (?)`, [email]);
  return (await ctx.db.query('SELECT LAST_INSERT_ID() AS id'))[0];
}

describe('the session is written inside the request transaction', () => {
  const routes = {
    '/login': async (ctx: Koa.Context) => {
      const user = await insertUser(ctx, String(ctx.query.email));
      session(ctx).userId = String(user.id);
      if (ctx.query.fail) {
        ctx.status = 500;
        ctx.body = 'failed after login';
        return;
      }
      ctx.body = { userId: session(ctx).userId };
    },
    '/me': (ctx: Koa.Context) => void (ctx.body = { userId: session(ctx).userId ?? null }),
    '/set': (ctx: Koa.Context) => {
      session(ctx).n = 1;
      ctx.body = 'ok';
    },
    '/bump': async (ctx: Koa.Context) => {
      if (ctx.query.db) await insert(ctx, 'bump');
      session(ctx).n = 2;
      if (ctx.query.throw) throw new Error('bump failed');
      ctx.status = 500;
      ctx.body = 'bump failed';
    },
    '/read': (ctx: Koa.Context) => void (ctx.body = { n: session(ctx).n ?? null }),
  };

  test('a login commits the user row and the session together', async () => {
    const t = koaApp(routes);
    await t.middleware.store.ready(); // the store's own first-use statements (its table) are not the request's
    log.clear();

    const res = await request(t.server).post('/login?email=a@example.com');

    expect(res.status).toBe(200);
    const statements = log.queries
      .filter((q) => !/to_regclass|CREATE (TABLE|INDEX)|LAST_INSERT_ID/.test(q))
      .map((q) => (/^BEGIN/.test(q) ? 'START TRANSACTION' : q.replace(/`/g, '"')));
    expect(statements.map((q) => q.split(' ').slice(0, 3).join(' '))).toEqual([
      'START TRANSACTION',
      'INSERT INTO users',
      'INSERT INTO "sessions"',
      'COMMIT',
    ]);
    const [user] = await sql<{ id: number }>('SELECT id FROM users');
    expect(res.body).toEqual({ userId: String(user!.id) });
    expect((await sessionRows()).map((r) => r.user_id)).toEqual([String(user!.id)]);
    const me = await request(t.server).get('/me').set('Cookie', cookies(res));
    expect(me.body).toEqual({ userId: String(user!.id) });
  });

  test('a login that then fails leaves neither the user nor a session, and sets no cookie', async () => {
    const t = koaApp(routes);

    const res = await request(t.server).post('/login?email=b@example.com&fail=1');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await sql('SELECT id FROM users')).toEqual([]);
    expect(await sessionRows()).toEqual([]);
  });

  test.each([
    ['a 500 status, with ctx.db', '?db=1'],
    ['a 500 status, without ctx.db', ''],
    ['a thrown error, with ctx.db', '?db=1&throw=1'],
    ['a thrown error, without ctx.db', '?throw=1'],
  ])('an existing session is unchanged by a request failing with %s', async (_label, query) => {
    const t = koaApp(routes);
    const cookie = cookies(await request(t.server).get('/set'));
    const [stored] = await sessionRows();

    const failed = await request(t.server).post(`/bump${query}`).set('Cookie', cookie);
    const after = await request(t.server).get('/read').set('Cookie', cookie);

    expect(failed.status).toBe(500);
    expect(failed.headers['set-cookie']).toBeUndefined();
    expect(after.body).toEqual({ n: 1 });
    expect(await sessionRows()).toEqual([stored]);
    expect(await names()).toEqual([]);
  });
});

// ---- 9. a terminated connection -------------------------------------------------------------------------------

// SQLite has no server connection that another client could end.
if (onlyOn('postgres', 'mysql')) describe('a connection terminated mid-request', () => {
  test.each([
    ['the next query races the termination', false],
    // Only node-postgres reports a dead idle connection, which TypeORM then releases; mysql2 does not.
    ...(onlyOn('postgres') ? [['TypeORM has already released the runner', true] as [string, boolean]] : []),
  ])('answers 5xx with the real cause (%s), and the next request works', async (_label, waitForRelease) => {
    const t = koaApp({
      '/killed': async (ctx) => {
        const pid = await connectionId(ctx.db);
        await insert(ctx, 'doomed');
        // From a connection outside the pool, as an operator or a failover would.
        if (testDialect === 'mysql') await sql(`KILL ${Number(pid)}`);
        else await sql('SELECT pg_terminate_backend($1)', [Number(pid)]);
        if (waitForRelease) {
          // The worst case of a killed backend: the pg client saw the error and TypeORM released the runner.
          const runner = ctx.db.queryRunner as unknown as { isReleased: boolean };
          expect(await eventually(() => runner.isReleased, 5000)).toBe(true);
        }
        await insert(ctx, 'after-kill');
        ctx.body = 'unreachable';
      },
      '/ok': async (ctx) => {
        await insert(ctx, 'recovered');
        ctx.body = 'ok';
      },
    });

    const res = await request(t.server).post('/killed');

    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(res.text).not.toBe('unreachable');
    expect(t.errors).toHaveLength(1);
    const errors = chain(t.errors[0]);
    expect((errors[0] as Error).name).not.toBe('QueryRunnerAlreadyReleasedError');
    // PostgreSQL: 57P01 "terminating connection due to administrator command". MySQL/MariaDB close the socket of
    // a killed idle connection, and mysql2 tells it by timing: ER_CONNECTION_KILLED, PROTOCOL_CONNECTION_LOST,
    // EPIPE "This socket has been ended by the other party", or "Can't add new command when connection is in
    // closed state" when it had already seen the socket close.
    const killed = (e: unknown) =>
      /terminat|killed|closed the connection|connection lost|connection is in closed state|ended by the other party/i.test(
        String((e as Error).message),
      ) || ['57P01', 'PROTOCOL_CONNECTION_LOST', 'ER_CONNECTION_KILLED', 'EPIPE'].includes(String((e as { code?: string }).code));
    expect(errors.some(killed)).toBe(true);
    for (const err of t.reported) expect(chain(err).map((e) => (e as Error).name)).not.toContain('QueryRunnerAlreadyReleasedError');

    const next = await request(t.server).post('/ok');
    expect(next.status).toBe(200);
    expect(await names()).toEqual(['recovered']);
  });
});

// ---- 10. expiry semantics ----------------------------------------------------------------------------------------

describe('expiry matches koa-session', () => {
  const realNow = Date.now.bind(Date);
  let offset = 0;
  const clock = () => realNow() + offset;
  beforeEach(() => {
    offset = 0;
    // koa-session reads Date.now (its _expire check, renew); the store gets the same clock through `now`.
    jest.spyOn(Date, 'now').mockImplementation(clock);
  });

  const routes = {
    '/set': (ctx: Koa.Context) => {
      session(ctx).n = 1;
      ctx.body = 'ok';
    },
    '/read': (ctx: Koa.Context) => void (ctx.body = { n: session(ctx).n ?? null }),
    '/logout': async (ctx: Koa.Context) => {
      if (ctx.query.db) await insert(ctx, 'logout');
      ctx.session = null;
      if (ctx.query.fail) ctx.status = 500;
      ctx.body = 'bye';
    },
  };
  const expiresAt = async () => Number((await sessionRows())[0]!.expires_at);
  /** Session writes: an INSERT for a new session, a versioned UPDATE for a loaded one. */
  const upserts = () => log.queries.filter((q) => SESSIONS.test(q) && /^\s*(INSERT|UPDATE)/i.test(q)).length;

  test('maxAge sets the row’s expiry; an expired session is not returned', async () => {
    const maxAge = 60_000;
    const t = koaApp(routes, { maxAge, now: clock });
    const before = clock();
    const res = await request(t.server).get('/set');
    const after = clock();
    const cookie = cookies(res);
    const key = sessionKey(res);

    // koa-session hands the store maxAge + 10 s so the row outlives the cookie.
    const expires = await expiresAt();
    expect(expires).toBeGreaterThanOrEqual(before + maxAge);
    expect(expires).toBeLessThanOrEqual(after + maxAge + 10_000);
    const cookieExpiry = Date.parse(/expires=([^;]+)/.exec((res.headers['set-cookie'] as unknown as string[])[0]!)![1]!);
    expect(Math.abs(cookieExpiry - (before + maxAge))).toBeLessThan(2000);

    offset = maxAge / 2;
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: 1 });
    expect(await t.middleware.store.get(key)).toMatchObject({ n: 1 });

    // Past the row's expiry: the store itself no longer returns it (the row is still in the table).
    offset = expires - before + 1000;
    expect(await t.middleware.store.get(key)).toBeNull();
    expect(await sessionRows()).toHaveLength(1);
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: null });
  });

  test('rolling: every request re-saves the session and re-sends the cookie', async () => {
    const t = koaApp(routes, { maxAge: 60_000, rolling: true, now: clock });
    const cookie = cookies(await request(t.server).get('/set'));
    const first = await expiresAt();
    log.clear();

    offset = 10_000;
    const res = await request(t.server).get('/read').set('Cookie', cookie);

    expect(res.body).toEqual({ n: 1 });
    expect(res.headers['set-cookie']).toBeDefined();
    expect(upserts()).toBe(1);
    expect(await expiresAt()).toBeGreaterThanOrEqual(first + 10_000);

    // Without rolling, an unchanged session is neither written nor re-sent.
    const plain = koaApp(routes, { maxAge: 60_000, now: clock });
    const plainCookie = cookies(await request(plain.server).get('/set'));
    log.clear();
    const unchanged = await request(plain.server).get('/read').set('Cookie', plainCookie);
    expect(unchanged.body).toEqual({ n: 1 });
    expect(unchanged.headers['set-cookie']).toBeUndefined();
    expect(upserts()).toBe(0);
  });

  test('renew: re-saved only once past half its life', async () => {
    const maxAge = 60_000;
    const t = koaApp(routes, { maxAge, renew: true, now: clock });
    const cookie = cookies(await request(t.server).get('/set'));
    const first = await expiresAt();
    log.clear();

    offset = 20_000; // 40 s left of 60: not yet
    const early = await request(t.server).get('/read').set('Cookie', cookie);
    expect(early.body).toEqual({ n: 1 });
    expect(early.headers['set-cookie']).toBeUndefined();
    expect(upserts()).toBe(0);
    expect(await expiresAt()).toBe(first);

    offset = 35_000; // 25 s left: renewed
    const late = await request(t.server).get('/read').set('Cookie', cookie);
    expect(late.body).toEqual({ n: 1 });
    expect(late.headers['set-cookie']).toBeDefined();
    expect(upserts()).toBe(1);
    expect(await expiresAt()).toBeGreaterThanOrEqual(first + 35_000);
  });

  test("maxAge: 'session' gives a browser-session cookie, and the store's ttl bounds the row", async () => {
    const t = koaApp(routes, { maxAge: 'session', ttl: 120, now: clock });
    const before = clock();
    const res = await request(t.server).get('/set');
    const cookie = cookies(res);

    expect((res.headers['set-cookie'] as unknown as string[]).join('\n')).not.toMatch(/expires=/i);
    const expires = await expiresAt();
    expect(expires).toBeGreaterThanOrEqual(before + 120_000);
    expect(expires).toBeLessThanOrEqual(clock() + 120_000);

    offset = 100_000;
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: 1 });
    offset = expires - before + 1000;
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: null });
  });

  test('ctx.session = null destroys the row, unless the request rolls back', async () => {
    const t = koaApp(routes, { now: clock });
    const cookie = cookies(await request(t.server).get('/set'));
    expect(await sessionRows()).toHaveLength(1);

    const failed = await request(t.server).post('/logout?db=1&fail=1').set('Cookie', cookie);
    expect(failed.status).toBe(500);
    expect(await sessionRows()).toHaveLength(1);
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: 1 });

    const res = await request(t.server).post('/logout?db=1').set('Cookie', cookie);
    expect(res.status).toBe(200);
    expect((res.headers['set-cookie'] as unknown as string[]).find((c) => c.startsWith('koa.sess='))).toMatch(/^koa\.sess=;.*expires=Thu, 01 Jan 1970/);
    expect(await sessionRows()).toEqual([]);
    expect(await names()).toEqual(['logout']);
    expect((await request(t.server).get('/read').set('Cookie', cookie)).body).toEqual({ n: null });
  });
});

// ---- 11. currentManager() and withTransaction() ---------------------------------------------------------------

describe('currentManager() and withTransaction() inside Koa', () => {
  // The connection's id on the server (a constant on SQLite, which has one connection).
  const pid = (m: Koa.Context['db']) => connectionId(m);

  test('currentManager() is the request’s manager, also after awaiting the request body', async () => {
    const t = koaApp({
      '/echo': async (ctx) => {
        const viaCtx = await pid(ctx.db);
        // What a promise-based body parser (co-body, raw-body) does.
        const body = await new Promise<string>((resolve, reject) => {
          let text = '';
          ctx.req.setEncoding('utf8');
          ctx.req.on('data', (chunk: string) => (text += chunk));
          ctx.req.on('end', () => resolve(text));
          ctx.req.on('error', reject);
        });
        const manager = currentManager();
        ctx.body = { body, same: manager === ctx.db, viaCtx, viaCurrent: await pid(manager) };
      },
    });

    const res = await request(t.server).post('/echo').type('text').send('x'.repeat(100_000));

    expect(res.status).toBe(200);
    expect(res.body.body).toHaveLength(100_000);
    expect(res.body.same).toBe(true);
    expect(res.body.viaCurrent).toBe(res.body.viaCtx);
  });

  test('currentManager() works inside callback-style listeners on the request stream', async () => {
    const listening = deferred();
    const t = koaApp({
      '/cb': async (ctx) => {
        const viaCtx = await pid(ctx.db);
        // A callback-style body parser: its 'end' listener runs when the socket delivers the last bytes,
        // which arrive only after the listener is attached.
        const viaCurrent = await new Promise<number | string>((resolve) => {
          ctx.req.on('data', () => undefined);
          ctx.req.on('end', () => {
            try {
              pid(currentManager()).then(resolve, (err) => resolve(String(err)));
            } catch (err) {
              resolve(String(err));
            }
          });
          listening.resolve();
        });
        ctx.body = { viaCtx, viaCurrent };
      },
    });
    const port = await listen(t);

    const req = http.request({ host: '127.0.0.1', port, path: '/cb', method: 'POST', agent: false, headers: { 'content-type': 'text/plain' } });
    const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.on('error', reject);
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
    });
    req.write('first part;');
    await within(listening.promise, 5000, 'the handler to listen');
    req.end('last part');
    const { status, body } = await within(response, 5000, 'the response');

    expect(status).toBe(200);
    const result = JSON.parse(body);
    expect(result.viaCurrent).toBe(result.viaCtx);
  });

  test('withTransaction() can be the request’s first use of the database', async () => {
    const t = koaApp({
      '/first': async (ctx) => {
        await withTransaction((m) => m.query(`INSERT INTO items (name) VALUES ('first-use')`));
        ctx.body = 'ok';
      },
    });
    log.clear();

    await request(t.server).post('/first').expect(200);

    expect(await names()).toEqual(['first-use']);
    expect(log.matching(BEGIN)).toHaveLength(1);
    expect(log.matching(/^COMMIT/)).toHaveLength(1);
  });

  test('withTransaction() makes a savepoint that rolls back only its own part', async () => {
    const t = koaApp({
      '/nested': async (ctx) => {
        await insert(ctx, 'outer');
        await withTransaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('inner-undone')`);
          throw new Error('undo this part');
        }).catch(() => undefined);
        await withTransaction((m) => m.query(`INSERT INTO items (name) VALUES ('inner-kept')`));
        const pids = [await pid(ctx.db), await withTransaction((m) => pid(m))];
        ctx.body = { pids };
      },
    });
    log.clear();

    const res = await request(t.server).post('/nested');

    expect(res.status).toBe(200);
    expect(res.body.pids[0]).toBe(res.body.pids[1]);
    expect(await names()).toEqual(['outer', 'inner-kept']);
    expect(log.matching(BEGIN)).toHaveLength(1);
    expect(log.matching(/^COMMIT/)).toHaveLength(1);
    expect(log.matching(/^ROLLBACK TO SAVEPOINT/)).toHaveLength(1);
  });

  test('outside a request, currentManager() and withTransaction() refuse', async () => {
    expect(() => currentManager()).toThrow(NoRequestScopeError);
    await expect(withTransaction(async () => 1)).rejects.toBeInstanceOf(NoRequestScopeError);
  });
});

// ---- 12. construction and mounting errors --------------------------------------------------------------------

describe.each(damagedRows)('a stored row with %s', (_label, data) => {
  test('reads as no session, is reported once as a SessionDecodeError, and a new session is made over it', async () => {
    const target = koaApp({
      '/me': (ctx) => void (ctx.body = { user: ctx.session!.user ?? null }),
      '/login': (ctx) => {
        ctx.session!.user = 'alice';
        ctx.body = { ok: true };
      },
    });
    const login = await request(target.server).get('/login').expect(200);
    const cookie = cookies(login);
    const rows = await sql<{ id: string }>('SELECT id FROM sessions');
    expect(rows).toHaveLength(1);
    await sql('UPDATE sessions SET data = $1', [data]);

    const me = await within(request(target.server).get('/me').set('Cookie', cookie), 10_000, 'the request with the damaged session');
    expect(me.status).toBe(200);
    expect(me.body).toEqual({ user: null });
    expect(target.reported).toHaveLength(1);
    expect(target.reported[0]).toBeInstanceOf(SessionDecodeError);
    expect(target.reported[0]!.message).toContain(rows[0]!.id.slice(0, 8));
    expect(target.errors).toEqual([]);

    const again = await request(target.server).get('/login').set('Cookie', cookie).expect(200);
    const fresh = cookies(again);
    expect(sessionKey(again)).not.toBe(sessionKey(login));
    await request(target.server).get('/me').set('Cookie', fresh).expect(200, { user: 'alice' });
  });
});

describe('construction errors', () => {
  test('no app.keys is a TypeError', () => {
    const app = new Koa();
    expect(() => koaSessionStore(app, { dataSource: ds })).toThrow(TypeError);
    expect(() => koaSessionStore(app, { dataSource: ds })).toThrow(/app\.keys/);
  });

  test('an unknown option is a TypeError naming it', () => {
    const app = new Koa();
    app.keys = ['k'];
    expect(() => koaSessionStore(app, { dataSource: ds, secrett: 'x' } as never)).toThrow(TypeError);
    expect(() => koaSessionStore(app, { dataSource: ds, secrett: 'x' } as never)).toThrow(/"secrett"/);
    expect(() => koaSessionStore(app, { dataSource: ds, transaction: { isolation: 'x' } } as never)).toThrow(/"transaction\.isolation"/);
  });

  test('a koa-session already installed on the app is refused at construction', () => {
    const app = new Koa();
    app.keys = ['k'];
    app.use(koaSession(app));
    expect(() => koaSessionStore(app, { dataSource: ds })).toThrow(MiddlewareOrderError);
  });

  test('the same middleware mounted twice fails the first request with a clear error', async () => {
    const app = new Koa();
    app.keys = ['k'];
    const errors: unknown[] = [];
    app.on('error', (err) => errors.push(err));
    const middleware = koaSessionStore(app, { dataSource: ds });
    middlewares.push(middleware);
    app.use(middleware);
    app.use(middleware);
    app.use(async (ctx) => {
      await ctx.db.query(`INSERT INTO items (name) VALUES ('twice')`);
      ctx.body = 'ok';
    });

    const res = await request(app.callback()).get('/');

    expect(res.status).toBe(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MiddlewareOrderError);
    expect((errors[0] as Error).message).toMatch(/mounted twice/);
    expect(await names()).toEqual([]);
  });

  test('transaction: false gives sessions without ctx.db', async () => {
    const t = koaApp(
      {
        '/set': (ctx) => {
          session(ctx).n = 1;
          ctx.body = { hasDb: 'db' in ctx && ctx.db !== undefined };
        },
      },
      { transaction: false },
    );
    log.clear();

    const res = await request(t.server).get('/set');

    expect(res.body).toEqual({ hasDb: false });
    expect(txStatements()).toEqual([]);
    expect(await sessionRows()).toHaveLength(1);
  });

  // Koa now models `transaction: false` like the other adapters, as a scope without a unit of work; with the
  // scope's rule for transactional requests (a failed request's session write is skipped) this test fails.
  test('transaction: false keeps the session change of a failed request, as koa-session does (nothing rolls back)', async () => {
    const t = koaApp(
      {
        '/fail': (ctx) => {
          session(ctx).n = 7;
          throw new Error('the handler failed');
        },
        '/n': (ctx) => {
          ctx.body = { n: session(ctx).n ?? null };
        },
      },
      { transaction: false },
      {
        // Answers the failure itself, so the cookie koa-session set reaches the client.
        before: [
          async (ctx, next) => {
            try {
              await next();
            } catch {
              ctx.status = 500;
              ctx.body = 'failed';
            }
          },
        ],
      },
    );

    const failed = await request(t.server).get('/fail').expect(500);
    const next = await request(t.server).get('/n').set('Cookie', cookies(failed));

    expect(next.body).toEqual({ n: 7 });
    expect(await sessionRows()).toHaveLength(1);
  });
});
