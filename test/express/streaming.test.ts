/**
 * Streamed responses: the transaction commits before the first byte leaves, queries after that are rejected,
 * req.commit() commits explicitly, and a failure after bytes have left breaks the response instead of letting
 * it complete cleanly.
 */
import request from 'supertest';
import type { Request } from 'express';
import { CommitError, TransactionClosedError, type TypeormSessionError } from '../../src/index.js';
import { commitFailure } from '../helpers/dialect.js';
import { count, deferred, namedTable, names, rawRequest, sleep, slowCommitSchema, sql, useDatabase, warm, within } from './harness.js';

const ctx = useDatabase(
  [namedTable('items'), ...(commitFailure?.schema ?? []), ...slowCommitSchema()],
  ['items', 'uniq', 'slow'],
);

const insert = (req: Request, name: string, table = 'items') => req.db.query(sql(`INSERT INTO ${table} (name) VALUES ($1)`), [name]);
const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ok' as const,
    (err: unknown) => err,
  );

test('rows written before the first res.write() are committed when the first chunk reaches the client', async () => {
  const more = deferred();
  const app = ctx.app((a) =>
    a.get('/stream', async (req, res) => {
      await insert(req, 'streamed', 'slow');
      res.type('text/plain');
      res.write('first;');
      await more.promise;
      res.write('second;');
      res.end('last');
    }),
  );
  const port = await ctx.listen(app);

  const response = await rawRequest(port, '/stream');
  const first = await response.nextChunk();
  // COMMIT takes 300 ms (deferred trigger): the chunk can only be here this early if the commit came first.
  const seen = await names(ctx, 'slow');
  more.resolve();
  const rest = await response.rest();

  expect(response.res.statusCode).toBe(200);
  expect(first).toBe('first;');
  expect(seen).toEqual(['streamed']);
  expect(rest).toMatchObject({ body: 'second;last', complete: true });
});

test('flushHeaders() (server-sent events) commits before the headers leave', async () => {
  const more = deferred();
  const app = ctx.app((a) =>
    a.get('/events', async (req, res) => {
      await insert(req, 'subscribed', 'slow');
      res.setHeader('Content-Type', 'text/event-stream');
      res.flushHeaders();
      await more.promise;
      res.end('data: bye\n\n');
    }),
  );
  const port = await ctx.listen(app);

  const response = await rawRequest(port, '/events');
  const seen = await names(ctx, 'slow');
  more.resolve();
  const rest = await response.rest();

  expect(response.res.headers['content-type']).toBe('text/event-stream');
  expect(seen).toEqual(['subscribed']);
  expect(rest).toMatchObject({ body: 'data: bye\n\n', complete: true });
});

test('a req.db query after the first write is rejected and its row never appears', async () => {
  const late = deferred<unknown>();
  const app = ctx.app((a) =>
    a.get('/stream', async (req, res) => {
      await insert(req, 'before-write');
      res.write('a');
      const result = await outcome(insert(req, 'after-write'));
      late.resolve(result);
      res.end(result instanceof TransactionClosedError ? 'rejected' : 'ran');
    }),
  );

  const res = await request(app).get('/stream');

  expect(res.status).toBe(200);
  expect(res.text).toBe('arejected');
  expect(await late.promise).toBeInstanceOf(TransactionClosedError);
  expect(await names(ctx)).toEqual(['before-write']);
});

test('await req.commit() commits at once; later queries are rejected; the stream then flows', async () => {
  const app = ctx.app((a) =>
    a.get('/commit', async (req, res) => {
      await insert(req, 'committed');
      await req.commit();
      const visible = (await ctx.sql('SELECT name FROM items')).map((r) => r.name);
      const late = await outcome(insert(req, 'after-commit'));
      res.write(JSON.stringify(visible));
      await sleep(10);
      res.write(`;${late instanceof TransactionClosedError ? 'rejected' : 'ran'}`);
      res.end(';end');
    }),
  );

  const res = await request(app).get('/commit');

  expect(res.status).toBe(200);
  expect(res.text).toBe('["committed"];rejected;end');
  expect(await names(ctx)).toEqual(['committed']);
});

// MySQL/MariaDB have no commit-time failure to provoke (no deferred constraints): see commitFailure.
if (commitFailure) test('a failing req.commit() rejects in the handler, which answers the error; nothing is kept', async () => {
  const errors: TypeormSessionError[] = [];
  let thrown: unknown;
  const app = ctx.app(
    (a) =>
      a.get('/commit', async (req, res) => {
        await insert(req, 'doomed');
        await req.db.query(commitFailure!.statement('a'));
        try {
          await req.commit();
        } catch (err) {
          thrown = err;
          res.status(500).send('commit failed');
          return;
        }
        res.send('streamed');
      }),
    { onError: (e) => errors.push(e) },
  );

  const res = await request(app).get('/commit');

  expect(res.status).toBe(500);
  expect(res.text).toBe('commit failed');
  expect(thrown).toBeInstanceOf(CommitError);
  expect(((thrown as CommitError).cause as { code?: string }).code).toBe(commitFailure!.code);
  expect(await names(ctx)).toEqual([]);
});

// MySQL/MariaDB have no commit-time failure to provoke (no deferred constraints): see commitFailure.
if (commitFailure) test('a commit failing at the first write answers 500, and the handler writing on does not crash the process', async () => {
  const finished = deferred<unknown>();
  const app = ctx.app((a) =>
    a.get('/stream', async (req, res) => {
      try {
        await insert(req, 'doomed');
        await req.db.query(commitFailure!.statement('b'));
        res.write('first;');
        await sleep(50);
        res.write('second;');
        res.end('last');
        await sleep(50);
        finished.resolve('done');
      } catch (err) {
        finished.resolve(err);
      }
    }),
  );
  const port = await ctx.listen(app);

  const response = await rawRequest(port, '/stream');
  const rest = await response.rest();

  expect(response.res.statusCode).toBe(500);
  expect(rest.body).toBe('Internal Server Error');
  expect(await within(finished.promise, 5000, 'the handler')).toBe('done');
  expect(await names(ctx)).toEqual([]);
});

test('a session save failing after the first chunk left breaks the response: never a clean completion', async () => {
  const more = deferred();
  const errors: TypeormSessionError[] = [];
  const app = ctx.app(
    (a) =>
      a.get('/stream', async (req, res) => {
        (req.session as unknown as Record<string, unknown>).streamed = true;
        await insert(req, 'streamed');
        res.write('first;');
        await more.promise;
        res.end('last');
      }),
    { onError: (e) => errors.push(e) },
  );
  await warm(app);
  const port = await ctx.listen(app);

  const response = await rawRequest(port, '/stream');
  const first = await response.nextChunk();
  // A real failure of the session write that happens at end(): its column is gone.
  await ctx.sql('ALTER TABLE sessions RENAME COLUMN data TO data_moved');
  let rest: Awaited<ReturnType<typeof response.rest>>;
  try {
    more.resolve();
    rest = await within(response.rest(), 5000, 'the end of the response');
  } finally {
    await ctx.sql('ALTER TABLE sessions RENAME COLUMN data_moved TO data');
  }

  expect(response.res.statusCode).toBe(200);
  expect(first).toBe('first;');
  // express-session writes the final chunk before saving (express-session #538), so it may arrive; what never
  // arrives is the end of the body: the client cannot take this for a complete response.
  expect(rest.complete).toBe(false);
  // The rows were committed before the first byte; only the session write failed.
  expect(await names(ctx)).toEqual(['streamed']);
  expect(await count(ctx, 'sessions')).toBe(0);
});
