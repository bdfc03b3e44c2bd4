import express from 'express';
import Koa from 'koa';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { sessionStore, type TypeormSessionError } from '../src/index.js';
import { koaSessionStore } from '../src/koa.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { onlyOn } from './helpers/dialect.js';

// A SERIALIZABLE transaction that loses to a concurrent one fails at COMMIT with 40001 (on CockroachDB and
// YugabyteDB this is the everyday case). Nothing was kept, so the client is told to retry: 503 + Retry-After.
// PostgreSQL shows it with two overlapping read-then-write transactions (write skew).
if (onlyOn('postgres')) {
  let db: TestDatabase;
  let dataSource: DataSource;
  beforeAll(async () => {
    db = await createTestDatabase();
    dataSource = await openDataSource(db.url);
    await dataSource.query('CREATE TABLE doctors (id int PRIMARY KEY, on_call boolean NOT NULL)');
  });
  afterAll(async () => {
    await dataSource.destroy();
    await db.drop();
  });
  beforeEach(() => dataSource.query('DELETE FROM doctors; INSERT INTO doctors VALUES (1, true), (2, true)'));

  /** Two requests each take "their" doctor off call if the other one is still on call; both read first. */
  const writeSkew = (send: (id: number) => Promise<request.Response>) => Promise.all([send(1), send(2)]);

  function makeBarrier(parties: number) {
    let waiting: Array<() => void> = [];
    return {
      arrive: () =>
        new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (waiting.length === parties) {
            waiting.forEach((r) => r());
            waiting = [];
          }
        }),
    };
  }

  test('Express: the losing commit answers 503 with Retry-After; the winner commits', async () => {
    const errors: TypeormSessionError[] = [];
    const barrier = makeBarrier(2);
    const app = express();
    app.use(sessionStore({ dataSource, secret: 's', transaction: { isolationLevel: 'SERIALIZABLE' }, onError: (e) => errors.push(e) }));
    app.post('/off/:id', async (req, res) => {
      const [{ n }] = await req.db.query('SELECT count(*)::int AS n FROM doctors WHERE on_call');
      await barrier.arrive();
      if (n >= 2) await req.db.query('UPDATE doctors SET on_call = false WHERE id = $1', [Number(req.params.id)]);
      res.json({ ok: true });
    });
    const responses = await writeSkew((id) => request(app).post(`/off/${id}`));
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 503]);
    const loser = responses.find((r) => r.status === 503)!;
    expect(loser.headers['retry-after']).toBe('1');
    // PostgreSQL raises the 40001 at the loser's UPDATE or at its COMMIT, depending on timing: at COMMIT it
    // reaches onError as a retryable CommitError; at the UPDATE it is the handler's error, marked 503 itself.
    for (const e of errors) {
      expect([e.code, (e.cause as { code?: string }).code, (e as { retryable?: boolean }).retryable]).toEqual([
        'ERR_TRANSACTION_COMMIT',
        '40001',
        true,
      ]);
    }
    expect(errors.length).toBeLessThanOrEqual(1);
    const [{ n }] = await dataSource.query('SELECT count(*)::int AS n FROM doctors WHERE on_call');
    expect(n).toBe(1);
  });

  test('Koa: the same', async () => {
    const barrier = makeBarrier(2);
    const app = new Koa();
    app.keys = ['k'];
    app.use(koaSessionStore(app, { dataSource, transaction: { isolationLevel: 'SERIALIZABLE' } }));
    app.use(async (ctx) => {
      const [{ n }] = await ctx.db.query('SELECT count(*)::int AS n FROM doctors WHERE on_call');
      await barrier.arrive();
      if (n >= 2) await ctx.db.query('UPDATE doctors SET on_call = false WHERE id = $1', [Number(ctx.path.slice(1))]);
      ctx.body = { ok: true };
    });
    const server = app.callback();
    const responses = await writeSkew((id) => request(server).post(`/${id}`));
    expect(responses.map((r) => r.status).sort()).toEqual([200, 503]);
    expect(responses.find((r) => r.status === 503)!.headers['retry-after']).toBe('1');
    const [{ n }] = await dataSource.query('SELECT count(*)::int AS n FROM doctors WHERE on_call');
    expect(n).toBe(1);
  });
} else {
  // Serialization failures at COMMIT are a PostgreSQL-family behaviour (MySQL's SERIALIZABLE locks instead;
  // SQLite runs one writer at a time). What other databases answer is covered by isRetryable's unit test.
  test('isRetryable knows each database\'s "try again" errors', async () => {
    const { driverDialect } = await import('../src/dialects/index.js');
    const isRetryable = (name: 'postgres' | 'mysql' | 'sqlite', err: unknown) => driverDialect(name).isRetryable(err);
    expect(isRetryable('mysql', { driverError: { code: 'ER_LOCK_DEADLOCK' } })).toBe(true);
    expect(isRetryable('mysql', { code: 'ER_DUP_ENTRY' })).toBe(false);
    expect(isRetryable('sqlite', new Error('SQLITE_BUSY: database is locked'))).toBe(true);
    expect(isRetryable('sqlite', new Error('UNIQUE constraint failed'))).toBe(false);
  });
}
