// One bench app in its own process: `node bench/server.mjs <store> <scenario>`, forked by bench/run.mjs (and by
// test/bench-smoke.test.ts). Express 5 + express-session with the given store, the same routes for every
// store (the scenario only names the process; the load generator picks the route). Listens on 127.0.0.1 on
// a free port and tells its parent over IPC; answers 'stats', 'reset' and 'close' messages. Without a parent
// it prints its URL and serves until SIGINT.
//
// Every statement any library sends through `pg` is counted here (pg.Client.prototype.query), so the bench
// reports database round trips per request for every store, ours included, by statement kind.
import { AsyncLocalStorage } from 'node:async_hooks';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import express from 'express';
import session from 'express-session';
import { stores, dbStores, noSessionApps, SECRET, POOL_SIZE, ITEM_COUNT } from './stores.mjs';

const DAY_MS = 86_400_000;

// ---- counting ------------------------------------------------------------------------------------------------

const counters = newCounters();
function newCounters() {
  return { requests: 0, queries: 0, kinds: {}, errors: 0, lastError: null, cpuSince: process.cpuUsage() };
}
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function countedQuery(config) {
  const text = typeof config === 'string' ? config : config?.text;
  if (typeof text === 'string') {
    counters.queries++;
    const kind = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? '?';
    counters.kinds[kind] = (counters.kinds[kind] ?? 0) + 1;
  }
  return query.apply(this, arguments);
};

// ---- the app -------------------------------------------------------------------------------------------------

const ITEM_SQL = 'SELECT id, name, price FROM bench_items WHERE id = $1';

/** Runs `statements` once across processes started together (CREATE TABLE IF NOT EXISTS is not atomic). */
async function setupOnce(url, statements) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(72706)');
    for (const sql of statements) await client.query(sql);
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
}

async function loadLibrary() {
  const path = process.env.BENCH_LIB;
  return import(path ? pathToFileURL(path).href : 'typeorm-session');
}

async function ourDataSource(url) {
  const { DataSource } = await import('typeorm');
  const dataSource = new DataSource({ type: 'postgres', url, poolSize: POOL_SIZE });
  await dataSource.initialize();
  return dataSource;
}

export async function buildApp(store, url) {
  if (!stores[store]) throw new Error(`unknown store "${store}" (one of ${Object.keys(stores).join(', ')})`);
  const app = express();
  const cleanup = [];
  const sessionOptions = { secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: DAY_MS } };
  let dataSource;

  switch (store) {
    case 'none':
    case 'none-again':
      break;
    case 'empty-middleware':
      // What mounting any middleware costs Express: one more layer for the router to match and call.
      app.use((req, res, next) => next());
      break;
    case 'async-context': {
      const storage = new AsyncLocalStorage();
      app.use((req, res, next) => storage.run({ req }, next));
      break;
    }
    case 'memory':
      app.use(session({ ...sessionOptions, store: new session.MemoryStore() }));
      break;
    case 'pg-simple': {
      // As connect-pg-simple's README: an existing pg Pool, the table created if missing.
      const { default: connectPgSimple } = await import('connect-pg-simple');
      const PgStore = connectPgSimple(session);
      const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE });
      const pgStore = new PgStore({ pool, tableName: stores[store].table, createTableIfMissing: true });
      app.use(session({ ...sessionOptions, store: pgStore }));
      cleanup.push(() => pgStore.close(), () => pool.end());
      break;
    }
    case 'connect-typeorm': {
      // As connect-typeorm's README: the user's entity, a repository, the README's example options.
      const { DataSource } = await import('typeorm');
      const { Session } = await import('./connect-typeorm-entity.mjs');
      const { default: connectTypeorm } = await import('connect-typeorm');
      const own = new DataSource({ type: 'postgres', url, entities: [Session], synchronize: true, poolSize: POOL_SIZE });
      await own.initialize();
      const typeormStore = new connectTypeorm.TypeormStore({ cleanupLimit: 2, ttl: 86400 }).connect(own.getRepository(Session));
      app.use(session({ ...sessionOptions, store: typeormStore }));
      cleanup.push(() => own.destroy());
      break;
    }
    case 'redis': {
      // As connect-redis's README: a node-redis client, connected before use. Keys under a prefix of this
      // process's own, deleted at close, so a run leaves nothing in a shared Redis.
      const { createClient } = await import('redis');
      const { RedisStore } = await import('connect-redis');
      const { redisUrl } = await import('./redis.mjs');
      const client = createClient({ url: redisUrl() });
      client.on('error', (err) => {
        counters.errors++;
        counters.lastError = String(err?.stack ?? err);
      });
      await client.connect();
      const prefix = `tsess-bench-${process.pid}:`;
      app.use(session({ ...sessionOptions, store: new RedisStore({ client, prefix }) }));
      cleanup.push(async () => {
        for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) if (keys.length) await client.del(keys);
        await client.quit();
      });
      break;
    }
    case 'floor': {
      const { FloorStore } = await import('./floor-store.mjs');
      const table = stores[store].table;
      await setupOnce(url, [
        `CREATE TABLE IF NOT EXISTS "${table}" (id varchar(64) PRIMARY KEY, data text NOT NULL, ` +
          'expires_at bigint NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL, user_id varchar(255) NULL)',
        `CREATE INDEX IF NOT EXISTS "${table}_expires_at" ON "${table}" (expires_at)`,
        `CREATE INDEX IF NOT EXISTS "${table}_user_id" ON "${table}" (user_id)`,
      ]);
      const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE });
      app.use(session({ ...sessionOptions, store: new FloorStore({ pool, table }) }));
      cleanup.push(() => pool.end());
      break;
    }
    case 'ours-store':
    case 'handwritten-qr':
    case 'datasource-query': {
      const { TypeormSessionStore } = await loadLibrary();
      dataSource = await ourDataSource(url);
      const ourStore = new TypeormSessionStore({ dataSource });
      app.use(session({ ...sessionOptions, store: ourStore }));
      cleanup.push(() => ourStore.close(), () => dataSource.destroy());
      break;
    }
    case 'ours':
    case 'ours-no-transaction': {
      const { sessionStore } = await loadLibrary();
      dataSource = await ourDataSource(url);
      // BENCH_OURS_OPTIONS (JSON) adds options, to measure what one costs (e.g. {"transaction":false}).
      const extra = JSON.parse(process.env.BENCH_OURS_OPTIONS ?? '{}');
      if (store === 'ours-no-transaction') extra.transaction = false;
      const middleware = sessionStore({ dataSource, secret: SECRET, cookie: { maxAge: DAY_MS }, ...extra });
      app.use(middleware);
      cleanup.push(() => middleware.close(), () => dataSource.destroy());
      break;
    }
    default:
      // Without this, a store named in stores.mjs but not built here would be measured as a bare app.
      throw new Error(`bench/server.mjs builds no app for store "${store}"`);
  }

  // Routes: the same in every app.
  app.get('/nodb', (req, res) => {
    counters.requests++;
    res.json({ ok: true });
  });

  if (!noSessionApps.includes(store)) {
    // An existing session, read and left unchanged.
    app.get('/read', (req, res) => {
      counters.requests++;
      const s = req.session;
      if (s?.userId === undefined) return void res.status(401).json({ error: 'no session' });
      res.json({ userId: s.userId, visits: s.visits });
    });
    // An existing session, changed.
    app.post('/write', (req, res) => {
      counters.requests++;
      const s = req.session;
      if (s?.userId === undefined) return void res.status(401).json({ error: 'no session' });
      s.visits = (s.visits ?? 0) + 1;
      s.lastSeen = Date.now();
      res.json({ userId: s.userId, visits: s.visits });
    });
    // A login: a new session id, the user put in it.
    let logins = 0;
    app.post('/login', (req, res, next) => {
      counters.requests++;
      req.session.regenerate((err) => {
        if (err) return next(err);
        req.session.userId = `user-${process.pid}-${++logins}`;
        req.session.visits = 0;
        res.json({ userId: req.session.userId });
      });
    });
  }

  if (dbStores.includes(store)) {
    await setupOnce(url, [
      'CREATE TABLE IF NOT EXISTS bench_items (id integer PRIMARY KEY, name text NOT NULL, price integer NOT NULL)',
      `INSERT INTO bench_items SELECT g, 'item ' || g, g * 7 % 1000 FROM generate_series(1, ${ITEM_COUNT}) g ON CONFLICT DO NOTHING`,
    ]);
    let n = 0;
    const handlers = {
      // One query through the request's transaction.
      ours: async (req, res) => {
        const rows = await req.db.query(ITEM_SQL, [(n++ % ITEM_COUNT) + 1]);
        res.json(rows[0]);
      },
      // The same query, in a transaction written by hand.
      'handwritten-qr': async (req, res) => {
        const runner = dataSource.createQueryRunner();
        await runner.connect();
        try {
          await runner.startTransaction();
          const rows = await runner.query(ITEM_SQL, [(n++ % ITEM_COUNT) + 1]);
          await runner.commitTransaction();
          res.json(rows[0]);
        } catch (err) {
          if (runner.isTransactionActive) await runner.rollbackTransaction();
          throw err;
        } finally {
          await runner.release();
        }
      },
      // The same query, no transaction.
      'datasource-query': async (req, res) => {
        const rows = await dataSource.query(ITEM_SQL, [(n++ % ITEM_COUNT) + 1]);
        res.json(rows[0]);
      },
    };
    const handler = handlers[store];
    app.get('/db', async (req, res) => {
      counters.requests++;
      await handler(req, res);
    });
  }

  app.use((err, req, res, next) => {
    counters.errors++;
    counters.lastError = String(err?.stack ?? err);
    if (res.headersSent) return next(err);
    res.status(500).json({ error: String(err?.message ?? err) });
  });

  return {
    app,
    async close() {
      for (const step of cleanup) await step();
    },
  };
}

// ---- the process ---------------------------------------------------------------------------------------------

async function main() {
  const [store, scenario = 'read'] = process.argv.slice(2);
  const url = process.env.DATABASE_URL;
  const needsDatabase = !['memory', ...noSessionApps].includes(store);
  if (needsDatabase && !url) throw new Error('DATABASE_URL is not set');
  const { app, close } = await buildApp(store, url);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve, reject) => server.once('listening', resolve).once('error', reject));
  const { port } = server.address();

  const shutdown = async () => {
    // Stop accepting; connections still open after a second are cut. Handlers of requests the load
    // generator abandoned at the end of a run may still be running: give them a moment before the pools end.
    const cut = setTimeout(() => server.closeAllConnections?.(), 1000);
    await new Promise((resolve) => server.close(resolve));
    clearTimeout(cut);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await close();
  };

  if (!process.send) {
    process.stdout.write(`${store} (${scenario}) on http://127.0.0.1:${port}/\n`);
    process.once('SIGINT', () => shutdown().then(() => process.exit(0)));
    return;
  }
  process.on('disconnect', () => process.exit(0));
  process.on('message', async (msg) => {
    const reply = (body) => process.send({ ...body, id: msg.id });
    try {
      if (msg.type === 'stats') {
        if (msg.gc && typeof globalThis.gc === 'function') {
          globalThis.gc();
          globalThis.gc();
        }
        const { rss, heapUsed, external } = process.memoryUsage();
        const cpu = process.cpuUsage(counters.cpuSince);
        reply({ type: 'stats', ...counters, kinds: { ...counters.kinds }, cpuMicros: cpu.user + cpu.system, rss, heapUsed, external });
      } else if (msg.type === 'reset') {
        Object.assign(counters, newCounters());
        reply({ type: 'reset' });
      } else if (msg.type === 'close') {
        await shutdown();
        reply({ type: 'closed' });
        process.disconnect();
      }
    } catch (err) {
      reply({ type: 'error', message: String(err?.stack ?? err) });
    }
  });
  process.send({ type: 'ready', port });
}

const invokedDirectly = import.meta.url === pathToFileURL(process.argv[1] ?? '').href;
if (invokedDirectly) {
  main().catch((err) => {
    const message = String(err?.stack ?? err);
    if (process.send) process.send({ type: 'error', message }, () => process.exit(1));
    else {
      process.stderr.write(`${message}\n`);
      process.exit(1);
    }
  });
}
