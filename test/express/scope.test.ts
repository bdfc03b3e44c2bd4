/**
 * The request scope seen from code far from `req`: currentManager() and withTransaction(). Nested scopes are
 * savepoints on the request's own connection, run one at a time; the async context survives body parsers and
 * ends with the request.
 */
import http from 'node:http';
import request from 'supertest';
import type { Request } from 'express';
import { currentManager, NoRequestScopeError, withTransaction } from '../../src/index.js';
import type { EntityManager } from 'typeorm';
import { connectionId, onlyOn } from '../helpers/dialect.js';
import { deferred, eventually, express, namedTable, names, sleep, sql, testDialect, useDatabase, within } from './harness.js';

const ctx = useDatabase([namedTable('items')], ['items']);

const insert = (req: Request, name: string) => req.db.query(sql(`INSERT INTO items (name) VALUES ($1)`), [name]);
/** The server's id for the connection behind `manager` (a constant on SQLite, which has one connection). */
const pidOf = (manager: EntityManager) => connectionId(manager);
const BEGIN = /^(START TRANSACTION|BEGIN)/;

describe('withTransaction', () => {
  test('runs on the request’s own connection, as a savepoint of its transaction', async () => {
    const app = ctx.app((a) =>
      a.get('/pids', async (req, res) => {
        const outer = await pidOf(req.db);
        const nested = await withTransaction((m) => pidOf(m));
        const viaContext = await withTransaction(() => pidOf(currentManager()));
        res.json({ outer, nested, viaContext });
      }),
    );
    ctx.log.clear();

    const res = await request(app).get('/pids').expect(200);

    expect(res.body.nested).toBe(res.body.outer);
    expect(res.body.viaContext).toBe(res.body.outer);
    expect(ctx.log.matching(BEGIN)).toHaveLength(1);
    expect(ctx.log.matching(/^SAVEPOINT/)).toHaveLength(2);
  });

  test('a nested scope that throws rolls back only its own rows; the request commits the rest', async () => {
    const app = ctx.app((a) =>
      a.post('/nested', async (req, res) => {
        await insert(req, 'outer');
        await withTransaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('kept')`);
        });
        const error = await withTransaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('discarded')`);
          throw new Error('nested failure');
        }).catch((err: Error) => err.message);
        await withTransaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('level-1')`);
          await withTransaction(async (inner) => {
            await inner.query(`INSERT INTO items (name) VALUES ('level-2-discarded')`);
            throw new Error('inner');
          }).catch(() => undefined);
        });
        await insert(req, 'outer-after');
        res.send(error);
      }),
    );

    await request(app).post('/nested').expect(200, 'nested failure');

    expect(await names(ctx)).toEqual(['outer', 'kept', 'level-1', 'outer-after']);
  });

  test('concurrent nested scopes in Promise.all do not collide: all rows, unique savepoints, no error', async () => {
    const app = ctx.app((a) =>
      a.post('/parallel', async (req, res) => {
        await insert(req, 'outer');
        const results = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            withTransaction(async (m) => {
              await m.query(sql(`INSERT INTO items (name) VALUES ($1)`), [`p${i}-a`]);
              await new Promise((r) => setTimeout(r, 5 * (6 - i)));
              await m.query(sql(`INSERT INTO items (name) VALUES ($1)`), [`p${i}-b`]);
              return i;
            }),
          ),
        );
        res.json(results);
      }),
    );
    ctx.log.clear();

    const res = await request(app).post('/parallel').expect(200);

    expect(res.body).toEqual([0, 1, 2, 3, 4, 5]);
    const rows = await names(ctx);
    expect(rows).toHaveLength(13);
    expect(new Set(rows)).toEqual(new Set(['outer', ...[0, 1, 2, 3, 4, 5].flatMap((i) => [`p${i}-a`, `p${i}-b`])]));
    // Serialised: each sibling's two rows are adjacent (no interleaving inside one savepoint).
    for (let i = 0; i < 6; i++) expect(rows.indexOf(`p${i}-b`)).toBe(rows.indexOf(`p${i}-a`) + 1);
    const savepoints = ctx.log.matching(/^SAVEPOINT /);
    expect(savepoints).toHaveLength(6);
    expect(new Set(savepoints).size).toBe(6);
    expect(ctx.log.matching(/^RELEASE SAVEPOINT /)).toHaveLength(6);
    expect(ctx.log.matching(/^ROLLBACK/)).toEqual([]);
  });

  test('can be the first use of the database in a request', async () => {
    const app = ctx.app((a) =>
      a.post('/first', async (req, res) => {
        const nested = await withTransaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('first')`);
          return pidOf(m);
        });
        res.json({ nested, outer: await pidOf(req.db) });
      }),
    );
    ctx.log.clear();

    const res = await request(app).post('/first').expect(200);

    expect(res.body.nested).toBe(res.body.outer);
    expect(await names(ctx)).toEqual(['first']);
    expect(ctx.log.matching(/^(START TRANSACTION|BEGIN|SAVEPOINT|RELEASE|COMMIT)/).map((q) => q.split(' ')[0])).toEqual([
      testDialect === 'sqlite' ? 'BEGIN' : 'START',
      'SAVEPOINT',
      'RELEASE',
      'COMMIT',
    ]);
  });

  test('a failing sibling in Promise.all rolls back only itself', async () => {
    const app = ctx.app((a) =>
      a.post('/parallel', async (req, res) => {
        const settled = await Promise.allSettled(
          ['x', 'y', 'z'].map((name) =>
            withTransaction(async (m) => {
              await m.query(sql(`INSERT INTO items (name) VALUES ($1)`), [name]);
              if (name === 'y') throw new Error('y fails');
            }),
          ),
        );
        await insert(req, 'outer');
        res.json(settled.map((s) => s.status));
      }),
    );

    const res = await request(app).post('/parallel').expect(200);

    expect(res.body).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await names(ctx)).toEqual(['x', 'z', 'outer']);
  });

  test('TypeORM’s own manager.transaction() inside a request is a savepoint on the same connection', async () => {
    const app = ctx.app((a) =>
      a.post('/typeorm', async (req, res) => {
        const outer = await pidOf(req.db);
        const inner = await req.db.transaction(async (m) => {
          await m.query(`INSERT INTO items (name) VALUES ('typeorm-kept')`);
          return pidOf(m);
        });
        await req.db
          .transaction(async (m) => {
            await m.query(`INSERT INTO items (name) VALUES ('typeorm-discarded')`);
            throw new Error('inner');
          })
          .catch(() => undefined);
        await insert(req, 'outer');
        res.json({ outer, inner });
      }),
    );
    ctx.log.clear();

    const res = await request(app).post('/typeorm').expect(200);

    expect(res.body.inner).toBe(res.body.outer);
    expect(await names(ctx)).toEqual(['typeorm-kept', 'outer']);
    expect(ctx.log.matching(BEGIN)).toHaveLength(1);
    expect(ctx.log.matching(/^COMMIT/)).toHaveLength(1);
  });

  test('the request failing rolls back nested scopes that had succeeded', async () => {
    const app = ctx.app((a) =>
      a.post('/fail', async (_req, res) => {
        await withTransaction((m) => m.query(`INSERT INTO items (name) VALUES ('nested')`));
        res.status(500).send('failed');
      }),
    );

    await request(app).post('/fail').expect(500);

    expect(await names(ctx)).toEqual([]);
  });

  test('outside a request, withTransaction() and currentManager() throw NoRequestScopeError', async () => {
    await expect(withTransaction(async () => 1)).rejects.toBeInstanceOf(NoRequestScopeError);
    expect(() => currentManager()).toThrow(NoRequestScopeError);
  });
});

describe('the async context', () => {
  test('survives express.json() mounted after sessionStore, with the body arriving in pieces', async () => {
    const app = ctx.app((a) => {
      a.use(express.json());
      a.use(express.urlencoded({ extended: false }));
      a.post('/body', async (req, res) => {
        const fromContext = await pidOf(currentManager());
        const fromReq = await pidOf(req.db);
        await currentManager().query(sql(`INSERT INTO items (name) VALUES ($1)`), [req.body.name]);
        res.json({ fromContext, fromReq, body: req.body });
      });
    });
    const port = await ctx.listen(app);

    const send = (type: string, parts: string[]) =>
      new Promise<{ status: number; body: any }>((resolve, reject) => {
        const client = http.request(
          { host: '127.0.0.1', port, path: '/body', method: 'POST', agent: false, headers: { 'Content-Type': type } },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
          },
        );
        client.on('error', reject);
        // The body parser's 'data' and 'end' events then come from later socket reads, outside the
        // request's original async context.
        client.write(parts[0]);
        setTimeout(() => client.end(parts[1]), 50);
      });

    const json = await send('application/json', ['{"name":', '"from-json"}']);
    const form = await send('application/x-www-form-urlencoded', ['name=from-', 'form']);

    for (const res of [json, form]) {
      expect(res.status).toBe(200);
      expect(res.body.fromContext).toBe(res.body.fromReq);
    }
    expect(json.body.body).toEqual({ name: 'from-json' });
    expect(form.body.body).toEqual({ name: 'from-form' });
    expect(await names(ctx)).toEqual(['from-json', 'from-form']);
  });

  // Two transactions at once need two connections: SQLite serialises them instead (the test after this one).
  if (onlyOn('postgres', 'mysql')) test('concurrent requests each see their own transaction through currentManager()', async () => {
    const arrived: Array<() => void> = [];
    const both = deferred();
    const app = ctx.app((a) =>
      a.get('/mine', async (req, res) => {
        const own = await pidOf(req.db);
        arrived.push(() => undefined);
        if (arrived.length === 2) both.resolve();
        await both.promise;
        const seen = await pidOf(currentManager());
        res.json({ own, seen });
      }),
    );
    const port = await ctx.listen(app);
    const base = `http://127.0.0.1:${port}`;

    const [a, b] = await within(Promise.all([request(base).get('/mine'), request(base).get('/mine')]), 10_000, 'both');

    expect(a!.body.seen).toBe(a!.body.own);
    expect(b!.body.seen).toBe(b!.body.own);
    expect(a!.body.own).not.toBe(b!.body.own);
  });

  // SQLite's one connection: a second request's transaction waits for the first one's end (the turn lock).
  if (onlyOn('sqlite')) test('concurrent requests are serialised, each seeing its own transaction through currentManager()', async () => {
    const events: string[] = [];
    const app = ctx.app((a) =>
      a.get('/mine/:who', async (req, res) => {
        const who = req.params.who!;
        events.push(`${who} arrives`);
        await insert(req, who);
        events.push(`${who} has the transaction`);
        // a keeps its transaction until b has arrived and asked for its own: were they not serialised, b's
        // would start here, inside a's.
        if (who === 'a') await eventually(() => events.includes('b arrives'), 5000);
        await sleep(20);
        const seen = (await currentManager().query(sql('SELECT name FROM items ORDER BY id'))).map((r: { name: string }) => r.name);
        events.push(`${who} done`);
        res.json({ seen });
      }),
    );
    const port = await ctx.listen(app);
    const base = `http://127.0.0.1:${port}`;

    const first = request(base).get('/mine/a').then((r) => r);
    expect(await eventually(() => events.includes('a has the transaction'), 5000)).toBe(true);
    const [a, b] = await within(Promise.all([first, request(base).get('/mine/b')]), 10_000, 'both');

    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    // a saw only its own row; b, which ran after a committed, sees a's row and its own.
    expect(a.body.seen).toEqual(['a']);
    expect(b.body.seen).toEqual(['a', 'b']);
    expect(events.filter((e) => !e.endsWith('arrives'))).toEqual(['a has the transaction', 'a done', 'b has the transaction', 'b done']);
    expect(events.indexOf('b arrives')).toBeLessThan(events.indexOf('a done'));
  });

  test('a timer that fires after the response gets NoRequestScopeError from currentManager()', async () => {
    const fromTimer = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/timer', async (req, res) => {
        await insert(req, 'in-request');
        res.on('finish', () =>
          setTimeout(() => {
            try {
              currentManager();
              fromTimer.resolve('no error');
            } catch (err) {
              fromTimer.resolve(err);
            }
          }, 20),
        );
        res.send('ok');
      }),
    );

    await request(app).post('/timer').expect(200);
    const error = await within(fromTimer.promise, 5000, 'the timer');

    expect(error).toBeInstanceOf(NoRequestScopeError);
    expect((error as NoRequestScopeError).code).toBe('ERR_NO_REQUEST_SCOPE');
    expect(await names(ctx)).toEqual(['in-request']);
  });
});
