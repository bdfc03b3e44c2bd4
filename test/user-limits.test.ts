/**
 * Issue 17, points 6 and 7, against a real database (TEST_DB): `maxSessionsPerUser` (a sign-in beyond the cap
 * ends the user's least recently seen sessions, atomically with the new session) and `signedInWithin()` (did
 * this session sign in recently, from signIn()'s record).
 */
import Koa from 'koa';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { signedInWithin, signIn, TypeormSessionStore } from '../src/index.js';
import * as koaHelpers from '../src/koa.js';
import { makeApp } from './helpers/app.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';

let db: TestDatabase;
let dataSource: DataSource;
const stores: TypeormSessionStore[] = [];
beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url);
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await dataSource.destroy();
  await db.drop();
});

let clock = Date.now();
const now = () => clock;
let tableCounter = 0;
function newStore(options: Partial<ConstructorParameters<typeof TypeormSessionStore>[0]> = {}) {
  const store = new TypeormSessionStore({ dataSource, tableName: `lim_${++tableCounter}`, now, pruneInterval: false, ...options });
  stores.push(store);
  return store;
}
const session = (extra: Record<string, unknown> = {}) =>
  ({ cookie: { originalMaxAge: 3_600_000, expires: new Date(clock + 3_600_000).toISOString() }, ...extra }) as any;
const load = async (store: TypeormSessionStore, sid: string) =>
  store.createSession({ sessionID: sid, sessionStore: store } as any, (await store.get(sid))!) as any;

describe('maxSessionsPerUser', () => {
  test('a new session of a user beyond the cap ends the least recently seen ones; other users and loaded saves are untouched', async () => {
    const store = newStore({ maxSessionsPerUser: 3, touchAfter: 0 });
    for (const sid of ['a', 'b', 'c']) {
      clock += 1_000;
      await store.set(sid, session({ userId: 'capped' }));
    }
    await store.set('other', session({ userId: 'someone-else' }));
    await store.set('anonymous', session({}));
    // 'a' is seen again: 'b' is now the least recently seen.
    clock += 1_000;
    await store.touch('a', session({ userId: 'capped' }));
    // A save of a loaded session (not a sign-in) does not apply the cap, nor count as a new one.
    const loaded = await load(store, 'c');
    loaded.n = 1;
    await store.set('c', loaded);
    expect((await store.listByUser('capped')).map((s) => s.handle).sort()).toEqual(['a', 'b', 'c'].map((x) => store.handleOf(x)).sort());

    clock += 1_000;
    await store.set('d', session({ userId: 'capped' }));
    expect(await store.get('b')).toBeNull();
    const handles = (await store.listByUser('capped')).map((s) => s.handle);
    expect(handles.sort()).toEqual(['a', 'c', 'd'].map((x) => store.handleOf(x)).sort());
    // Two at once beyond a lowered cap, through a second store on the same table.
    const strict = new TypeormSessionStore({ dataSource, tableName: store.tableName, now, pruneInterval: false, maxSessionsPerUser: 1 });
    stores.push(strict);
    clock += 1_000;
    await strict.set('e', session({ userId: 'capped' }));
    expect((await store.listByUser('capped')).map((s) => s.handle)).toEqual([store.handleOf('e')]);
    expect(await store.get('other')).not.toBeNull();
    expect(await store.get('anonymous')).not.toBeNull();
    // What was ended stays ended: a save of a copy does not bring it back.
    await store.set('a', session({ userId: 'capped', copy: true }));
    expect(await store.get('a')).toBeNull();
  });

  test('without the option nothing is capped; 0, 1.5 and strings are refused naming the option', async () => {
    const store = newStore();
    for (let i = 0; i < 5; i++) await store.set(`free-${i}`, session({ userId: 'free' }));
    expect(await store.listByUser('free')).toHaveLength(5);
    for (const bad of [0, 1.5, '3', -1]) {
      expect(() => new TypeormSessionStore({ dataSource, maxSessionsPerUser: bad as never })).toThrow(/option "maxSessionsPerUser"/);
    }
  });

  const expressApp = (options: Record<string, unknown>) =>
    makeApp(
      dataSource,
      (app) => {
        app.post('/login', async (req: any, res, next) => {
          try {
            // The login's own work in the request's transaction (as checking a password would be), unless ?nodb.
            if (req.query.nodb === undefined) await req.db.query('SELECT 1');
            await signIn(req, 'capped-user');
            if (req.query.fail !== undefined) return res.status(500).json({ failed: true });
            res.json({ handle: req.sessionStore.handleOf(req.sessionID) });
          } catch (err) {
            next(err);
          }
        });
        app.get('/me', (req: any, res) => res.json({ userId: req.session.userId ?? null }));
      },
      { tableName: `lim_http_${++tableCounter}`, maxSessionsPerUser: 2, ...options },
    );

  test.each([
    ['inside the request transaction', ''],
    ['without a request transaction (a short transaction of its own)', '?nodb'],
  ])('Express signIn %s: the third device ends the first; a failed login ends nothing', async (_, query) => {
    const { app, store } = expressApp({});
    stores.push(store);
    const agents = [request.agent(app), request.agent(app), request.agent(app)];
    const handles: string[] = [];
    for (const agent of agents.slice(0, 2)) {
      clock += 1_000;
      handles.push((await agent.post(`/login${query}`).expect(200)).body.handle);
    }
    // A login that fails after signIn (status 500): its transaction rolls back, the new session is not
    // saved, and neither is the cap applied.
    clock += 1_000;
    await agents[2]!.post(`/login${query}${query ? '&' : '?'}fail`).expect(500);
    expect((await store.listByUser('capped-user')).map((s) => s.handle).sort()).toEqual([...handles].sort());
    expect((await agents[0]!.get('/me')).body.userId).toBe('capped-user');

    clock += 1_000;
    const third = (await agents[2]!.post(`/login${query}`).expect(200)).body.handle;
    expect((await store.listByUser('capped-user')).map((s) => s.handle).sort()).toEqual([handles[1], third].sort());
    expect((await agents[0]!.get('/me')).body.userId).toBeNull();
    expect((await agents[1]!.get('/me')).body.userId).toBe('capped-user');
  });

  test('Koa signIn beyond the cap ends the least recently seen session', async () => {
    const app = new Koa();
    app.keys = ['k'];
    const middleware = koaHelpers.koaSessionStore(app, { dataSource, tableName: 'lim_koa', maxSessionsPerUser: 2, now });
    stores.push(middleware.store);
    app.use(middleware);
    app.use(async (ctx: any) => {
      if (ctx.path === '/login') {
        await koaHelpers.signIn(ctx, 'koa-capped');
        ctx.body = 'ok';
      } else {
        ctx.body = { userId: ctx.session.userId ?? null };
      }
    });
    const server = app.callback();
    const agents = [request.agent(server), request.agent(server), request.agent(server)];
    for (const agent of agents) {
      clock += 1_000;
      await agent.post('/login').expect(200);
    }
    expect(await middleware.store.listByUser('koa-capped')).toHaveLength(2);
    expect((await agents[0]!.get('/me')).body.userId).toBeNull();
    expect((await agents[1]!.get('/me')).body.userId).toBe('koa-capped');
    expect((await agents[2]!.get('/me')).body.userId).toBe('koa-capped');
  });
});

describe('signedInWithin', () => {
  test('Express: true within the window after signIn, false after it, false for a session that never signed in', async () => {
    const { app, store } = makeApp(
      dataSource,
      (app) => {
        app.post('/login', async (req: any, res) => {
          await signIn(req, 1, { metadata: { note: 'custom metadata keeps signedInAt' } });
          res.sendStatus(204);
        });
        app.post('/visit', (req: any, res) => {
          req.session.visited = true;
          res.sendStatus(204);
        });
        app.get('/recent', (req: any, res) => res.json({ recent: signedInWithin(req, Number(req.query.ms)) }));
      },
      { tableName: 'lim_recent', now },
    );
    stores.push(store);
    const anonymous = request.agent(app);
    await anonymous.post('/visit').expect(204);
    expect((await anonymous.get('/recent?ms=600000')).body.recent).toBe(false);

    const agent = request.agent(app);
    await agent.post('/login').expect(204);
    expect((await agent.get('/recent?ms=600000')).body.recent).toBe(true);
    clock += 9 * 60_000;
    expect((await agent.get('/recent?ms=600000')).body.recent).toBe(true);
    clock += 2 * 60_000;
    expect((await agent.get('/recent?ms=600000')).body.recent).toBe(false);
    expect((await agent.get('/recent?ms=3600000')).body.recent).toBe(true);
    const [listed] = await store.listByUser(1);
    expect(listed!.metadata).toMatchObject({ note: 'custom metadata keeps signedInAt', signedInAt: expect.any(String) });
    await agent.get('/recent?ms=-1').expect(500);
  });

  test('Koa: the same question of ctx', async () => {
    const app = new Koa();
    app.keys = ['k'];
    const middleware = koaHelpers.koaSessionStore(app, { dataSource, tableName: 'lim_recent_koa', now });
    stores.push(middleware.store);
    app.use(middleware);
    app.use(async (ctx: any) => {
      if (ctx.path === '/login') {
        await koaHelpers.signIn(ctx, 'k1');
        ctx.body = 'ok';
      } else {
        ctx.body = { recent: koaHelpers.signedInWithin(ctx, 300_000) };
      }
    });
    const agent = request.agent(app.callback());
    expect((await agent.get('/recent')).body.recent).toBe(false);
    await agent.post('/login').expect(200);
    expect((await agent.get('/recent')).body.recent).toBe(true);
    clock += 301_000;
    expect((await agent.get('/recent')).body.recent).toBe(false);
  });
});
