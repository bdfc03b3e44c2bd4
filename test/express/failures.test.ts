/**
 * Failures around the request's transaction: late queries, client aborts, an exhausted pool (SQLite: a turn
 * lock held too long), a backend killed mid-request (servers only). In each case: no row written outside the transaction, the real error reported, the connection
 * released (checked after every test by the harness), and the process keeps serving.
 */
import http from 'node:http';
import request from 'supertest';
import type { NextFunction, Request, Response } from 'express';
import { AcquireTimeoutError, CommitError, TransactionClosedError, type TypeormSessionError } from '../../src/index.js';
import type { DataSource } from 'typeorm';
import { connectionId, holdFor, onlyOn, openTransactions, poolState } from '../helpers/dialect.js';
import {
  deferred,
  eventually,
  namedTable,
  names,
  sleep,
  slowCommitSchema,
  slowInsertSql,
  sql,
  testDialect,
  useDatabase,
  within,
  warm,
} from './harness.js';

const ctx = useDatabase([namedTable('items'), ...slowCommitSchema()], ['items', 'slow']);

const insert = (req: Request, name: string, table = 'items') => req.db.query(sql(`INSERT INTO ${table} (name) VALUES ($1)`), [name]);

/** No connection of `dataSource` is checked out or inside a transaction (SQLite: its one connection). */
const settled = async (dataSource: DataSource) => {
  const { total, idle, waiting } = poolState(dataSource);
  if (total !== idle || waiting !== 0) return false;
  return testDialect !== 'sqlite' || (await openTransactions(dataSource)) === 0;
};

/** Server-side ids of the connections in the pool: pg-pool's clients, mysql2's connections. */
function poolIds(dataSource: DataSource): string[] {
  const driver = dataSource.driver as unknown as {
    master?: { _clients: Array<{ processID?: number }> };
    pool?: { _allConnections: { length: number; get(i: number): { threadId?: number | null } } };
  };
  if (testDialect === 'postgres') return driver.master!._clients.map((c) => String(c.processID));
  const all = driver.pool!._allConnections;
  return Array.from({ length: all.length }, (_, i) => String(all.get(i).threadId));
}

/** Settles with the error a promise rejected with, or 'ok'. */
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ok' as const,
    (err: unknown) => err,
  );

describe('late queries are fenced', () => {
  test('a query sent right after res.send() is rejected and never persisted', async () => {
    const late = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/late', async (req, res) => {
        await insert(req, 'in-time');
        res.send('sent');
        late.resolve(await outcome(insert(req, 'late')));
      }),
    );

    await request(app).post('/late').expect(200, 'sent');
    const error = await within(late.promise, 5000, 'the late query to settle');

    expect(error).toBeInstanceOf(TransactionClosedError);
    expect((error as TypeormSessionError).code).toBe('ERR_TRANSACTION_CLOSED');
    expect(await names(ctx)).toEqual(['in-time']);
  });

  test('a query from a timer that fires while COMMIT is running is rejected, not run in autocommit', async () => {
    const late = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/late', async (req, res) => {
        await insert(req, 'slow-commit', 'slow');
        // COMMIT takes 300 ms (deferred trigger): this timer fires between COMMIT being sent and the release.
        setTimeout(() => outcome(insert(req, 'during-commit')).then(late.resolve), 50);
        res.send('sent');
      }),
    );

    await request(app).post('/late').expect(200);
    const error = await within(late.promise, 5000, 'the timer query to settle');

    expect(error).toBeInstanceOf(TransactionClosedError);
    expect(await names(ctx)).toEqual([]);
    expect(await names(ctx, 'slow')).toEqual(['slow-commit']);
  });

  test('a query from a timer that fires after the response is rejected and never persisted', async () => {
    const late = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/late', async (req, res) => {
        await insert(req, 'in-time');
        res.send('sent');
        res.on('finish', () => setTimeout(() => outcome(insert(req, 'after-finish')).then(late.resolve), 20));
      }),
    );

    await request(app).post('/late').expect(200);
    const error = await within(late.promise, 5000, 'the timer query to settle');
    await sleep(50);

    expect(error).toBeInstanceOf(TransactionClosedError);
    expect(await names(ctx)).toEqual(['in-time']);
  });

  test('a request that never used req.db rejects req.db after it finished, too', async () => {
    const late = deferred<unknown>();
    const app = ctx.app((a) =>
      a.get('/none', (req, res) => {
        res.send('none');
        setTimeout(() => outcome(Promise.resolve().then(() => insert(req, 'never'))).then(late.resolve), 20);
      }),
    );

    await request(app).get('/none').expect(200);

    expect(await within(late.promise, 5000, 'the late query')).toBeInstanceOf(TransactionClosedError);
    expect(await names(ctx)).toEqual([]);
  });
});

describe('client abort', () => {
  test('an abort mid-handler rolls back; the handler’s next query is rejected and its row never appears', async () => {
    const reached = deferred();
    const closed = deferred();
    const done = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/abort', async (req, res) => {
        try {
          await insert(req, 'before-abort');
          res.on('close', () => closed.resolve());
          reached.resolve();
          await closed.promise;
          const result = await outcome(insert(req, 'after-abort'));
          res.send('too late');
          done.resolve(result);
        } catch (err) {
          done.resolve(err);
        }
      }),
    );
    const port = await ctx.listen(app);
    ctx.log.clear();

    const client = http.request({ host: '127.0.0.1', port, path: '/abort', method: 'POST', agent: false });
    client.on('error', () => undefined);
    client.end();
    await within(reached.promise, 5000, 'the handler to start');
    client.destroy();
    const error = await within(done.promise, 5000, 'the handler to finish');

    expect(error).toBeInstanceOf(TransactionClosedError);
    expect(await eventually(async () => (await names(ctx)).length === 0 && (await settled(ctx.ds)))).toBe(true);
    expect(await names(ctx)).toEqual([]);
    expect(ctx.log.matching(/^(COMMIT|ROLLBACK)/)).toEqual(['ROLLBACK']);
  });

  test('an abort while a query is running rolls it back once it returns', async () => {
    const running = deferred();
    const done = deferred<unknown>();
    const app = ctx.app((a) =>
      a.post('/abort', async (req, res) => {
        const slowInsert = insert(req, 'x').then(() =>
          req.db.query(slowInsertSql('items', 'during-abort', 0.3)),
        );
        running.resolve();
        const result = await outcome(slowInsert);
        done.resolve(result === 'ok' ? await outcome(insert(req, 'after')) : result);
        res.end();
      }),
    );
    const port = await ctx.listen(app);

    const client = http.request({ host: '127.0.0.1', port, path: '/abort', method: 'POST', agent: false });
    client.on('error', () => undefined);
    client.end();
    await within(running.promise, 5000, 'the handler to start');
    await sleep(100);
    client.destroy();
    const error = await within(done.promise, 5000, 'the handler to finish');

    expect(error).toBeInstanceOf(TransactionClosedError);
    await eventually(() => settled(ctx.ds));
    expect(await names(ctx)).toEqual([]);
  });
});

describe('an exhausted pool', () => {
  // SQLite has no pool: there the same flood waits on the DataSource's turn lock, and a request that does not
  // get its turn within acquireTimeoutMs answers 503 the same way (one transaction at a time, not two).
  const label =
    testDialect === 'sqlite'
      ? '50 requests on one SQLite connection each get 200 or 503 from the turn lock, none hangs, and the lock ends free'
      : '50 requests on a 2-connection pool each get 200 or 503, none hangs, and the pool ends idle';
  test(label, async () => {
    const ds2 = await ctx.open({ poolSize: 2 } as never);
    const errors: unknown[] = [];
    const app = ctx.app(
      (a) => {
        a.get('/hold', async (req, res) => {
          await holdFor(req.db, 0.3);
          res.send('ok');
        });
        a.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
          errors.push(err);
          const status = (err as { status?: number }).status ?? 500;
          res.status(status).send(String((err as Error).message));
        });
      },
      { transaction: { acquireTimeoutMs: 500 } },
      ds2,
    );
    const port = await ctx.listen(app);
    const agent = new http.Agent({ maxSockets: Infinity });

    const statuses = await within(
      Promise.all(
        Array.from({ length: 50 }, () =>
          new Promise<number>((resolve, reject) => {
            http
              .get({ host: '127.0.0.1', port, path: '/hold', agent }, (res) => {
                res.resume();
                res.on('end', () => resolve(res.statusCode!));
              })
              .on('error', reject);
          }),
        ),
      ),
      30_000,
      'all 50 responses',
    );
    agent.destroy();

    const ok = statuses.filter((s) => s === 200).length;
    const unavailable = statuses.filter((s) => s === 503).length;
    expect(ok + unavailable).toBe(50);
    // A pool of 2 serves at least 2; SQLite's one connection serves at least one, then the next within 500 ms.
    expect(ok).toBeGreaterThanOrEqual(2);
    expect(unavailable).toBeGreaterThanOrEqual(1);
    expect(errors).toHaveLength(unavailable);
    for (const err of errors) expect(err).toBeInstanceOf(AcquireTimeoutError);
    // Connections handed over after their waiter gave up must go back to the pool, not leak.
    expect(await eventually(() => settled(ds2), 5000)).toBe(true);
    // TypeORM lists no runner as connected that is already released (its destroy() would spin on it forever).
    const driver = ds2.driver as unknown as { connectedQueryRunners?: Array<{ isReleased: boolean }> };
    expect((driver.connectedQueryRunners ?? []).filter((runner) => runner.isReleased)).toEqual([]);
    // And the pool (SQLite: the lock) still serves.
    await request(app).get('/hold').expect(200, 'ok');
  });
});

// SQLite has no server connection that another client could end.
if (onlyOn('postgres', 'mysql')) describe('the backend killed mid-request', () => {
  function killApp(after: 'query' | 'respond') {
    const errors: TypeormSessionError[] = [];
    const handlerErrors: unknown[] = [];
    const pid = deferred<string>();
    const killed = deferred();
    const app = ctx.app(
      (a) => {
        a.post('/work', async (req, res) => {
          await insert(req, 'before-kill');
          pid.resolve(await connectionId(req.db));
          await killed.promise;
          if (after === 'query') await insert(req, 'after-kill');
          res.send('looks fine');
        });
        a.get('/next', async (req, res) => {
          await insert(req, 'next');
          res.send('next ok');
        });
        a.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
          handlerErrors.push(err);
          res.status(500).send('handled');
        });
      },
      { onError: (e) => errors.push(e) },
    );
    return { app, errors, handlerErrors, pid, killed };
  }

  /**
   * What the driver says about a connection the server ended: PostgreSQL "terminating connection due to
   * administrator command" / "Connection terminated"; mysql2 "Connection lost: The server closed the
   * connection" or, writing on the dead socket, "This socket has been ended by the other party".
   */
  const killedCause = testDialect === 'mysql' ? /ended by the other party|connection lost|closed the connection/i : /terminat|connection/i;

  async function kill(pid: string) {
    const before = poolState(ctx.ds).total;
    // From a connection of its own, outside the pool under test.
    if (testDialect === 'mysql') await ctx.sql(`KILL ${Number(pid)}`);
    else await ctx.sql('SELECT pg_terminate_backend($1)', [Number(pid)]);
    // Until TypeORM has seen the connection die and released the runner (the case that hid the real cause).
    expect(await eventually(() => poolState(ctx.ds).total < before && !poolIds(ctx.ds).includes(pid), 5000)).toBe(true);
  }

  test('a query after the kill fails with the real cause, the client gets 500, the next request succeeds', async () => {
    const { app, handlerErrors, pid, killed } = killApp('query');
    const port = await ctx.listen(app);

    const response = request(`http://127.0.0.1:${port}`).post('/work').then((r) => r);
    await kill(await within(pid.promise, 5000, 'the handler'));
    killed.resolve();
    const res = await within(response, 5000, 'the response');

    expect(res.status).toBe(500);
    expect(handlerErrors).toHaveLength(1);
    const err = handlerErrors[0] as Error;
    expect(err.name).not.toBe('QueryRunnerAlreadyReleasedError');
    expect(err.message).toMatch(killedCause);
    expect(err.message).not.toMatch(/already released/i);
    await request(`http://127.0.0.1:${port}`).get('/next').expect(200, 'next ok');
    expect(await names(ctx)).toEqual(['next']);
  });

  test('a COMMIT after the kill answers 500 and reports the real cause, not "already released"', async () => {
    const { app, errors, pid, killed } = killApp('respond');
    const port = await ctx.listen(app);

    const response = request(`http://127.0.0.1:${port}`).post('/work').then((r) => r);
    await kill(await within(pid.promise, 5000, 'the handler'));
    killed.resolve();
    const res = await within(response, 5000, 'the response');

    expect(res.status).toBe(500);
    expect(res.text).not.toBe('looks fine');
    const commitErrors = errors.filter((e) => e instanceof CommitError);
    expect(commitErrors).toHaveLength(1);
    const cause = commitErrors[0]!.cause as Error;
    expect(cause.name).not.toBe('QueryRunnerAlreadyReleasedError');
    expect(cause.message).toMatch(killedCause);
    await request(`http://127.0.0.1:${port}`).get('/next').expect(200, 'next ok');
    expect(await names(ctx)).toEqual(['next']);
  });
});

// SQLite's connection is no event emitter: the library attaches no listener to it.
if (onlyOn('postgres', 'mysql')) describe('pooled connections', () => {
  test('serving many requests adds no listeners to the pooled connection', async () => {
    const ds1 = await ctx.open({ poolSize: 1 } as never);
    const app = ctx.app(
      (a) =>
        a.get('/q', async (req, res) => {
          await req.db.query('SELECT 1');
          res.send('ok');
        }),
      {},
      ds1,
    );
    type Emitter = { listenerCount(e: string): number };
    const driver = ds1.driver as unknown as {
      master?: { _clients: Emitter[] };
      pool?: { _allConnections: { length: number; get(i: number): Emitter } };
    };
    const client = () => (testDialect === 'postgres' ? driver.master!._clients[0]! : driver.pool!._allConnections.get(0));

    await request(app).get('/q').expect(200);
    const listeners = client().listenerCount('error');
    for (let i = 0; i < 15; i++) await request(app).get('/q').expect(200);

    expect(client().listenerCount('error')).toBe(listeners);
  });

  // The window the fault suite (test/faults.test.ts) hits by chance, made to happen every time: a pool hands a
  // returned connection to a waiting TypeORM runner synchronously, and TypeORM adds its 'error' listener a
  // promise tick later; an error emitted in between (process.nextTick runs before promise callbacks) has
  // only the listeners the connection already had. Without one of ours it would end the process.
  test('an error a connection emits while the pool hands it from one runner to the next is heard', async () => {
    const ds1 = await ctx.open({ poolSize: 1 } as never);
    const app = ctx.app((a) => a.get('/', (_req, res) => void res.send('ok')), {}, ds1);
    await warm(app);
    const first = ds1.createQueryRunner();
    await first.query('SELECT 1');
    const connection = (first as unknown as { databaseConnection: { emit(event: string, err: Error): boolean } }).databaseConnection;
    const second = ds1.createQueryRunner();
    const waiting = second.connect();

    const emitted = await new Promise<unknown[]>((resolve) =>
      setImmediate(() => {
        void first.release();
        process.nextTick(() => {
          const outcomes: unknown[] = [];
          // Twice: mysql2's pooled connection listens once by itself.
          for (let i = 0; i < 2; i++) {
            try {
              outcomes.push(connection.emit('error', new Error(`simulated termination ${i}`)));
            } catch (err) {
              outcomes.push(err);
            }
          }
          resolve(outcomes);
        });
      }),
    );
    await waiting;
    await second.release();
    // mysql2 takes a connection that emitted 'error' out of its pool without closing it: close it here, or its
    // socket outlives the DataSource and keeps the test process alive.
    if (testDialect === 'mysql') (connection as unknown as { destroy(): void }).destroy();

    expect(emitted).toEqual([true, true]);
  });
});
