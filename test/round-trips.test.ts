import request from 'supertest';
import type { DataSource } from 'typeorm';
import { createTestDatabase, openDataSource, QueryLog, type TestDatabase } from './helpers/database.js';
import { makeApp } from './helpers/app.js';

// What each common request costs in statements. Fewer round trips is the store's main speed lever.
let db: TestDatabase;
let dataSource: DataSource;
const log = new QueryLog();
beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url, { logging: ['query'], logger: log });
});
afterAll(async () => {
  await dataSource.destroy();
  await db.drop();
});

const sessionStatements = () => log.queries.filter((q) => /sessions/.test(q) && !/_lease/.test(q));

function app() {
  return makeApp(dataSource, (app) => {
    app.post('/login', (req: any, res, next) =>
      req.session.regenerate((err: unknown) => {
        if (err) return next(err);
        req.session.userId = 1;
        res.sendStatus(204);
      }),
    );
    app.get('/read', (req: any, res) => res.json({ userId: req.session.userId ?? null }));
    app.post('/revoke', async (req: any, res) => {
      await req.sessionStore.destroy(req.query.sid);
      res.sendStatus(204);
    });
  }).app;
}

test('a login is one statement: the fresh id regenerate() destroys was never stored', async () => {
  const server = app();
  await request(server).get('/read'); // the table check happens once, on first use
  log.clear();
  await request(server).post('/login').expect(204);
  expect(sessionStatements().map((q) => q.split(' ')[0])).toEqual(['INSERT']);
});

test('regenerating a stored session does destroy it (a dead row); so does destroying another id in a request', async () => {
  const server = app();
  const agent = request.agent(server);
  await agent.post('/login').expect(204);
  log.clear();
  await agent.post('/login').expect(204);
  expect(sessionStatements().map((q) => q.split(' ')[0])).toEqual(['SELECT', 'UPDATE', 'INSERT']);

  const other = request.agent(server);
  await other.post('/login').expect(204);
  const cookie = (other as any).jar.getCookie('connect.sid', { domain: '127.0.0.1', path: '/' });
  expect(cookie).toBeDefined();
  const sid = decodeURIComponent(cookie.value).slice(2).split('.')[0];
  await agent.post(`/revoke?sid=${encodeURIComponent(sid)}`).expect(204);
  expect((await other.get('/read')).body.userId).toBeNull();
});

test('a read of an unchanged session is one statement', async () => {
  const agent = request.agent(app());
  await agent.post('/login').expect(204);
  log.clear();
  expect((await agent.get('/read')).body.userId).toBe(1);
  expect(sessionStatements().map((q) => q.split(' ')[0])).toEqual(['SELECT']);
});
