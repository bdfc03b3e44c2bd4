/**
 * What production apps need from the request's unit of work, written once in the core and checked on each
 * adapter (Express, Koa, Fastify) on the database of the run: afterCommit()/afterRollback(), rollbackOnly(),
 * transaction.onBegin, isolation from the DataSource or a function of the request, the diagnostics_channel
 * tracing channels, and store.ping().
 */
import { tracingChannel } from 'node:diagnostics_channel';
import request from 'supertest';
import {
  afterCommit,
  afterRollback,
  currentManager,
  NoRequestScopeError,
  rollbackOnly,
  StoreQueryError,
  TransactionHookError,
  TypeormSessionStore,
  type StoreTrace,
  type TransactionTrace,
} from '../src/index.js';
import { adapters, startApp, type AppOptions, type Handler, type RunningApp } from './helpers/adapters.js';
import { commitFailure, onlyOn, sql, testDialect } from './helpers/dialect.js';
import { deferred } from './helpers/async.js';
import { namedTable, useDatabase } from './express/harness.js';
import { openDataSource } from './helpers/database.js';
import type { DataSource } from 'typeorm';

const ctx = useDatabase(
  [namedTable('items'), namedTable('audit'), ...(commitFailure?.schema ?? [])],
  ['items', 'audit', ...(commitFailure ? ['uniq'] : []), ...(testDialect === 'sqlite' ? ['uniq_parent'] : [])],
);

const running: RunningApp[] = [];
afterEach(async () => {
  for (const app of running.splice(0)) await app.close();
});

const itemNames = async () => (await ctx.sql<{ name: string }>('SELECT name FROM items ORDER BY id')).map((r) => r.name);
const liveSessions = async () => Number((await ctx.sql<{ n: unknown }>('SELECT COUNT(*) AS n FROM sessions WHERE expires_at > 0'))[0]!.n);
const insertItem = (db: { query(sql: string, p: unknown[]): Promise<unknown> }, name: string) => db.query(sql('INSERT INTO items (name) VALUES ($1)'), [name]);
/** Every cookie a response set, as one Cookie header (Koa's session cookie comes with its signature cookie). */
const cookieHeader = (res: { headers: Record<string, unknown> }) => {
  const set = res.headers['set-cookie'] as string[] | undefined;
  if (!set?.length) throw new Error('the response set no cookie');
  return set.map((c) => c.split(';')[0]).join('; ');
};

describe.each(adapters)('%s', (adapter) => {
  const start = async (routes: Record<string, Handler>, options: AppOptions = {}, dataSource: DataSource = ctx.ds) => {
    const app = await startApp(adapter, dataSource, routes, options);
    running.push(app);
    await app.store.ready();
    return app;
  };

  // ---- afterCommit / afterRollback -------------------------------------------------------------------------

  describe('afterCommit() and afterRollback()', () => {
    test('afterCommit hooks run after COMMIT, in registration order, outside the transaction, and see the committed row', async () => {
      const seen: unknown[] = [];
      const done = deferred();
      const app = await start({
        '/ok': async ({ db }) => {
          await insertItem(db, 'a');
          afterCommit(async () => {
            seen.push(['first', await itemNames()]);
          });
          afterCommit(() => {
            let outside = false;
            try {
              currentManager();
            } catch (err) {
              outside = err instanceof NoRequestScopeError;
            }
            seen.push(['second', outside]);
            done.resolve();
          });
          afterRollback(() => void seen.push('rollback hook'));
        },
      });

      await request(app.url).post('/ok').expect(200);
      await done.promise;

      expect(seen).toEqual([
        ['first', ['a']],
        ['second', true],
      ]);
    });

    test('a request answered 422 runs its afterRollback hooks, never its afterCommit ones', async () => {
      const seen: string[] = [];
      const done = deferred();
      const app = await start({
        '/bad': async ({ db }) => {
          await insertItem(db, 'kept?');
          afterCommit(() => void seen.push('commit'));
          afterRollback(() => {
            seen.push('rollback');
            done.resolve();
          });
          return { status: 422 };
        },
      });

      await request(app.url).post('/bad').expect(422);
      await done.promise;

      expect(seen).toEqual(['rollback']);
      expect(await itemNames()).toEqual([]);
    });

    // MySQL/MariaDB have no commit-time failure to provoke (no deferred constraints): see commitFailure.
    if (commitFailure) {
      test('a COMMIT that fails runs no afterCommit hook (the welcome e-mail is not sent) and runs afterRollback', async () => {
        const seen: string[] = [];
        const done = deferred();
        const app = await start({
          '/fails-at-commit': async ({ db }) => {
            await insertItem(db, 'never');
            await db.query(commitFailure!.statement('dup'));
            afterCommit(() => void seen.push('send the welcome e-mail'));
            afterRollback(() => {
              seen.push('rollback');
              done.resolve();
            });
          },
        });

        const res = await request(app.url).post('/fails-at-commit');
        await done.promise;

        expect(res.status).toBe(500);
        expect(seen).toEqual(['rollback']);
        expect(await itemNames()).toEqual([]);
      });
    }

    test('the response does not wait for the hooks', async () => {
      const gate = deferred();
      const finished = deferred();
      const app = await start({
        '/slow-hook': async ({ db }) => {
          await insertItem(db, 'x');
          afterCommit(async () => {
            await gate.promise;
            finished.resolve();
          });
          return { body: { answered: true } };
        },
      });

      // Were the response held until the hook ends, this request would time out: the hook waits for it.
      const res = await request(app.url).post('/slow-hook').timeout(5000);
      expect(res.body).toEqual({ answered: true });
      gate.resolve();
      await finished.promise;
    });

    test('a failing hook goes to onError with its cause; the response and the next hook are unaffected', async () => {
      const done = deferred();
      const boom = new Error('mail server down');
      const app = await start({
        '/hooks': async ({ db }) => {
          await insertItem(db, 'y');
          afterCommit(() => {
            throw boom;
          });
          afterCommit(() => done.resolve());
        },
      });

      await request(app.url).post('/hooks').expect(200);
      await done.promise;

      expect(app.reported).toHaveLength(1);
      expect(app.reported[0]).toBeInstanceOf(TransactionHookError);
      expect((app.reported[0] as TransactionHookError).hook).toBe('afterCommit');
      expect(app.reported[0]!.cause).toBe(boom);
      expect(await itemNames()).toEqual(['y']);
    });

    test('a request that never used the database runs afterCommit when it would have committed', async () => {
      const done = deferred<string>();
      const app = await start({
        '/no-db': () => {
          afterCommit(() => done.resolve('committed'));
          afterRollback(() => done.resolve('rolled back'));
        },
      });

      await request(app.url).get('/no-db').expect(200);

      expect(await done.promise).toBe('committed');
    });
  });

  // ---- rollbackOnly ----------------------------------------------------------------------------------------

  describe('rollbackOnly()', () => {
    test('a 200 after rollbackOnly() keeps neither the rows nor the session change', async () => {
      const app = await start({
        '/set': ({ session }) => {
          session.n = 1;
        },
        '/mutation': async ({ db, session }) => {
          await insertItem(db, 'from a failed mutation');
          session.n = 2;
          rollbackOnly();
          return { body: { errors: [{ message: 'the mutation failed' }] } };
        },
        '/read': ({ session }) => ({ body: { n: session.n ?? null } }),
      });
      const cookie = cookieHeader(await request(app.url).post('/set').expect(200));

      const res = await request(app.url).post('/mutation').set('Cookie', cookie);
      const after = await request(app.url).get('/read').set('Cookie', cookie);

      expect(res.status).toBe(200);
      expect(await itemNames()).toEqual([]);
      expect(after.body).toEqual({ n: 1 });
    });

    test('a new session made in a rollback-only request is not saved, and no cookie names it', async () => {
      const app = await start({
        '/login': async ({ db, session }) => {
          await insertItem(db, 'z');
          session.user = 'ada';
          rollbackOnly();
        },
      });

      const res = await request(app.url).post('/login').expect(200);

      expect(await liveSessions()).toBe(0);
      const cookies = (res.headers['set-cookie'] as unknown as string[] | undefined) ?? [];
      expect(cookies.filter((c) => !/expires=Thu, 01 Jan 1970/i.test(c))).toEqual([]);
    });

    test('outside a request, rollbackOnly(), afterCommit() and afterRollback() throw NoRequestScopeError', () => {
      expect(() => rollbackOnly()).toThrow(NoRequestScopeError);
      expect(() => afterCommit(() => undefined)).toThrow(NoRequestScopeError);
      expect(() => afterRollback(() => undefined)).toThrow(NoRequestScopeError);
    });
  });

  // ---- onBegin ---------------------------------------------------------------------------------------------

  describe('transaction.onBegin', () => {
    test('runs in the request transaction before its first query, and rolls back with it', async () => {
      const app = await start(
        {
          '/audit': async ({ db }) => {
            const [row] = await db.query('SELECT COUNT(*) AS n FROM audit');
            return { body: { seen: Number(row.n) } };
          },
          '/audit-then-fail': async ({ db }) => {
            await db.query('SELECT COUNT(*) AS n FROM audit');
            return { status: 500 };
          },
          '/no-db': () => ({ body: { ok: true } }),
        },
        { transaction: { onBegin: (manager) => manager.query(sql("INSERT INTO audit (name) VALUES ('began')")) } },
      );

      const seen = await request(app.url).get('/audit');
      await request(app.url).get('/audit-then-fail').expect(500);
      await request(app.url).get('/no-db').expect(200);

      expect(seen.body).toEqual({ seen: 1 });
      // One from the committed request; the failed one's rolled back; the request without queries ran none.
      expect(await ctx.sql('SELECT name FROM audit')).toEqual([{ name: 'began' }]);
    });

    test('a failing onBegin fails the request with the real cause, and its connection is released', async () => {
      const refused = new Error('tenant unknown');
      const app = await start(
        {
          '/q': async ({ db }) => {
            try {
              await db.query('SELECT 1 AS one');
              return { body: { ran: true } };
            } catch (err) {
              const e = err as TransactionHookError;
              return { status: 500, body: { name: e.name, hook: e.hook, cause: (e.cause as Error).message } };
            }
          },
        },
        {
          transaction: {
            onBegin: () => {
              throw refused;
            },
          },
        },
      );

      const res = await request(app.url).get('/q');

      expect(res.status).toBe(500);
      expect(res.body).toEqual({ name: 'TransactionHookError', hook: 'onBegin', cause: 'tenant unknown' });
      // The harness checks after each test that the pool is idle and no connection is left in a transaction.
    });

    if (onlyOn('postgres')) {
      test('SET LOCAL from onBegin is what the first query sees, and is gone on the next request of the same connection', async () => {
        const oneConnection = await ctx.open({ extra: { max: 1 } });
        const app = await start(
          {
            '/tenant': async ({ db }) => {
              const [row] = await db.query(`SELECT current_setting('app.tenant', true) AS tenant`);
              return { body: { tenant: row.tenant || null } };
            },
          },
          {
            transaction: {
              onBegin: async (manager, req) => {
                const tenant = headerOf(req, 'x-tenant');
                if (tenant) await manager.query(`SELECT set_config('app.tenant', $1, true)`, [tenant]);
              },
            },
          },
          oneConnection,
        );

        const first = await request(app.url).get('/tenant').set('X-Tenant', 'acme');
        const second = await request(app.url).get('/tenant');

        expect(first.body).toEqual({ tenant: 'acme' });
        expect(second.body).toEqual({ tenant: null });
      });
    }
  });

  // ---- isolation -------------------------------------------------------------------------------------------

  // SQLite has no isolation levels (its transactions are serializable), so nothing is sent to check there.
  if (!onlyOn('sqlite')) {
    describe('isolation level', () => {
      const levels = () => ctx.log.matching(/ISOLATION LEVEL/i).map((q) => /ISOLATION LEVEL ([A-Z ]+)/i.exec(q)![1]!.trim());

      test('a function of the request chooses the level per route; undefined keeps the default', async () => {
        const app = await start(
          { '/q': async ({ db }) => void (await db.query('SELECT 1 AS one')) },
          { transaction: { isolationLevel: (req) => (headerOf(req, 'x-strict') ? 'SERIALIZABLE' : undefined) } },
        );
        ctx.log.clear();

        await request(app.url).get('/q').set('X-Strict', '1').expect(200);
        await request(app.url).get('/q').expect(200);

        expect(levels()).toEqual(['SERIALIZABLE']);
      });

      test('without transaction.isolationLevel, the DataSource’s isolationLevel is used', async () => {
        const serializable = await ctx.open({ isolationLevel: 'SERIALIZABLE', logging: ['query'], logger: ctx.log } as never);
        const app = await start({ '/q': async ({ db }) => void (await db.query('SELECT 1 AS one')) }, {}, serializable);
        ctx.log.clear();

        await request(app.url).get('/q').expect(200);

        expect(levels()).toEqual(['SERIALIZABLE']);
      });

      test('a function answering something else fails the request with a TypeError naming the option', async () => {
        const app = await start(
          {
            '/q': async ({ db }) => {
              try {
                await db.query('SELECT 1 AS one');
                return { body: { ran: true } };
              } catch (err) {
                return { status: 500, body: { message: (err as Error).message } };
              }
            },
          },
          { transaction: { isolationLevel: () => 'SOMETIMES' as never } },
        );

        const res = await request(app.url).get('/q');

        expect(res.status).toBe(500);
        expect(res.body.message).toMatch(/"transaction\.isolationLevel" answered "SOMETIMES"/);
      });
    });
  }

  // ---- tracing ---------------------------------------------------------------------------------------------

  test('tracing: a subscriber sees the store statements (no session id) and BEGIN/COMMIT/ROLLBACK with durations', async () => {
    const store: StoreTrace[] = [];
    const transaction: Array<TransactionTrace & { failed?: boolean }> = [];
    const storeEnd = (context: unknown) => store.push({ ...(context as StoreTrace) });
    const transactionEnd = (context: unknown) => transaction.push({ ...(context as TransactionTrace) });
    const storeChannel = tracingChannel('typeorm-session:store');
    const transactionChannel = tracingChannel('typeorm-session:transaction');
    const storeHandlers = { asyncEnd: storeEnd };
    const transactionHandlers = { asyncEnd: transactionEnd };
    storeChannel.subscribe(storeHandlers as never);
    transactionChannel.subscribe(transactionHandlers as never);
    try {
      const app = await start({
        '/write': async ({ db, session }) => {
          await insertItem(db, 'traced');
          session.n = 1;
        },
        '/reject': async ({ db }) => {
          await insertItem(db, 'rejected');
          return { status: 409 };
        },
      });
      const first = await request(app.url).post('/write').expect(200);
      const cookie = cookieHeader(first);
      await request(app.url).post('/reject').set('Cookie', cookie).expect(409);

      const phases = transaction.map((t) => [t.phase, t.outcome ?? null]);
      expect(phases).toEqual([
        ['acquire', null],
        ['begin', null],
        ['commit', 'committed'],
        ['acquire', null],
        ['begin', null],
        ['rollback', 'rolled back'],
      ]);
      for (const t of transaction) {
        expect(t.database).toBe(testDialect);
        expect(typeof t.durationMs).toBe('number');
        expect(t.durationMs).toBeGreaterThanOrEqual(0);
      }
      const operations = store.map((s) => s.operation);
      expect(operations).toContain('set');
      expect(operations).toContain('get');
      for (const s of store) {
        expect(s.table).toBe('sessions');
        expect(typeof s.durationMs).toBe('number');
      }
      expect(store.find((s) => s.operation === 'get')!.tag).toMatch(/^[0-9a-f]{8}$/);
      // The session id never reaches a subscriber, in any field.
      const sid = decodeURIComponent(cookie.split(';')[0]!.split('=')[1]!).replace(/^s:/, '').split('.')[0]!;
      expect(sid.length).toBeGreaterThan(10);
      expect(JSON.stringify(store)).not.toContain(sid);
    } finally {
      storeChannel.unsubscribe(storeHandlers as never);
      transactionChannel.unsubscribe(transactionHandlers as never);
    }
  });
});

// ---- store.ping() ----------------------------------------------------------------------------------------------

describe('store.ping()', () => {
  test('answers whether the session table exists, and rejects with StoreQueryError when the database does not answer', async () => {
    const present = new TypeormSessionStore({ dataSource: ctx.ds, pruneInterval: false });
    await present.ready();
    const absent = new TypeormSessionStore({ dataSource: ctx.ds, tableName: 'never_made', createTable: false, pruneInterval: false });
    // Not through ctx.open(): the harness would check the pool of a DataSource this test destroys.
    const gone = await openDataSource(ctx.db.url);
    const unreachable = new TypeormSessionStore({ dataSource: gone, tableName: 'never_made', createTable: false, pruneInterval: false });
    await gone.destroy();
    try {
      const ping = await present.ping();
      expect(ping.table).toBe(true);
      expect(ping.latencyMs).toBeGreaterThanOrEqual(0);
      expect((await absent.ping()).table).toBe(false);
      await expect(unreachable.ping()).rejects.toBeInstanceOf(StoreQueryError);
    } finally {
      await Promise.all([present.close(), absent.close(), unreachable.close()]);
    }
  });
});

// A diagnostics_channel subscription is process-wide: none may be left behind by this file.
afterAll(() => {
  expect(tracingChannel('typeorm-session:store').asyncEnd.hasSubscribers).toBe(false);
  expect(tracingChannel('typeorm-session:transaction').asyncEnd.hasSubscribers).toBe(false);
});

function headerOf(req: unknown, name: string): string | undefined {
  const r = req as { headers?: Record<string, unknown>; get?: (n: string) => string; request?: { headers: Record<string, unknown> } };
  const value = r.headers?.[name] ?? r.request?.headers[name];
  return typeof value === 'string' ? value : undefined;
}
