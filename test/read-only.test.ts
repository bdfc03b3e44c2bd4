/**
 * `transaction.readOnly` on every database (TEST_DB), without a real replica (test/deploy/replica.test.ts
 * has one): the option is checked at construction on every adapter; on a DataSource with `replication`
 * (here a "replica" that is the primary itself, which TypeORM cannot tell apart) the chosen requests run
 * START TRANSACTION READ ONLY and the session's statements stay out of that transaction; without
 * `replication` (SQLite has none) the option changes nothing.
 */
import Fastify from 'fastify';
import Koa from 'koa';
import request from 'supertest';
import type { DataSource, DataSourceOptions } from 'typeorm';
import { fastifySessionStore } from '../src/fastify.js';
import { koaSessionStore } from '../src/koa.js';
import { sessionStore } from '../src/index.js';
import { express, makeApp } from './helpers/app.js';
import { createTestDatabase, openDataSource, QueryLog, type TestDatabase } from './helpers/database.js';
import { onlyOn, optionsForUrl, sql, testDialect } from './helpers/dialect.js';

let db: TestDatabase;
let plain: DataSource;
const log = new QueryLog();
const serial = { postgres: 'serial PRIMARY KEY', mysql: 'INT AUTO_INCREMENT PRIMARY KEY', sqlite: 'INTEGER PRIMARY KEY AUTOINCREMENT' }[testDialect];

beforeAll(async () => {
  db = await createTestDatabase();
  plain = await openDataSource(db.url);
  await plain.query(`CREATE TABLE notes (id ${serial}, text varchar(64) NOT NULL)`);
});
afterAll(async () => {
  await plain?.destroy();
  await db?.drop();
});
beforeEach(async () => {
  await plain.query('DELETE FROM notes');
  log.clear();
});

const notes = async () => (await plain.query('SELECT text FROM notes ORDER BY id')).map((r: { text: string }) => r.text);

describe('the option is checked when the app is made', () => {
  const bad = [true, 'yes', { path: '/reports' }];

  test.each(bad)('sessionStore: readOnly %p', (readOnly) => {
    expect(() => sessionStore({ dataSource: plain, secret: 's', transaction: { readOnly: readOnly as never } })).toThrow(
      /option "transaction\.readOnly" must be a function \(request\) => boolean/,
    );
  });

  test.each(bad)('koaSessionStore: readOnly %p', (readOnly) => {
    const app = new Koa();
    app.keys = ['k'];
    expect(() => koaSessionStore(app, { dataSource: plain, transaction: { readOnly: readOnly as never } })).toThrow(
      /option "transaction\.readOnly" must be a function/,
    );
  });

  test.each(bad)('fastifySessionStore: readOnly %p', async (readOnly) => {
    const app = Fastify();
    try {
      await expect(
        app.register(fastifySessionStore, { dataSource: plain, secret: 's', transaction: { readOnly: readOnly as never } }).ready(),
      ).rejects.toThrow(/option "transaction\.readOnly" must be a function/);
    } finally {
      await app.close();
    }
  });
});

/** The app every test below uses: /ro/* are the read-only routes. */
function appOn(dataSource: DataSource, readOnly: (req: express.Request) => unknown, errors: unknown[]) {
  return makeApp(
    dataSource,
    (app) => {
      app.post(['/note', '/ro/note'], async (req, res) => {
        await req.db!.query(sql('INSERT INTO notes (text) VALUES ($1)'), [req.path]);
        res.send('ok');
      });
      app.get(['/visit', '/ro/visit'], async (req, res) => {
        await req.db!.query('SELECT 1');
        const session = req.session as unknown as { views?: number };
        session.views = (session.views ?? 0) + 1;
        res.json({ views: session.views });
      });
      app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        errors.push(err);
        res.status(500).send('failed');
      });
    },
    { pruneInterval: false, transaction: { readOnly: readOnly as (req: express.Request) => boolean } },
  );
}

if (onlyOn('postgres', 'mysql')) describe('on a DataSource with replication', () => {
  let replicated: DataSource;
  beforeAll(async () => {
    const { url, ...rest } = optionsForUrl(db.url) as { url: string };
    replicated = await openDataSource(db.url, {
      ...rest,
      url: undefined,
      replication: { master: { url }, slaves: [{ url }] },
      logger: log,
    } as Partial<DataSourceOptions>);
  });
  afterAll(async () => {
    await replicated?.destroy();
  });

  test('a chosen request runs START TRANSACTION READ ONLY: its write fails with SQLSTATE 25006, and nothing is kept', async () => {
    const errors: unknown[] = [];
    const { app, middleware } = appOn(replicated, (req) => req.path.startsWith('/ro/'), errors);
    try {
      await request(app).post('/ro/note').expect(500);
      expect(errors).toHaveLength(1);
      const driverError = (errors[0] as { driverError?: { code?: string; sqlState?: string } }).driverError;
      expect(testDialect === 'mysql' ? driverError?.sqlState : driverError?.code).toBe('25006');
      expect(log.matching(/^START TRANSACTION/)).toEqual(['START TRANSACTION READ ONLY']);
      await request(app).post('/note').expect(200);
      expect(await notes()).toEqual(['/note']);
      expect(log.matching(/^START TRANSACTION/)).toEqual(['START TRANSACTION READ ONLY', 'START TRANSACTION']);
    } finally {
      await middleware.close();
    }
  });

  test('the session is saved outside the read-only transaction, so a session change on such a route is kept', async () => {
    const errors: unknown[] = [];
    const { app, middleware } = appOn(replicated, (req) => req.path.startsWith('/ro/'), errors);
    try {
      const agent = request.agent(app);
      expect((await agent.get('/ro/visit').expect(200)).body).toEqual({ views: 1 });
      expect((await agent.get('/ro/visit').expect(200)).body).toEqual({ views: 2 });
      expect((await agent.get('/visit').expect(200)).body).toEqual({ views: 3 });
      expect(errors).toEqual([]);
    } finally {
      await middleware.close();
    }
  });

  test('readOnly is asked once per request, with the request, and must answer a boolean', async () => {
    const errors: unknown[] = [];
    const asked: string[] = [];
    const { app, middleware } = appOn(
      replicated,
      (req) => {
        asked.push(req.path);
        return req.path === '/ro/visit' ? 'yes' : false;
      },
      errors,
    );
    try {
      await request(app).get('/visit').expect(200);
      expect(asked).toEqual(['/visit']);
      await request(app).get('/ro/visit').expect(500);
      expect(errors).toHaveLength(1);
      expect((errors[0] as Error).message).toMatch(/option "transaction\.readOnly" must return a boolean, got string/);
    } finally {
      await middleware.close();
    }
  });
});

test('without replication (and always on SQLite) readOnly is not asked, and the transaction is the ordinary one', async () => {
  const errors: unknown[] = [];
  const asked: string[] = [];
  const { app, middleware } = appOn(
    plain,
    (req) => {
      asked.push(req.path);
      return true;
    },
    errors,
  );
  try {
    await request(app).post('/ro/note').expect(200);
    expect(errors).toEqual([]);
    expect(asked).toEqual([]);
    expect(await notes()).toEqual(['/ro/note']);
  } finally {
    await middleware.close();
  }
});
