import Koa from 'koa';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { signIn, signOut, signOutEverywhere, signOutOtherSessions } from '../src/index.js';
import * as koaHelpers from '../src/koa.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { makeApp } from './helpers/app.js';

let db: TestDatabase;
let dataSource: DataSource;
beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url);
});
afterAll(async () => {
  await dataSource.destroy();
  await db.drop();
});

const cookieOf = (res: request.Response) => (res.headers['set-cookie'] as unknown as string[] | undefined) ?? [];

describe('Express helpers', () => {
  const build = () =>
    makeApp(dataSource, (app) => {
      app.post('/visit', (req: any, res) => {
        req.session.cart = ['apple'];
        req.session.other = 'dropped';
        res.sendStatus(204);
      });
      app.post('/login', async (req: any, res) => {
        const before = req.sessionID;
        await signIn(req, 7, { keep: ['cart'] });
        res.json({ changed: before !== req.sessionID, session: req.session });
      });
      app.get('/me', (req: any, res) => res.json({ userId: req.session.userId ?? null }));
      app.post('/logout', async (req, res) => {
        await signOut(req, res);
        res.sendStatus(204);
      });
      app.post('/others', async (req, res) => res.json({ revoked: await signOutOtherSessions(req) }));
      app.post('/everywhere', async (req, res) => res.json({ revoked: await signOutEverywhere(req, res) }));
    });

  test('signIn regenerates, keeps only the chosen fields, records user and device; signOut clears the cookie', async () => {
    const { app } = build();
    const agent = request.agent(app);
    await agent.post('/visit').expect(204);
    const login = await agent.post('/login').set('User-Agent', 'test-browser/1').expect(200);
    expect(login.body.changed).toBe(true);
    expect(login.body.session).toMatchObject({ cart: ['apple'], userId: 7, device: { userAgent: 'test-browser/1' } });
    expect(login.body.session.other).toBeUndefined();
    expect((await agent.get('/me')).body.userId).toBe(7);

    const logout = await agent.post('/logout').expect(204);
    expect(cookieOf(logout).some((c) => /^connect\.sid=;/.test(c) && /Expires=Thu, 01 Jan 1970/.test(c))).toBe(true);
    expect((await agent.get('/me')).body.userId).toBeNull();
  });

  test('sign out other sessions keeps this one; sign out everywhere ends all', async () => {
    const { app, store } = build();
    const [a, b, c] = [request.agent(app), request.agent(app), request.agent(app)];
    for (const agent of [a, b, c]) await agent.post('/login').expect(200);
    expect(await store.listByUser(7)).toHaveLength(3);
    expect((await a.post('/others').expect(200)).body.revoked).toBe(2);
    expect((await a.get('/me')).body.userId).toBe(7);
    expect((await b.get('/me')).body.userId).toBeNull();
    await b.post('/login').expect(200);
    expect((await b.post('/everywhere').expect(200)).body.revoked).toBe(2);
    expect((await a.get('/me')).body.userId).toBeNull();
    expect((await b.get('/me')).body.userId).toBeNull();
    expect(await store.listByUser(7)).toHaveLength(0);
  });
});

describe('Koa helpers', () => {
  test('signIn, signOutOtherSessions, signOut', async () => {
    const app = new Koa();
    app.keys = ['k'];
    const middleware = koaHelpers.koaSessionStore(app, { dataSource, tableName: 'koa_helpers' });
    app.use(middleware);
    app.use(async (ctx: any) => {
      if (ctx.path === '/login') {
        await koaHelpers.signIn(ctx, 'u1');
        ctx.body = 'ok';
      } else if (ctx.path === '/others') {
        ctx.body = { revoked: await koaHelpers.signOutOtherSessions(ctx) };
      } else if (ctx.path === '/logout') {
        koaHelpers.signOut(ctx);
        ctx.body = 'bye';
      } else {
        ctx.body = { userId: ctx.session.userId ?? null };
      }
    });
    const server = app.callback();
    const [a, b] = [request.agent(server), request.agent(server)];
    await a.post('/login').expect(200);
    await b.post('/login').expect(200);
    expect(await middleware.store.listByUser('u1')).toHaveLength(2);
    expect((await a.post('/others')).body.revoked).toBe(1);
    expect((await a.get('/me')).body.userId).toBe('u1');
    expect((await b.get('/me')).body.userId).toBeNull();
    await a.post('/logout').expect(200);
    expect((await a.get('/me')).body.userId).toBeNull();
    expect(await middleware.store.listByUser('u1')).toHaveLength(0);
  });
});
