import express from 'express';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { sessionStore } from '../src/index.js';

// An app's own test suite on an in-memory SQLite database: no file, no server. This runs in every
// configuration, whatever TEST_DB says, because it is about SQLite's :memory: mode itself.
let dataSource: DataSource;
beforeAll(async () => {
  dataSource = new DataSource({ type: 'better-sqlite3', database: ':memory:' });
  await dataSource.initialize();
  await dataSource.query('CREATE TABLE notes (id integer PRIMARY KEY, text varchar(50) NOT NULL)');
});
afterAll(async () => {
  await dataSource.destroy();
});

function app() {
  const app = express();
  const middleware = sessionStore({ dataSource, secret: 's', pruneInterval: false });
  app.use(middleware);
  app.post('/note/:text', async (req: any, res) => {
    await req.db.query('INSERT INTO notes (text) VALUES (?)', [req.params.text]);
    req.session.notes = (req.session.notes ?? 0) + 1;
    res.status(req.params.text === 'bad' ? 500 : 200).json({ notes: req.session.notes });
  });
  app.get('/count', async (req: any, res) => {
    const [{ n }] = await req.db.query('SELECT COUNT(*) AS n FROM notes');
    res.json({ rows: Number(n), notes: req.session.notes ?? 0 });
  });
  return { app, middleware };
}

test('sessions and request transactions work on :memory:, commits and rollbacks included', async () => {
  const { app: server, middleware } = app();
  const agent = request.agent(server);
  expect((await agent.post('/note/a').expect(200)).body).toEqual({ notes: 1 });
  expect((await agent.post('/note/b').expect(200)).body).toEqual({ notes: 2 });
  await agent.post('/note/bad').expect(500);
  expect((await agent.get('/count').expect(200)).body).toEqual({ rows: 2, notes: 2 });

  // Requests side by side take turns on the single connection; none is lost.
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => request(server).post(`/note/p${i}`)));
  expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));
  expect((await agent.get('/count')).body.rows).toBe(22);
  expect(await middleware.store.length()).toBe(21);
  await middleware.close();
});
