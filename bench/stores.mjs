// The apps the bench compares. Each runs in its own process (bench/server.mjs <store> <scenario>).
export const stores = {
  memory: { label: 'express-session MemoryStore', table: null },
  'pg-simple': { label: 'connect-pg-simple 10', table: 'session_pg_simple' },
  'connect-typeorm': { label: 'connect-typeorm 2.0', table: 'session_connect_typeorm' },
  // What many would pick instead of an SQL store: sessions in Redis (REDIS_URL, or 127.0.0.1:6379).
  redis: { label: 'connect-redis 9 (Redis)', table: null },
  floor: { label: 'floor (pg named prepared statements)', table: 'session_floor' },
  'ours-store': { label: 'ours: TypeormSessionStore + express-session', table: 'sessions' },
  ours: { label: 'ours: sessionStore() (transaction on)', table: 'sessions' },
  // The same without the request's transaction: no AsyncLocalStorage, no req.db (the no-database route).
  'ours-no-transaction': { label: 'ours: sessionStore({ transaction: false })', table: 'sessions' },
  // Apps for the one-query comparison: express-session + TypeormSessionStore, the query written by hand.
  'handwritten-qr': { label: 'hand-written QueryRunner transaction', table: 'sessions' },
  'datasource-query': { label: 'dataSource.query(), no transaction', table: 'sessions' },
  // No session middleware at all.
  none: { label: 'express, no session middleware', table: null },
  // The same app again, measured as if it were another: how far apart two identical apps come out (the
  // noise floor of the no-database comparison).
  'none-again': { label: 'express, no session middleware (again)', table: null },
  // One middleware that only calls next(): the least any middleware costs.
  'empty-middleware': { label: 'express + an empty middleware', table: null },
  // One middleware that runs the rest of the request in AsyncLocalStorage.run(): what the async context that
  // currentManager() needs costs by itself (on Node 20 it turns on async_hooks for the whole process).
  'async-context': { label: 'express + an AsyncLocalStorage.run() middleware', table: null },
};

/** Apps with no session middleware: they answer /nodb only, and need no database. */
export const noSessionApps = ['none', 'none-again', 'empty-middleware', 'async-context'];

/** Stores whose /db route exists (a TypeORM DataSource of our kind). */
export const dbStores = ['ours', 'handwritten-qr', 'datasource-query'];

export const SECRET = 'bench secret, not a real one';
export const POOL_SIZE = 10;
export const ITEM_COUNT = 1000;
