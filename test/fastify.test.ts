/**
 * The Fastify adapter against a real database (TEST_DB): request.session on the TypeORM store, and request.db,
 * the request's transaction: taken lazily, committed in onSend before Fastify writes a byte (streams included),
 * rolled back on every kind of failure, fenced once it ends, and shared with the session writes.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import {
  currentManager,
  fastifySessionStore,
  signIn,
  signOut,
  signOutOtherSessions,
  withTransaction,
  type FastifySessionStoreOptions,
} from '../src/fastify.js';
import { AcquireTimeoutError, CommitError, MiddlewareOrderError, NoRequestScopeError, TransactionClosedError, type TypeormSessionError } from '../src/index.js';
import { signedValue } from '../src/session-cookie.js';
import { commitFailure, connectionId, holdFor, onlyOn, poolState, sql as dialectSql, testDialect } from './helpers/dialect.js';
import { deferred, eventually, within, type Deferred } from './helpers/async.js';
import { rawRequest } from './helpers/raw-http.js';
import { cookieOf, names, namedTable, slowCommitSchema, useDatabase } from './express/harness.js';

// ---- harness: the Express suites' database context (fresh database, pool and transaction checks after each
// test), with Fastify apps closed before those checks run -----------------------------------------------------

const apps: FastifyInstance[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) {
    app.server.closeAllConnections();
    await app.close();
  }
});
const ctx = useDatabase(
  [namedTable('items'), namedTable('users'), ...slowCommitSchema(), ...(commitFailure?.schema ?? [])],
  ['items', 'users', 'slow', 'uniq', ...(testDialect === 'sqlite' ? ['uniq_parent'] : [])],
);

interface TestApp {
  app: FastifyInstance;
  /** Errors that reached Fastify's error handling (onError hook). */
  errors: unknown[];
  /** Errors the plugin reported through onError. */
  reported: TypeormSessionError[];
  /** Base URL of the listening server. */
  url: string;
  port: number;
}

/** A Fastify app with the plugin registered, the test's routes, listening on an ephemeral port. */
async function fastifyApp(
  routes: (app: FastifyInstance) => void,
  options: Partial<FastifySessionStoreOptions> = {},
  dataSource: DataSource = ctx.ds,
): Promise<TestApp> {
  const app = Fastify();
  apps.push(app);
  const errors: unknown[] = [];
  const reported: TypeormSessionError[] = [];
  await app.register(fastifySessionStore, { dataSource, secret: 'test-secret', onError: (err) => reported.push(err), ...options });
  app.addHook('onError', (_request, _reply, error, done) => {
    errors.push(error);
    done();
  });
  routes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { app, errors, reported, url: `http://127.0.0.1:${port}`, port };
}

const log = () => ctx.log;
/** BEGIN as TypeORM spells it on each database reads START TRANSACTION here. */
const txStatements = () =>
  log()
    .matching(/^(START TRANSACTION|BEGIN|COMMIT|ROLLBACK)/i)
    .map((q) => (/^BEGIN/i.test(q) ? 'START TRANSACTION' : q));
const insert = (req: FastifyRequest, name: string, table = 'items') => req.db.query(dialectSql(`INSERT INTO ${table} (name) VALUES ($1)`), [name]);
// Live rows only: a destroyed session stays as a dead row (expires_at negated) until its expiry.
const sessionRows = () => ctx.sql<{ data: string; user_id: string | null }>('SELECT data, user_id FROM sessions WHERE expires_at > 0');
const setCookies = (res: { headers: Record<string, unknown> }) => (res.headers['set-cookie'] as string[] | undefined) ?? [];

/** INSERT ... RETURNING id; MySQL has no RETURNING: LAST_INSERT_ID() on the same connection instead. */
async function insertUser(req: FastifyRequest, email: string): Promise<string> {
  if (testDialect !== 'mysql') return String((await req.db.query(dialectSql(`INSERT INTO users (name) VALUES ($1) RETURNING id`), [email]))[0].id);
  await req.db.query('INSERT INTO users (name) VALUES (?)', [email]);
  return String((await req.db.query('SELECT LAST_INSERT_ID() AS id'))[0].id);
}

// ---- 1. lazy acquisition ---------------------------------------------------------------------------------------

describe('lazy acquisition', () => {
  test('a route that never touches request.db sends no statement at all', async () => {
    const t = await fastifyApp((app) => app.get('/plain', async () => 'plain'));
    await t.app.sessionStore.ready();
    log().clear();

    const res = await request(t.url).get('/plain');

    expect(res.status).toBe(200);
    expect(res.text).toBe('plain');
    expect(log().queries).toEqual([]);
  });

  test('the first query opens the transaction, and one request is one transaction', async () => {
    const t = await fastifyApp((app) =>
      app.post('/two', async (req) => {
        await insert(req, 'one');
        await insert(req, 'two');
        return 'ok';
      }),
    );
    await t.app.sessionStore.ready();
    log().clear();

    await request(t.url).post('/two').expect(200);

    expect(txStatements()).toEqual(['START TRANSACTION', 'COMMIT']);
    expect(await names(ctx)).toEqual(['one', 'two']);
  });
});

// ---- 2. commit before the first byte ----------------------------------------------------------------------------

describe('the commit happens before Fastify answers', () => {
  test('the row is visible from another connection when the status line arrives', async () => {
    const t = await fastifyApp((app) =>
      app.post('/slow', async (req, reply) => {
        await insert(req, 'committed', 'slow');
        reply.code(201);
        return { ok: true };
      }),
    );

    const { res, rest } = await rawRequest(t.port, '/slow', { method: 'POST' });
    // COMMIT takes 300 ms: only a response held until it returned sees the row here.
    const seen = await names(ctx, 'slow');
    const { body } = await rest();

    expect(res.statusCode).toBe(201);
    expect(seen).toEqual(['committed']);
    expect(JSON.parse(body)).toEqual({ ok: true });
  });

  test('with a streamed payload the row and the session are stored when the headers arrive', async () => {
    const t = await fastifyApp((app) =>
      app.get('/stream', async (req, reply) => {
        await insert(req, 'streamed', 'slow');
        req.session.streamed = true;
        reply.type('text/plain');
        return reply.send(Readable.from(['first;', 'second;', 'third']));
      }),
    );

    const { res, rest } = await rawRequest(t.port, '/stream');
    const atHeaders = await names(ctx, 'slow');
    const sessionsAtHeaders = (await sessionRows()).map((r) => JSON.parse(r.data));
    const { body, complete } = await rest();

    expect(res.statusCode).toBe(200);
    expect(res.headers['set-cookie']).toHaveLength(1);
    expect(atHeaders).toEqual(['streamed']);
    expect(sessionsAtHeaders).toEqual([{ streamed: true }]);
    expect(body).toBe('first;second;third');
    expect(complete).toBe(true);
  });
});

// ---- 3. commit failure -----------------------------------------------------------------------------------------

// MySQL has no deferred constraints: no COMMIT fails there for the data's sake.
if (commitFailure) {
  const failure = commitFailure;
  describe('a failing COMMIT', () => {
    test('answers 500 without Set-Cookie and leaves no rows, even though the handler answered 200', async () => {
      const t = await fastifyApp((app) =>
        app.post('/dup', async (req, reply) => {
          await req.db.query(failure.statement('same'));
          req.session.x = 1;
          reply.header('x-handler', 'yes');
          return 'looks fine';
        }),
      );
      await t.app.sessionStore.ready();
      log().clear();

      const res = await request(t.url).post('/dup');

      expect(res.status).toBe(500);
      expect(res.text).toBe('Internal Server Error');
      expect(res.headers['set-cookie']).toBeUndefined();
      expect(res.headers['x-handler']).toBeUndefined();
      expect(await ctx.sql('SELECT k FROM uniq')).toEqual([]);
      expect(await sessionRows()).toEqual([]);
      // The session was written inside the transaction that failed to commit.
      const statements = log().queries;
      const upsertAt = statements.findIndex((q) => /^INSERT INTO [`"]sessions[`"]/.test(q));
      expect(upsertAt).toBeGreaterThan(statements.findIndex((q) => /^(START TRANSACTION|BEGIN)/.test(q)));
      expect(statements.slice(upsertAt)).toContain('COMMIT');
      expect(t.reported).toHaveLength(1);
      expect(t.reported[0]).toBeInstanceOf(CommitError);
      expect((t.reported[0]!.cause as { code?: string }).code).toBe(failure.code);
    });
  });
}

// ---- 4. rollback on errors -------------------------------------------------------------------------------------

describe('rollback when the request fails', () => {
  const routes = (app: FastifyInstance) => {
    app.post('/throw', async (req) => {
      await insert(req, 'thrown');
      req.session.x = 1;
      throw new Error('boom');
    });
    app.post('/status', async (req, reply) => {
      await insert(req, 'status');
      req.session.x = 1;
      reply.code(Number((req.query as { code?: string }).code ?? 500));
      return 'refused';
    });
  };

  test('a thrown error rolls back; Fastify answers 500 without the session cookie', async () => {
    const t = await fastifyApp(routes);
    await t.app.sessionStore.ready();
    log().clear();

    const res = await request(t.url).post('/throw');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await names(ctx)).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    expect(txStatements()).toEqual(['START TRANSACTION', 'ROLLBACK']);
    expect((t.errors[0] as Error).message).toBe('boom');
  });

  test.each([400, 404, 503])('a %i reply rolls back', async (code) => {
    const t = await fastifyApp(routes);
    await t.app.sessionStore.ready();
    log().clear();

    const res = await request(t.url).post(`/status?code=${code}`);

    expect(res.status).toBe(code);
    expect(res.text).toBe('refused');
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await names(ctx)).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    expect(txStatements()).toEqual(['START TRANSACTION', 'ROLLBACK']);
  });

  test('the status a custom error handler sets decides, and a thrown error rolls back even when it answers 200', async () => {
    const t = await fastifyApp((app) => {
      routes(app);
      app.setErrorHandler((error: Error, _req, reply) => {
        reply.code(error.message === 'boom' ? 200 : 500).send({ handled: error.message });
      });
      app.post('/conflict', async (req) => {
        await insert(req, 'conflict');
        throw Object.assign(new Error('conflict'), { statusCode: 409 });
      });
    });

    const recovered = await request(t.url).post('/throw');
    const conflict = await request(t.url).post('/conflict');

    expect(recovered.status).toBe(200);
    expect(recovered.body).toEqual({ handled: 'boom' });
    expect(conflict.status).toBe(500);
    expect(await names(ctx)).toEqual([]);
    expect(await sessionRows()).toEqual([]);
  });

  test('a reply taken over with reply.hijack() never reaches onSend: rolled back when it closes, unless committed first', async () => {
    const t = await fastifyApp((app) =>
      app.get('/hijack', async (req, reply) => {
        const { commit } = req.query as { commit?: string };
        await insert(req, commit ? 'committed-then-hijacked' : 'hijacked');
        if (commit) await req.commit();
        reply.hijack();
        reply.raw.end('raw');
      }),
    );

    const plain = await request(t.url).get('/hijack');
    await within(eventually(() => log().matching(/^ROLLBACK/).length === 1), 5000, 'the rollback');
    const committed = await request(t.url).get('/hijack?commit=1');

    expect(plain.text).toBe('raw');
    expect(committed.text).toBe('raw');
    expect(await names(ctx)).toEqual(['committed-then-hijacked']);
  });

  test('commitOn decides: a custom commitOn can refuse a 2xx and accept a 404', async () => {
    const t = await fastifyApp(routes, { transaction: { commitOn: (status) => status === 404 } });

    await request(t.url).post('/status?code=404').expect(404);
    await request(t.url).post('/status?code=202').expect(202);

    expect(await names(ctx)).toEqual(['status']);
  });
});

// ---- 5. client abort -------------------------------------------------------------------------------------------

describe('a client that disconnects mid-handler', () => {
  async function abortAt(port: number, path: string, entered: Deferred) {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false });
    req.on('error', () => undefined);
    req.end();
    await entered.promise;
    req.destroy();
  }

  test('rolls back at once: the handler’s later query is rejected, none of its rows or session appear', async () => {
    const entered = deferred();
    const outcome = deferred<unknown>();
    const t = await fastifyApp((app) =>
      app.post('/abort', async (req, reply) => {
        await insert(req, 'before-abort');
        const closed = new Promise<void>((resolve) => reply.raw.once('close', () => resolve()));
        entered.resolve();
        await closed;
        req.session.userId = 'ghost';
        try {
          await insert(req, 'after-abort');
          outcome.resolve('ran');
        } catch (err) {
          outcome.resolve(err);
          throw err;
        }
        return 'nobody is listening';
      }),
    );

    await abortAt(t.port, '/abort', entered);
    const result = await within(outcome.promise, 5000, 'the handler after the abort');

    expect(result).toBeInstanceOf(TransactionClosedError);
    expect(await within(eventually(() => log().matching(/^ROLLBACK/).length === 1), 5000, 'the rollback')).toBe(true);
    expect(await names(ctx)).toEqual([]);
    expect(await sessionRows()).toEqual([]);
    expect(log().matching(/^COMMIT/)).toHaveLength(0);
  });
});

// ---- 6. late queries -------------------------------------------------------------------------------------------

describe('queries after the request ended', () => {
  test('a query from a timer the handler left behind is rejected and never persisted', async () => {
    const responded = deferred();
    const late = deferred<{ queryError: unknown; managerError: unknown; nestedError: unknown }>();
    const t = await fastifyApp((app) =>
      app.post('/late', async (req) => {
        const manager = req.db;
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
        await insert(req, 'in-request');
        return 'ok';
      }),
    );

    const res = await request(t.url).post('/late');
    responded.resolve();
    const { queryError, managerError, nestedError } = await within(late.promise, 5000, 'the timer');

    expect(res.status).toBe(200);
    expect(queryError).toBeInstanceOf(TransactionClosedError);
    expect(nestedError).toBeInstanceOf(TransactionClosedError);
    expect(managerError).toBeInstanceOf(NoRequestScopeError);
    expect(await names(ctx)).toEqual(['in-request']);
    expect(log().matching(/late/)).toEqual([]);
  });
});

// ---- 7. pool exhaustion ----------------------------------------------------------------------------------------

describe('a saturated pool', () => {
  test('fails fast with 503 instead of queueing forever, and every connection comes back', async () => {
    // One connection on SQLite, whatever poolSize says: there the requests wait for the one connection.
    const small = await ctx.open({ poolSize: 2 });
    const t = await fastifyApp(
      (app) =>
        app.get('/sleep', async (req) => {
          await holdFor(req.db, 0.3);
          return 'slept';
        }),
      { transaction: { acquireTimeoutMs: 500 } },
      small,
    );

    const responses = await within(
      Promise.all(Array.from({ length: 30 }, () => request(t.url).get('/sleep'))),
      30_000,
      '30 requests on a pool of 2',
    );

    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThanOrEqual(1);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2);
    expect(t.errors.some((e) => e instanceof AcquireTimeoutError)).toBe(true);
    expect(await within(eventually(() => poolState(small).total === poolState(small).idle), 5000, 'pool idle')).toBe(true);
    expect(poolState(small).waiting).toBe(0);
  });
});

// ---- 8. session writes inside the transaction -----------------------------------------------------------------

describe('the session is written inside the request transaction', () => {
  const routes = (app: FastifyInstance) => {
    app.post('/login', async (req, reply) => {
      const { email, fail } = req.query as { email: string; fail?: string };
      await signIn(req, await insertUser(req, email));
      if (fail) {
        reply.code(500);
        return 'failed after login';
      }
      return { userId: req.session.userId };
    });
    app.get('/me', async (req) => ({ userId: req.session.userId ?? null }));
    app.get('/set', async (req) => {
      req.session.n = 1;
      return 'ok';
    });
    app.post('/bump', async (req, reply) => {
      await insert(req, 'bump');
      req.session.n = 2;
      reply.code(500);
      return 'bump failed';
    });
    app.get('/read', async (req) => ({ n: req.session.n ?? null }));
  };

  test('a login commits the user row and the session together', async () => {
    const t = await fastifyApp(routes);
    await t.app.sessionStore.ready();
    log().clear();

    const res = await request(t.url).post('/login?email=a@example.com');

    expect(res.status).toBe(200);
    const statements = log()
      .queries.filter((q) => !/LAST_INSERT_ID/.test(q))
      .map((q) => (/^BEGIN/.test(q) ? 'START TRANSACTION' : q.replace(/`/g, '"')));
    expect(statements.map((q) => q.split(' ').slice(0, 3).join(' '))).toEqual([
      'START TRANSACTION',
      'INSERT INTO users',
      'INSERT INTO "sessions"',
      'COMMIT',
    ]);
    const [user] = await ctx.sql<{ id: number }>('SELECT id FROM users');
    expect(res.body).toEqual({ userId: String(user!.id) });
    expect((await sessionRows()).map((r) => r.user_id)).toEqual([String(user!.id)]);
    const me = await request(t.url).get('/me').set('Cookie', cookieOf(res.headers['set-cookie']));
    expect(me.body).toEqual({ userId: String(user!.id) });
  });

  test('a login that then fails leaves neither the user nor a session, and sets no cookie', async () => {
    const t = await fastifyApp(routes);

    const res = await request(t.url).post('/login?email=b@example.com&fail=1');

    expect(res.status).toBe(500);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(await ctx.sql('SELECT id FROM users')).toEqual([]);
    expect(await sessionRows()).toEqual([]);
  });

  test('an existing session is unchanged by a request that fails, and keeps its cookie', async () => {
    const t = await fastifyApp(routes);
    const cookie = cookieOf((await request(t.url).get('/set')).headers['set-cookie']);
    const [stored] = await sessionRows();

    const failed = await request(t.url).post('/bump').set('Cookie', cookie);
    const after = await request(t.url).get('/read').set('Cookie', cookie);

    expect(failed.status).toBe(500);
    expect(failed.headers['set-cookie']).toBeUndefined();
    expect(after.body).toEqual({ n: 1 });
    expect(await sessionRows()).toEqual([stored]);
    expect(await names(ctx)).toEqual([]);
  });
});

// ---- 9. a terminated connection -------------------------------------------------------------------------------

// SQLite has no server connection that another client could end.
if (onlyOn('postgres', 'mysql')) describe('a connection terminated mid-request', () => {
  test('answers 5xx, and the next request works', async () => {
    const t = await fastifyApp((app) => {
      app.post('/killed', async (req) => {
        const pid = await connectionId(req.db);
        await insert(req, 'doomed');
        if (testDialect === 'mysql') await ctx.sql(`KILL ${Number(pid)}`);
        else await ctx.sql('SELECT pg_terminate_backend($1)', [Number(pid)]);
        await insert(req, 'after-kill');
        return 'unreachable';
      });
      app.post('/ok', async (req) => {
        await insert(req, 'recovered');
        return 'ok';
      });
    });

    const res = await request(t.url).post('/killed');

    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(res.text).not.toBe('unreachable');
    expect(t.errors).toHaveLength(1);
    const next = await request(t.url).post('/ok');
    expect(next.status).toBe(200);
    expect(await names(ctx)).toEqual(['recovered']);
  });
});

// ---- 10. the request's async context ------------------------------------------------------------------------------

describe('currentManager() inside Fastify', () => {
  test('works in a preHandler hook and in the handler after a JSON body was parsed', async () => {
    const seen: Record<string, boolean> = {};
    const t = await fastifyApp((app) => {
      app.addHook('preHandler', async (req) => {
        seen.preHandler = currentManager() === req.db;
        await currentManager().query(dialectSql(`INSERT INTO items (name) VALUES ($1)`), ['from-hook']);
      });
      app.post('/body', async (req) => {
        seen.handler = currentManager() === req.db;
        await withTransaction((m) => m.query(dialectSql(`INSERT INTO items (name) VALUES ($1)`), [(req.body as { name: string }).name]));
        return 'ok';
      });
    });
    log().clear();

    // A body large enough to arrive in several chunks: it is read through 'data' events on the socket.
    const res = await request(t.url).post('/body').send({ name: 'from-body', padding: 'x'.repeat(200_000) });

    expect(res.status).toBe(200);
    expect(seen).toEqual({ preHandler: true, handler: true });
    expect(await names(ctx)).toEqual(['from-hook', 'from-body']);
    expect(txStatements()).toEqual(['START TRANSACTION', 'COMMIT']);
  });

  test('works inside listeners a content-type parser adds to the request stream', async () => {
    const seen: string[] = [];
    const t = await fastifyApp((app) => {
      app.addContentTypeParser('application/x-lines', (_req, payload, done) => {
        let text = '';
        payload.on('data', (chunk: Buffer) => (text += chunk.toString()));
        payload.on('end', () => {
          // Node runs these listeners in the socket's async context, not the request's.
          try {
            currentManager()
              .query(dialectSql(`INSERT INTO items (name) VALUES ($1)`), [`parsed:${text.length}`])
              .then(() => done(null, text), (err: Error) => done(err, undefined));
          } catch (err) {
            done(err as Error, undefined);
          }
        });
      });
      app.post('/lines', async (req) => {
        seen.push(String((req.body as string).length));
        return 'ok';
      });
    });

    const res = await request(t.url).post('/lines').set('Content-Type', 'application/x-lines').send('line\n'.repeat(50_000));

    expect(res.status).toBe(200);
    expect(seen).toEqual(['250000']);
    expect(await names(ctx)).toEqual(['parsed:250000']);
  });

  test('outside a request, currentManager() and withTransaction() refuse', async () => {
    expect(() => currentManager()).toThrow(NoRequestScopeError);
    await expect(withTransaction(async () => 1)).rejects.toBeInstanceOf(NoRequestScopeError);
  });
});

// ---- 11. sessions and the sign-in helpers ---------------------------------------------------------------------

describe('sessions and the sign-in helpers', () => {
  const routes = (app: FastifyInstance) => {
    app.get('/visit', async (req) => {
      req.session.visits = Number(req.session.visits ?? 0) + 1;
      return { visits: req.session.visits, id: req.sessionId };
    });
    app.get('/peek', async (req) => ({ visits: req.session.visits ?? null, userId: req.session.userId ?? null }));
    app.post('/login', async (req) => {
      await signIn(req, 'u-1', { keep: ['visits'] });
      return { id: req.sessionId };
    });
    app.post('/logout', async (req) => {
      signOut(req);
      return 'bye';
    });
    app.post('/others', async (req) => ({ revoked: await signOutOtherSessions(req) }));
  };

  test('an untouched session is neither stored nor sent; a changed one is, with the Express adapter’s signed cookie', async () => {
    const t = await fastifyApp(routes);

    const untouched = await request(t.url).get('/peek');
    const first = await request(t.url).get('/visit');
    const cookie = cookieOf(first.headers['set-cookie']);
    const second = await request(t.url).get('/visit').set('Cookie', cookie);

    expect(setCookies(untouched)).toEqual([]);
    expect(cookie).toBe(`sessionId=${encodeURIComponent(signedValue(first.body.id, 'test-secret'))}`);
    expect(setCookies(first)[0]).toMatch(/; Path=\/; HttpOnly$/);
    expect(second.body).toEqual({ visits: 2, id: first.body.id });
    // A known session without an expiry gets no new cookie (express-session's rule).
    expect(setCookies(second)).toEqual([]);
    expect(await sessionRows()).toHaveLength(1);
  });

  test('a cookie the Express adapter issued (same secret and name) finds its session here', async () => {
    const expressApp = ctx.app(
      (app) =>
        app.get('/set', (req, res) => {
          (req.session as unknown as Record<string, unknown>).visits = 41;
          res.send('ok');
        }),
      { name: 'sessionId' },
    );
    const t = await fastifyApp(routes);
    const cookie = cookieOf((await request(expressApp).get('/set')).headers['set-cookie']);

    const res = await request(t.url).get('/visit').set('Cookie', cookie);

    expect(res.body.visits).toBe(42);
  });

  test('signIn gives a new id, keeps what it is told to, and destroys the old session; signOut destroys it and clears the cookie', async () => {
    const t = await fastifyApp(routes);
    const first = await request(t.url).get('/visit');
    const before = cookieOf(first.headers['set-cookie']);

    const login = await request(t.url).post('/login').set('Cookie', before);
    const after = cookieOf(login.headers['set-cookie']);
    const oldCookie = await request(t.url).get('/peek').set('Cookie', before);
    const newCookie = await request(t.url).get('/peek').set('Cookie', after);

    expect(login.body.id).not.toBe(first.body.id);
    expect(after).not.toBe(before);
    expect(oldCookie.body).toEqual({ visits: null, userId: null });
    expect(newCookie.body).toEqual({ visits: 1, userId: 'u-1' });
    expect((await sessionRows()).map((r) => r.user_id)).toEqual(['u-1']);

    const logout = await request(t.url).post('/logout').set('Cookie', after);

    expect(setCookies(logout)[0]).toMatch(/^sessionId=; Path=\/; Expires=Thu, 01 Jan 1970 00:00:00 GMT/);
    expect(await sessionRows()).toEqual([]);
  });

  test('signOutOtherSessions revokes the user’s other sessions only', async () => {
    const t = await fastifyApp(routes);
    const a = cookieOf((await request(t.url).post('/login')).headers['set-cookie']);
    const b = cookieOf((await request(t.url).post('/login')).headers['set-cookie']);

    const res = await request(t.url).post('/others').set('Cookie', b);

    expect(res.body).toEqual({ revoked: 1 });
    expect((await request(t.url).get('/peek').set('Cookie', a)).body).toEqual({ visits: null, userId: null });
    expect((await request(t.url).get('/peek').set('Cookie', b)).body).toEqual({ visits: null, userId: 'u-1' });
  });

  test('maxAge sets the cookie’s Expires and the row’s expiry; rolling re-sends the cookie', async () => {
    const t = await fastifyApp(routes, { cookie: { maxAge: 60_000 }, rolling: true });
    const first = await request(t.url).get('/visit');
    const cookie = cookieOf(first.headers['set-cookie']);

    const again = await request(t.url).get('/peek').set('Cookie', cookie);

    expect(setCookies(first)[0]).toMatch(/; Expires=/);
    expect(setCookies(again)).toHaveLength(1);
    const [row] = await ctx.sql<{ expires_at: string }>('SELECT expires_at FROM sessions');
    const expiresIn = Number(row!.expires_at) - Date.now();
    expect(expiresIn).toBeGreaterThan(0);
    expect(expiresIn).toBeLessThanOrEqual(60_000);
  });

  test('an unchanged session is touched: its stored expiry moves, in one statement, without a new cookie', async () => {
    let clock = Date.now();
    const t = await fastifyApp(routes, { cookie: { maxAge: 60_000 }, now: () => clock });
    const cookie = cookieOf((await request(t.url).get('/visit')).headers['set-cookie']);
    const expiry = async () => Number((await ctx.sql<{ expires_at: string }>('SELECT expires_at FROM sessions'))[0]!.expires_at);
    const saved = await expiry();

    clock += 30_000;
    log().clear();
    const res = await request(t.url).get('/peek').set('Cookie', cookie);

    expect(res.body).toEqual({ visits: 1, userId: null });
    expect(setCookies(res)).toEqual([]);
    expect(await expiry()).toBe(saved + 30_000);
    expect(log().matching(/^UPDATE/)).toHaveLength(1);
  });

  test('overlapping requests on one session: with onConflict "reject" the later save fails with 409 instead of losing the first', async () => {
    const gate = deferred();
    const entered = deferred();
    const t = await fastifyApp(
      (app) => {
        routes(app);
        app.get('/slow-set', async (req) => {
          entered.resolve();
          await gate.promise;
          await insert(req, 'slow-set');
          req.session.slow = true;
          return 'slow done';
        });
        app.get('/fast-set', async (req) => {
          req.session.fast = true;
          return 'fast done';
        });
      },
      { onConflict: 'reject' },
    );
    const cookie = cookieOf((await request(t.url).get('/visit')).headers['set-cookie']);

    const slow = request(t.url).get('/slow-set').set('Cookie', cookie).then((r) => r);
    await entered.promise;
    const fast = await request(t.url).get('/fast-set').set('Cookie', cookie);
    gate.resolve();
    const late = await slow;

    expect(fast.status).toBe(200);
    expect(late.status).toBe(409);
    expect(late.headers['set-cookie']).toBeUndefined();
    expect(await names(ctx)).toEqual([]);
    const [row] = await sessionRows();
    expect(JSON.parse(row!.data)).toEqual({ visits: 1, fast: true });
  });

  test('a session signed out meanwhile is not re-created by a request that loaded it before', async () => {
    const gate = deferred();
    const entered = deferred();
    const t = await fastifyApp((app) => {
      routes(app);
      app.get('/slow-set', async (req) => {
        entered.resolve();
        await gate.promise;
        req.session.slow = true;
        return 'slow done';
      });
    });
    const cookie = cookieOf((await request(t.url).get('/visit')).headers['set-cookie']);

    const slow = request(t.url).get('/slow-set').set('Cookie', cookie).then((r) => r);
    await entered.promise;
    await request(t.url).post('/logout').set('Cookie', cookie).expect(200);
    gate.resolve();
    await slow;

    expect(await sessionRows()).toEqual([]);
  });

  test('saveUninitialized stores and sends an empty session; a secure cookie is not sent over plain HTTP', async () => {
    const uninitialized = await fastifyApp(routes, { saveUninitialized: true });
    const res = await request(uninitialized.url).get('/peek');
    expect(setCookies(res)).toHaveLength(1);
    expect((await sessionRows()).map((r) => JSON.parse(r.data))).toEqual([{}]);

    const secure = await fastifyApp(routes, { cookie: { secure: true } });
    expect(setCookies(await request(secure.url).get('/visit'))).toEqual([]);
  });

  test('transaction: false gives sessions without request.db', async () => {
    const t = await fastifyApp(
      (app) => {
        routes(app);
        app.get('/db', async (req) => ({ db: req.db === undefined ? 'none' : 'some' }));
      },
      { transaction: false },
    );

    const visit = await request(t.url).get('/visit');
    const db = await request(t.url).get('/db');

    expect(visit.body.visits).toBe(1);
    expect(db.body).toEqual({ db: 'none' });
    expect(await sessionRows()).toHaveLength(1);
  });
});

// ---- 12. configuration ------------------------------------------------------------------------------------------

describe('configuration errors', () => {
  test('a second registration (or another session plugin) is refused with a MiddlewareOrderError', async () => {
    const app = Fastify();
    apps.push(app);
    app.register(fastifySessionStore, { dataSource: ctx.ds, secret: 'x' });
    app.register(fastifySessionStore, { dataSource: ctx.ds, secret: 'x' });
    const error = await app.ready().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(MiddlewareOrderError);
    expect((error as Error).message).toMatch(/registered twice/);
  });

  test.each([
    [{ secret: 'x', bogus: 1 }, /unknown option "bogus"/],
    [{ secret: '' }, /option "secret"/],
    [{ secret: 'x', cookie: { maxAge: -1 } }, /option "cookie.maxAge"/],
    [{ secret: 'x', name: 'a;b' }, /option "name"/],
  ])('%j is a TypeError naming the option', async (options, message) => {
    const app = Fastify();
    apps.push(app);
    app.register(fastifySessionStore, { dataSource: ctx.ds, ...(options as object) } as FastifySessionStoreOptions);
    const error = await app.ready().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(message);
  });
});
