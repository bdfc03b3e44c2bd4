/**
 * The request's transaction on Express: lazy, committed before the response leaves, rolled back on every kind of
 * failure, rolled back before its connection goes back to the pool, and shared with the session writes.
 */
import type { EventEmitter } from 'node:events';
import request from 'supertest';
import type { NextFunction, Request, Response } from 'express';
import { CommitError, type TypeormSessionError } from '../../src/index.js';
import { commitFailure, connectionId, onlyOn, openTransactions, poolState, serialIdColumn } from '../helpers/dialect.js';
import {
  cookieOf,
  count as countRows,
  EXPRESS_MAJOR,
  express,
  namedTable,
  names,
  rawRequest,
  slowCommitSchema,
  slowInsertSql,
  sql,
  testDialect,
  useDatabase,
  warm,
  within,
} from './harness.js';

const ctx = useDatabase(
  [
    namedTable('items'),
    `CREATE TABLE users (${serialIdColumn}, email text NOT NULL)`,
    ...(commitFailure?.schema ?? []),
    // A commit that takes 300 ms: a response sent before COMMIT finishes would be seen before the row is.
    ...slowCommitSchema(),
  ],
  ['items', 'users', 'uniq', 'slow'],
);

const session = (req: Request) => req.session as unknown as Record<string, unknown>;
const insert = (req: Request, name: string, table = 'items') => req.db.query(sql(`INSERT INTO ${table} (name) VALUES ($1)`), [name]);
const count = (table: string) => countRows(ctx, table);
/** The statement that opens a request's transaction: BEGIN IMMEDIATE on SQLite (it takes the write lock at once). */
const BEGIN = testDialect === 'sqlite' ? 'BEGIN IMMEDIATE' : 'START TRANSACTION';
const TX = /^(START TRANSACTION|BEGIN|COMMIT|ROLLBACK)/;

/** Connections taken from the main DataSource's pool (pg-pool and mysql2's pool both emit 'acquire'). */
function acquisitions(): () => number {
  let n = 0;
  const driver = ctx.ds.driver as unknown as { master?: EventEmitter; pool?: EventEmitter };
  (testDialect === 'postgres' ? driver.master! : driver.pool!).on('acquire', () => n++);
  return () => n;
}

describe('lazy', () => {
  test('a request that never touches req.db sends no statement and takes no connection', async () => {
    const app = ctx.app((a) => a.get('/plain', (_req, res) => void res.send('plain')));
    await warm(app);
    // SQLite has no pool to take a connection from: the empty statement log is the whole check there.
    const acquired = onlyOn('postgres', 'mysql') ? acquisitions() : () => 0;
    const before = poolState(ctx.ds).total;
    ctx.log.clear();

    const res = await request(app).get('/plain');

    expect(res.status).toBe(200);
    expect(res.text).toBe('plain');
    expect(ctx.log.queries).toEqual([]);
    expect(acquired()).toBe(0);
    expect(poolState(ctx.ds).total).toBe(before);
    expect(await openTransactions(ctx.ds)).toBe(0);
  });

  test('reading the req.db property without querying sends nothing either', async () => {
    const app = ctx.app((a) =>
      a.get('/peek', (req, res) => {
        const manager = req.db;
        res.send(typeof manager.query);
      }),
    );
    await warm(app);
    // SQLite has no pool to take a connection from: the empty statement log is the whole check there.
    const acquired = onlyOn('postgres', 'mysql') ? acquisitions() : () => 0;
    ctx.log.clear();

    const res = await request(app).get('/peek');

    expect(res.text).toBe('function');
    expect(ctx.log.queries).toEqual([]);
    expect(acquired()).toBe(0);
  });

  test('a request with a session but no req.db use reads its session without opening a transaction', async () => {
    const app = ctx.app((a) => {
      a.get('/set', (req, res) => {
        session(req).n = 1;
        res.send('set');
      });
      a.get('/read', (req, res) => void res.json({ n: session(req).n }));
    });
    const cookie = cookieOf((await request(app).get('/set')).headers['set-cookie']);
    ctx.log.clear();

    const res = await request(app).get('/read').set('Cookie', cookie);

    expect(res.body).toEqual({ n: 1 });
    expect(ctx.log.matching(/sessions/)).toHaveLength(1);
    expect(ctx.log.matching(/START TRANSACTION|BEGIN|COMMIT|ROLLBACK/i)).toEqual([]);
  });

  test('the first query opens the transaction, and one request is one transaction', async () => {
    const app = ctx.app((a) =>
      a.post('/two', async (req, res) => {
        await insert(req, 'one');
        await insert(req, 'two');
        res.send('ok');
      }),
    );
    await warm(app);
    ctx.log.clear();

    await request(app).post('/two').expect(200);

    const tx = ctx.log.matching(TX);
    expect(tx).toEqual([BEGIN, 'COMMIT']);
    expect(await names(ctx)).toEqual(['one', 'two']);
  });
});

describe('commit happens before the response leaves', () => {
  test('the row is visible from another connection when the status line arrives', async () => {
    const app = ctx.app((a) =>
      a.post('/slow', async (req, res) => {
        await insert(req, 'committed', 'slow');
        res.status(201).json({ ok: true });
      }),
    );
    const port = await ctx.listen(app);

    const { res, rest } = await rawRequest(port, '/slow', { method: 'POST' });
    // The COMMIT takes 300 ms (deferred trigger): only a response held until it finished sees the row here.
    const seen = await names(ctx, 'slow');
    const { body } = await rest();

    expect(res.statusCode).toBe(201);
    expect(seen).toEqual(['committed']);
    expect(JSON.parse(body)).toEqual({ ok: true });
  });

  test('a redirect leaves only after the session it set and the rows are committed', async () => {
    const app = ctx.app((a) =>
      a.post('/login', async (req, res) => {
        await insert(req, 'audit', 'slow');
        session(req).userId = 'u-1';
        res.redirect('/home');
      }),
    );
    const port = await ctx.listen(app);

    const { res, rest } = await rawRequest(port, '/login', { method: 'POST' });
    const sessions = await ctx.sql('SELECT user_id FROM sessions');
    const rows = await names(ctx, 'slow');
    await rest();

    expect(res.statusCode).toBe(302);
    expect(res.headers.location).toBe('/home');
    expect(res.headers['set-cookie']).toHaveLength(1);
    expect(sessions).toEqual([{ user_id: 'u-1' }]);
    expect(rows).toEqual(['audit']);
  });

  test('a redirect without req.db still leaves only after the session is saved', async () => {
    const app = ctx.app((a) =>
      a.post('/remember', (req, res) => {
        session(req).userId = 'u-2';
        res.redirect('/home');
      }),
    );
    const port = await ctx.listen(app);

    const { res, rest } = await rawRequest(port, '/remember', { method: 'POST' });
    const sessions = await ctx.sql('SELECT user_id FROM sessions');
    await rest();

    expect(res.statusCode).toBe(302);
    expect(sessions).toEqual([{ user_id: 'u-2' }]);
  });

  test('a query sent but not awaited before res.send() is part of the transaction, committed before the response', async () => {
    let late: unknown = 'not settled';
    const app = ctx.app((a) =>
      a.post('/unawaited', (req, res) => {
        req.db.query(slowInsertSql('items', 'unawaited', 0.2)).then(
          () => (late = 'ok'),
          (err) => (late = err),
        );
        res.send('sent');
      }),
    );
    const port = await ctx.listen(app);

    const { res, rest } = await rawRequest(port, '/unawaited', { method: 'POST' });
    const seen = await names(ctx);
    await rest();

    expect(res.statusCode).toBe(200);
    expect(late).toBe('ok');
    expect(seen).toEqual(['unawaited']);
  });
});

describe('commit failure', () => {
  // MySQL/MariaDB have no commit-time failure to provoke (no deferred constraints): see commitFailure.
  if (commitFailure) test('a deferred constraint failing at COMMIT answers 500 with no cookie, and nothing is kept', async () => {
    const failure = commitFailure!;
    const errors: TypeormSessionError[] = [];
    const app = ctx.app(
      (a) =>
        a.post('/dup', async (req, res) => {
          session(req).x = 1;
          await req.db.query(failure.statement('a'));
          await insert(req, 'with-dup');
          res.set('X-Handler', 'yes').location('/somewhere').status(200).json({ ok: true });
        }),
      { onError: (e) => errors.push(e) },
    );

    const res = await request(app).post('/dup');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(res.headers['x-handler']).toBeUndefined();
    expect(res.headers.location).toBeUndefined();
    expect(res.text).not.toContain('ok');
    expect(await count('uniq')).toBe(0);
    expect(await names(ctx)).toEqual([]);
    expect(await count('sessions')).toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(CommitError);
    expect(errors[0]!.code).toBe('ERR_TRANSACTION_COMMIT');
    expect((errors[0]!.cause as { code?: string }).code).toBe(failure.code);
  });
});

describe('rollback', () => {
  const insertThenNext = (name: string) => async (req: Request, _res: Response, next: NextFunction) => {
    await insert(req, name);
    next();
  };
  const failures: Array<[string, (a: express.Express) => void, number]> = [
    [
      'a synchronous throw',
      (a) =>
        a.post('/fail', insertThenNext('sync'), () => {
          throw new Error('sync');
        }),
      500,
    ],
    [
      'a rejected async handler',
      (a) =>
        a.post('/fail', async (req) => {
          await insert(req, 'async');
          throw new Error('async');
        }),
      500,
    ],
    [
      'a rejected async handler inside a Router',
      (a) => {
        const router = express.Router();
        router.post('/fail', async (req) => {
          await insert(req, 'router');
          throw new Error('router');
        });
        a.use(router);
      },
      500,
    ],
    [
      'next(err)',
      (a) =>
        a.post('/fail', async (req, _res, next) => {
          await insert(req, 'next');
          next(new Error('next'));
        }),
      500,
    ],
    [
      'an error handler that swallows the error and answers 500',
      (a) => {
        a.post('/fail', async (req) => {
          await insert(req, 'handled');
          throw new Error('handled');
        });
        a.use((_err: unknown, _req: Request, res: Response, _next: NextFunction) => {
          res.status(500).json({ handled: true });
        });
      },
      500,
    ],
    [
      'a 4xx answer',
      (a) =>
        a.post('/fail', async (req, res) => {
          await insert(req, 'conflict');
          res.status(409).send('conflict');
        }),
      409,
    ],
  ];

  test.each(failures)('on %s: rows absent, ROLLBACK sent, the response arrives', async (_label, routes, status) => {
    const app = ctx.app(routes);
    ctx.log.clear();

    // Express 4 drops rejected async handlers: without the library's forwarding this request would hang.
    const res = await within(request(app).post('/fail'), 5000, `the response on express ${EXPRESS_MAJOR}`);

    expect(res.status).toBe(status);
    expect(await names(ctx)).toEqual([]);
    expect(ctx.log.matching(TX)).toEqual([BEGIN, 'ROLLBACK']);
  });

  test('commitOn decides by status: with commitOn(s < 500) a 409 commits', async () => {
    const app = ctx.app(
      (a) =>
        a.post('/conflict', async (req, res) => {
          await insert(req, 'kept');
          res.status(409).send('conflict');
        }),
      { transaction: { commitOn: (status) => status < 500 } },
    );

    await request(app).post('/conflict').expect(409);

    expect(await names(ctx)).toEqual(['kept']);
  });

  test('an error handler that recovers with 200 commits (the status decides)', async () => {
    const app = ctx.app((a) => {
      a.post('/recover', async (req) => {
        await insert(req, 'recovered');
        throw new Error('recoverable');
      });
      a.use((_err: unknown, _req: Request, res: Response, _next: NextFunction) => void res.status(200).send('fine'));
    });

    await request(app).post('/recover').expect(200);

    expect(await names(ctx)).toEqual(['recovered']);
  });
});

describe('rollback before release', () => {
  const failing: Array<[string, (req: Request, res: Response) => Promise<void>]> = [
    [
      'a 500 answer',
      async (req, res) => {
        await insert(req, 'leak');
        res.status(500).send('no');
      },
    ],
    [
      'a thrown error',
      async (req) => {
        await insert(req, 'leak');
        throw new Error('boom');
      },
    ],
  ];
  // MySQL/MariaDB have no commit-time failure to provoke (no deferred constraints): see commitFailure.
  if (commitFailure) {
    failing.push([
      'a failed COMMIT',
      async (req, res) => {
        await insert(req, 'leak');
        await req.db.query(commitFailure!.statement('z'));
        res.send('looks fine');
      },
    ]);
  }

  /**
   * Whether the connection is inside a transaction, asked on that connection: on PostgreSQL whether the
   * statement is the first of its transaction and no transaction id was assigned, on MySQL @@in_transaction.
   * SQLite's one connection says it itself (openTransactions()).
   */
  const cleanSql = {
    postgres: 'SELECT (now() = statement_timestamp() AND txid_current_if_assigned() IS NULL) AS clean',
    mysql: 'SELECT @@in_transaction = 0 AS clean',
    sqlite: 'SELECT 1 AS clean',
  }[testDialect];

  test.each(failing)('after %s, the next request on a 1-connection pool sees a clean connection', async (_label, handler) => {
    const ds1 = await ctx.open({ poolSize: 1 } as never);
    let failedId = '';
    const app = ctx.app(
      (a) => {
        a.post('/fail', async (req, res) => {
          failedId = await connectionId(req.db);
          await handler(req, res);
        });
        a.get('/check', async (req, res) => {
          const id = await connectionId(req.db);
          const [row] = await req.db.query('SELECT COUNT(*) AS n FROM items');
          res.json({ id, n: Number(row.n) });
        });
      },
      {},
      ds1,
    );

    expect((await request(app).post('/fail')).status).toBe(500);
    // Straight on the pool, outside any request: the connection must not still be inside the old transaction.
    expect(await openTransactions(ds1)).toBe(0);
    const runner = ds1.createQueryRunner();
    let direct: { id: string; clean: boolean; n: number };
    try {
      const [row] = await runner.query(`${cleanSql}, (SELECT COUNT(*) FROM items) AS n`);
      direct = { id: await connectionId(runner.manager), clean: Boolean(Number(row.clean)), n: Number(row.n) };
    } finally {
      await runner.release();
    }
    const next = await request(app).get('/check');

    expect(direct).toEqual({ id: failedId, clean: true, n: 0 });
    expect(next.body).toEqual({ id: failedId, n: 0 });
    expect(await names(ctx)).toEqual([]);
  });
});

describe('session writes join the request transaction', () => {
  function loginApp() {
    return ctx.app((a) => {
      a.post('/login', async (req, res) => {
        await req.db.query(sql('INSERT INTO users (email) VALUES ($1)'), ['a@example.com']);
        const [user] = await req.db.query(sql('SELECT id FROM users WHERE email = $1'), ['a@example.com']);
        session(req).userId = String(user.id);
        if (req.query.fail) {
          res.status(500).send('failed after login');
          return;
        }
        res.json({ id: user.id });
      });
    });
  }

  test('a login commits the user row and the session row in one transaction', async () => {
    ctx.log.clear();
    const res = await request(loginApp()).post('/login');

    expect(res.status).toBe(200);
    expect(res.headers['set-cookie']).toHaveLength(1);
    expect(await ctx.sql('SELECT id FROM users')).toEqual([{ id: res.body.id }]);
    expect(await ctx.sql('SELECT user_id FROM sessions')).toEqual([{ user_id: String(res.body.id) }]);
    const statements = ctx.log.queries.filter((q) => /^(START TRANSACTION|BEGIN|COMMIT)|INSERT INTO (users|["`]sessions["`])/.test(q));
    expect(statements.map((q) => q.split(' (')[0])).toEqual([BEGIN, 'INSERT INTO users', sql('INSERT INTO "sessions"'), 'COMMIT']);
  });

  test('a login whose request then fails keeps neither the user nor the session, and sets no cookie', async () => {
    const res = await request(loginApp()).post('/login?fail=1');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await ctx.sql('SELECT id FROM users')).toEqual([]);
    expect(await count('sessions')).toBe(0);
  });

  function counterApp() {
    return ctx.app((a) => {
      a.post('/n/:n', async (req, res) => {
        session(req).n = Number(req.params.n);
        if (req.query.db) await insert(req, `n=${req.params.n}`);
        if (req.query.throw) throw new Error('after changing the session');
        res.status(req.query.fail ? 500 : 200).send('done');
      });
      a.post('/logout', async (req, res) => {
        await insert(req, 'logout');
        await new Promise<void>((resolve, reject) => req.session.destroy((err) => (err ? reject(err) : resolve())));
        res.status(500).send('failed after logout');
      });
      a.get('/n', (req, res) => void res.json({ n: session(req).n ?? null }));
    });
  }

  test.each([
    ['answers 500 after a query', '/n/2?db=1&fail=1'],
    ['throws after a query', '/n/2?db=1&throw=1'],
    ['answers 500 without touching req.db', '/n/2?fail=1'],
  ])('a request that changes the session then %s leaves the existing session unchanged', async (_label, path) => {
    const app = counterApp();
    const first = await request(app).post('/n/1').expect(200);
    const cookie = cookieOf(first.headers['set-cookie']);
    const stored = await ctx.sql('SELECT data FROM sessions');

    const failed = await request(app).post(path).set('Cookie', cookie);
    const after = await request(app).get('/n').set('Cookie', cookie);

    expect(failed.status).toBe(500);
    expect(failed.headers['set-cookie']).toBeUndefined();
    expect(after.body).toEqual({ n: 1 });
    expect(await ctx.sql('SELECT data FROM sessions')).toEqual(stored);
    expect(await names(ctx)).toEqual([]);
  });

  test('a logout (session destroy) inside a request that then fails is rolled back with it', async () => {
    const app = counterApp();
    const cookie = cookieOf((await request(app).post('/n/1').expect(200)).headers['set-cookie']);

    await request(app).post('/logout').set('Cookie', cookie).expect(500);
    const after = await request(app).get('/n').set('Cookie', cookie);

    expect(after.body).toEqual({ n: 1 });
    expect(await count('sessions')).toBe(1);
    expect(await names(ctx)).toEqual([]);
  });
});
