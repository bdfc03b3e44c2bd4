/**
 * A read replica: TypeORM's `replication: { master, slaves }` over a real streaming replica (a PostgreSQL
 * primary and a standby made from it by pg_basebackup, see helpers/replica.ts). The session is read and
 * written on the primary, so a login is seen on the very next request whatever the replica lags; a request's
 * transaction is on the primary, except on routes `transaction.readOnly` picks, which run READ ONLY on the
 * replica. The same on Express, Koa and Fastify. Runs in the configuration that sets TEST_REPLICA_BIN (npm
 * test sets it in one; see scripts/test.mjs).
 */
import type { Server } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { koaSessionStore } from '../../src/koa.js';
import { fastifySessionStore } from '../../src/fastify.js';
import { sessionStore } from '../../src/index.js';
import { startReplicaPair, type ReplicaPair } from '../helpers/replica.js';

let pair: ReplicaPair;
let dataSource: DataSource;

beforeAll(async () => {
  const bin = process.env.TEST_REPLICA_BIN;
  if (!bin) throw new Error('TEST_REPLICA_BIN (a directory with initdb, pg_ctl, pg_basebackup, postgres) is not set');
  pair = await startReplicaPair(bin);
  await pair.on('primary', (c) => c.query('CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)'));
  dataSource = new DataSource({
    type: 'postgres',
    replication: { master: { url: pair.primaryUrl }, slaves: [{ url: pair.replicaUrl }] },
  });
  await dataSource.initialize();
}, 120_000);

afterAll(async () => {
  await dataSource?.destroy();
  await pair?.stop();
});

/** Rows of `notes` on one server, read on a connection of its own. */
const notesOn = (server: 'primary' | 'replica') =>
  pair.on(server, async (c) => (await c.query('SELECT text FROM notes ORDER BY id')).rows.map((r: { text: string }) => r.text));

/** What the routes report about the transaction they ran in. */
const STATE_SQL =
  "SELECT pg_is_in_recovery() AS replica, current_setting('transaction_read_only') AS read_only, " +
  "current_setting('transaction_isolation') AS isolation, (SELECT coalesce(array_agg(text ORDER BY id), '{}') FROM notes) AS notes";

interface State {
  user: string | null;
  views: number;
  replica: boolean;
  read_only: string;
  isolation: string;
  notes: string[];
}

/** One adapter's app: the same routes on each; /ro/* are the read-only ones. */
interface AdapterApp {
  server: Server | ((req: any, res: any) => void);
  /** Errors the routes' failures reached the app's error handling with. */
  errors: unknown[];
  close(): Promise<void>;
}

type Options = { tableName: string; isolationLevel?: 'SERIALIZABLE' };
const readOnlyPath = (path: string) => path.startsWith('/ro/');

async function expressApp(options: Options): Promise<AdapterApp> {
  const app = express();
  const errors: unknown[] = [];
  const middleware = sessionStore({
    dataSource,
    secret: 'replica',
    tableName: options.tableName,
    pruneInterval: false,
    transaction: { isolationLevel: options.isolationLevel, readOnly: (req: express.Request) => readOnlyPath(req.path) },
  });
  app.use(middleware);
  const session = (req: express.Request) => req.session as unknown as { user?: string; views?: number };
  for (const prefix of ['', '/ro']) {
    app.get(`${prefix}/login`, (req, res) => {
      session(req).user = 'ann';
      res.send('ok');
    });
    app.get(`${prefix}/state`, async (req, res) => {
      const [row] = await req.db!.query(STATE_SQL);
      session(req).views = (session(req).views ?? 0) + 1;
      res.json({ user: session(req).user ?? null, views: session(req).views, ...row });
    });
    app.post(`${prefix}/note`, async (req, res) => {
      await req.db!.query('INSERT INTO notes (text) VALUES ($1)', [`${prefix || 'rw'} note`]);
      res.send('ok');
    });
  }
  app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    errors.push(err);
    res.status(500).send('failed');
  });
  return { server: app, errors, close: () => middleware.close() };
}

async function koaApp(options: Options): Promise<AdapterApp> {
  const app = new Koa();
  app.keys = ['replica'];
  const errors: unknown[] = [];
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      errors.push(err);
      ctx.status = 500;
      ctx.body = 'failed';
    }
  });
  const middleware = koaSessionStore(app, {
    dataSource,
    tableName: options.tableName,
    pruneInterval: false,
    transaction: { isolationLevel: options.isolationLevel, readOnly: (ctx) => readOnlyPath(ctx.path) },
  });
  app.use(middleware);
  app.use(async (ctx) => {
    const session = ctx.session as { user?: string; views?: number };
    const path = ctx.path.replace(/^\/ro/, '');
    if (path === '/login') {
      session.user = 'ann';
      ctx.body = 'ok';
    } else if (path === '/state') {
      const [row] = await ctx.db!.query(STATE_SQL);
      session.views = (session.views ?? 0) + 1;
      ctx.body = { user: session.user ?? null, views: session.views, ...row };
    } else if (path === '/note' && ctx.method === 'POST') {
      await ctx.db!.query('INSERT INTO notes (text) VALUES ($1)', [`${ctx.path === path ? 'rw' : '/ro'} note`]);
      ctx.body = 'ok';
    }
  });
  return { server: app.callback(), errors, close: () => middleware.close() };
}

async function fastifyApp(options: Options): Promise<AdapterApp> {
  const app = Fastify();
  const errors: unknown[] = [];
  await app.register(fastifySessionStore, {
    dataSource,
    secret: 'replica',
    tableName: options.tableName,
    pruneInterval: false,
    transaction: { isolationLevel: options.isolationLevel, readOnly: (req) => readOnlyPath(req.url) },
  });
  app.setErrorHandler((err, _request, reply) => {
    errors.push(err);
    void reply.status(500).send('failed');
  });
  const session = (req: { session: unknown }) => req.session as { user?: string; views?: number };
  for (const prefix of ['', '/ro']) {
    app.get(`${prefix}/login`, async (req) => {
      session(req).user = 'ann';
      return 'ok';
    });
    app.get(`${prefix}/state`, async (req) => {
      const [row] = await req.db!.query(STATE_SQL);
      session(req).views = (session(req).views ?? 0) + 1;
      return { user: session(req).user ?? null, views: session(req).views, ...row };
    });
    app.post(`${prefix}/note`, async (req) => {
      await req.db!.query('INSERT INTO notes (text) VALUES ($1)', [`${prefix || 'rw'} note`]);
      return 'ok';
    });
  }
  await app.ready();
  return { server: app.server, errors, close: () => app.close() };
}

const adapters = { express: expressApp, koa: koaApp, fastify: fastifyApp };

describe.each(Object.keys(adapters) as Array<keyof typeof adapters>)('%s', (name) => {
  let app: AdapterApp;
  beforeAll(async () => {
    app = await adapters[name]({ tableName: `sessions_${name}` });
    // The store makes its table on the first request; the replica must have it before replay is paused.
    await request(app.server).get('/login').expect(200);
  });
  afterAll(async () => {
    await app?.close();
  });
  beforeEach(async () => {
    await pair.on('primary', (c) => c.query(`TRUNCATE notes, sessions_${name}`));
    await pair.caughtUp();
    app.errors.length = 0;
  });

  test('a readOnly route runs its transaction READ ONLY on the replica; every other route on the primary', async () => {
    const agent = request.agent(app.server);
    const readWrite: State = (await agent.get('/state').expect(200)).body;
    expect(readWrite).toMatchObject({ replica: false, read_only: 'off' });
    const readOnly: State = (await agent.get('/ro/state').expect(200)).body;
    expect(readOnly).toMatchObject({ replica: true, read_only: 'on' });
  });

  test('with the replica lagging, a login is seen on the next request, on a read-only route too, which reads the replica', async () => {
    await pair.pauseReplay();
    try {
      await pair.on('primary', (c) => c.query("INSERT INTO notes (text) VALUES ('written during the lag')"));
      const agent = request.agent(app.server);
      await agent.get('/login').expect(200);
      // The session row the login wrote is on the primary only: the replica has not replayed it.
      const sessionsOn = (server: 'primary' | 'replica') =>
        pair.on(server, async (c) => (await c.query(`SELECT count(*)::int AS n FROM sessions_${name}`)).rows[0].n as number);
      expect([await sessionsOn('primary'), await sessionsOn('replica')]).toEqual([1, 0]);

      const readOnly: State = (await agent.get('/ro/state').expect(200)).body;
      expect(readOnly).toMatchObject({ user: 'ann', views: 1, replica: true, notes: [] });
      // The session change that read-only route made went to the primary too.
      const readWrite: State = (await agent.get('/state').expect(200)).body;
      expect(readWrite).toMatchObject({ user: 'ann', views: 2, replica: false, notes: ['written during the lag'] });
      const again: State = (await agent.get('/ro/state').expect(200)).body;
      expect(again).toMatchObject({ user: 'ann', views: 3, replica: true, notes: [] });
    } finally {
      await pair.resumeReplay();
    }
    await pair.caughtUp();
    expect(await notesOn('replica')).toEqual(['written during the lag']);
  });

  test('a write on a read-only route fails with 25006 (read-only transaction) and keeps nothing', async () => {
    const agent = request.agent(app.server);
    await agent.post('/ro/note').expect(500);
    expect(app.errors).toHaveLength(1);
    const err = app.errors[0] as { driverError?: { code?: string }; message: string };
    expect(err.driverError?.code).toBe('25006');
    expect(err.message).toMatch(/read-only transaction/);
    expect(await notesOn('primary')).toEqual([]);
  });

  test('a write on any other route lands on the primary, and reaches the replica', async () => {
    await request.agent(app.server).post('/note').expect(200);
    expect(await notesOn('primary')).toEqual(['rw note']);
    await pair.caughtUp();
    expect(await notesOn('replica')).toEqual(['rw note']);
  });
});

test('isolationLevel SERIALIZABLE: read-only routes run REPEATABLE READ on the replica (a hot standby refuses SERIALIZABLE)', async () => {
  const app = await expressApp({ tableName: 'sessions_serializable', isolationLevel: 'SERIALIZABLE' });
  try {
    const agent = request.agent(app.server);
    expect((await agent.get('/state').expect(200)).body).toMatchObject({ replica: false, isolation: 'serializable' });
    expect((await agent.get('/ro/state').expect(200)).body).toMatchObject({ replica: true, isolation: 'repeatable read', read_only: 'on' });
    expect(app.errors).toEqual([]);
  } finally {
    await app.close();
  }
});
