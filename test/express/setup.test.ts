/**
 * Mounting and options: a wrong middleware order and a double mount fail clearly, unknown options are named,
 * `transaction: false` turns the unit of work off but keeps sessions, isolationLevel reaches the database.
 */
import expressSession from 'express-session';
import request from 'supertest';
import type { NextFunction, Request, Response } from 'express';
import { MiddlewareOrderError, sessionStore } from '../../src/index.js';
import { onlyOn } from '../helpers/dialect.js';
import { currentFrame } from '../../src/unit-of-work/context.js';
import { cookieOf, count, express, namedTable, names, useDatabase } from './harness.js';

const ctx = useDatabase([namedTable('items')], ['items']);

function captureErrors(app: express.Express, errors: unknown[]) {
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    errors.push(err);
    res.status(500).send((err as Error).message);
  });
}

describe('middleware order', () => {
  test('a plain express-session mounted before sessionStore fails the first request with MiddlewareOrderError', async () => {
    const errors: unknown[] = [];
    const app = express();
    app.use(expressSession({ secret: 'other', resave: false, saveUninitialized: false }));
    app.use(sessionStore({ dataSource: ctx.ds, secret: 'test-secret' }));
    app.get('/', (_req, res) => void res.send('should not run'));
    captureErrors(app, errors);

    const res = await request(app).get('/');

    expect(res.status).toBe(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MiddlewareOrderError);
    expect((errors[0] as MiddlewareOrderError).code).toBe('ERR_MIDDLEWARE_ORDER');
    expect((errors[0] as Error).message).toMatch(/session middleware mounted before sessionStore/);
  });

  test('the same sessionStore mounted twice fails with MiddlewareOrderError', async () => {
    const errors: unknown[] = [];
    const middleware = sessionStore({ dataSource: ctx.ds, secret: 'test-secret' });
    const app = express();
    app.use(middleware);
    app.use(middleware);
    app.get('/', (_req, res) => void res.send('should not run'));
    captureErrors(app, errors);

    const res = await request(app).get('/');

    expect(res.status).toBe(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MiddlewareOrderError);
    expect((errors[0] as Error).message).toMatch(/mounted twice/);
  });

  test('two sessionStore middlewares on one path fail with MiddlewareOrderError', async () => {
    const errors: unknown[] = [];
    const app = express();
    app.use(sessionStore({ dataSource: ctx.ds, secret: 'test-secret' }));
    app.use(sessionStore({ dataSource: ctx.ds, secret: 'test-secret', tableName: 'other_sessions' }));
    app.get('/', (_req, res) => void res.send('should not run'));
    captureErrors(app, errors);

    const res = await request(app).get('/');

    expect(res.status).toBe(500);
    expect(errors[0]).toBeInstanceOf(MiddlewareOrderError);
  });

  test('an express-session mounted after sessionStore is inert: the session stays ours and joins the transaction', async () => {
    const app = express();
    app.use(sessionStore({ dataSource: ctx.ds, secret: 'test-secret' }));
    app.use(expressSession({ secret: 'other', resave: false, saveUninitialized: false }));
    app.post('/', async (req, res) => {
      await req.db.query(`INSERT INTO items (name) VALUES ('x')`);
      (req.session as unknown as Record<string, unknown>).n = 1;
      res.status(req.query.fail ? 500 : 200).send('done');
    });

    await request(app).post('/?fail=1').expect(500);
    expect(await count(ctx, 'sessions')).toBe(0);
    await request(app).post('/').expect(200);
    expect(await count(ctx, 'sessions')).toBe(1);
    expect(await names(ctx)).toEqual(['x']);
  });
});

describe('options', () => {
  test('an unknown option is named in a TypeError', () => {
    expect(() => sessionStore({ dataSource: ctx.ds, secret: 's', sesion: {} } as never)).toThrow(TypeError);
    expect(() => sessionStore({ dataSource: ctx.ds, secret: 's', sesion: {} } as never)).toThrow(/"sesion"/);
  });

  test('an unknown transaction option is named with its path', () => {
    const make = () => sessionStore({ dataSource: ctx.ds, secret: 's', transaction: { isolation: 'SERIALIZABLE' } as never });
    expect(make).toThrow(TypeError);
    expect(make).toThrow(/"transaction\.isolation"/);
  });

  test('a missing or empty secret is named', () => {
    expect(() => sessionStore({ dataSource: ctx.ds } as never)).toThrow(TypeError);
    expect(() => sessionStore({ dataSource: ctx.ds } as never)).toThrow(/"secret"/);
    expect(() => sessionStore({ dataSource: ctx.ds, secret: '' })).toThrow(/"secret"/);
    expect(() => sessionStore({ dataSource: ctx.ds, secret: [] })).toThrow(/"secret"/);
  });

  test('invalid transaction values are rejected with the option named', () => {
    expect(() => sessionStore({ dataSource: ctx.ds, secret: 's', transaction: { isolationLevel: 'SNAPSHOT' as never } })).toThrow(
      /transaction\.isolationLevel/,
    );
    expect(() => sessionStore({ dataSource: ctx.ds, secret: 's', transaction: { acquireTimeoutMs: 0 } })).toThrow(
      /transaction\.acquireTimeoutMs/,
    );
    expect(() => sessionStore({ dataSource: ctx.ds, secret: 's', transaction: { commitOn: true as never } })).toThrow(
      /transaction\.commitOn/,
    );
  });

  test('transaction: false gives no req.db, and sessions still work', async () => {
    const app = ctx.app(
      (a) => {
        a.post('/n', (req, res) => {
          (req.session as unknown as Record<string, unknown>).n = 41;
          res.json({ hasDb: 'db' in req && req.db !== undefined });
        });
        a.get('/n', (req, res) => void res.json({ n: (req.session as unknown as Record<string, unknown>).n ?? null }));
      },
      { transaction: false },
    );
    ctx.log.clear();

    const first = await request(app).post('/n').expect(200);
    const second = await request(app).get('/n').set('Cookie', cookieOf(first.headers['set-cookie']));

    expect(first.body).toEqual({ hasDb: false });
    expect(second.body).toEqual({ n: 41 });
    expect(await count(ctx, 'sessions')).toBe(1);
    expect(ctx.log.matching(/^(START TRANSACTION|BEGIN)/)).toEqual([]);
  });

  // The rule is RequestScope.keepSessionWrite(), shared with Koa and Fastify (koa.test.ts has the same test,
  // which fails when a failed request's session write is skipped without a unit of work).
  test('transaction: false keeps the session change of a failed request, as express-session does (nothing rolls back)', async () => {
    const app = ctx.app(
      (a) => {
        a.post('/fail', (req, _res, next) => {
          (req.session as unknown as Record<string, unknown>).n = 7;
          next(new Error('the handler failed'));
        });
        a.get('/n', (req, res) => void res.json({ n: (req.session as unknown as Record<string, unknown>).n ?? null }));
      },
      { transaction: false },
    );

    const failed = await request(app).post('/fail').expect(500);
    const next = await request(app).get('/n').set('Cookie', cookieOf(failed.headers['set-cookie']));

    expect(next.body).toEqual({ n: 7 });
    expect(await count(ctx, 'sessions')).toBe(1);
  });

  test('transaction: false runs listeners added to the request in no request frame (there is nothing to find)', async () => {
    const frames: unknown[] = [];
    const app = ctx.app(
      (a) =>
        a.post('/body', (req, res) => {
          // What a body parser does: the listener runs later, from a read of the socket.
          req.on('data', () => frames.push(currentFrame()));
          req.on('end', () => res.json({ frames: frames.length }));
        }),
      { transaction: false },
    );
    const res = await request(app).post('/body').send({ a: 1 }).expect(200);
    expect(res.body).toEqual({ frames: 1 });
    expect(frames).toEqual([undefined]);
  });

  // SQLite has no isolation levels to choose (its transactions are serializable): the level test is for servers.
  if (onlyOn('postgres')) {
    test('transaction.isolationLevel is the level of the request’s transaction', async () => {
      const app = ctx.app(
        (a) =>
          a.get('/level', async (req, res) => {
            const [row] = await req.db.query('SHOW transaction_isolation');
            res.send(row.transaction_isolation);
          }),
        { transaction: { isolationLevel: 'SERIALIZABLE' } },
      );
      ctx.log.clear();

      const res = await request(app).get('/level').expect(200);

      expect(res.text).toBe('serializable');
      expect(ctx.log.matching(/^START TRANSACTION/)).toEqual(['START TRANSACTION ISOLATION LEVEL SERIALIZABLE']);
    });
  }

  if (onlyOn('mysql')) {
    test('transaction.isolationLevel is the level of the request’s transaction', async () => {
      const app = ctx.app(
        (a) =>
          a.get('/level', async (req, res) => {
            // InnoDB lists a transaction, with its level, for sure once it has written.
            await req.db.query("INSERT INTO items (name) VALUES ('level')");
            // information_schema.innodb_trx is a cache refreshed at most every 0.1 s: ask again until it lists us.
            let row: { level: string } | undefined;
            for (let attempt = 0; attempt < 10 && !row; attempt++) {
              if (attempt) await new Promise((resolve) => setTimeout(resolve, 150));
              [row] = await req.db.query(
                'SELECT trx_isolation_level AS level FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()',
              );
            }
            res.send(row?.level ?? 'no innodb_trx row');
          }),
        { transaction: { isolationLevel: 'SERIALIZABLE' } },
      );
      ctx.log.clear();

      const res = await request(app).get('/level').expect(200);

      expect(res.text).toBe('SERIALIZABLE');
      expect(ctx.log.matching(/^(SET TRANSACTION|START TRANSACTION)/)).toEqual([
        'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
        'START TRANSACTION',
      ]);
    });
  }
});
