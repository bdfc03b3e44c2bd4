// The apps the bench compares. Each runs in its own process (bench/server.mjs <store> <scenario>).
export const stores = {
  memory: { label: 'express-session MemoryStore', table: null },
  'pg-simple': { label: 'connect-pg-simple 10', table: 'session_pg_simple' },
  'connect-typeorm': { label: 'connect-typeorm 2.0', table: 'session_connect_typeorm' },
  floor: { label: 'floor (pg named prepared statements)', table: 'session_floor' },
  'ours-store': { label: 'ours: TypeormSessionStore + express-session', table: 'sessions' },
  ours: { label: 'ours: sessionStore() (transaction on)', table: 'sessions' },
  // Apps for the one-query comparison: express-session + TypeormSessionStore, the query written by hand.
  'handwritten-qr': { label: 'hand-written QueryRunner transaction', table: 'sessions' },
  'datasource-query': { label: 'dataSource.query(), no transaction', table: 'sessions' },
  // No session middleware at all.
  none: { label: 'express, no session middleware', table: null },
  // One middleware that only calls next(): the least any middleware costs.
  'empty-middleware': { label: 'express + an empty middleware', table: null },
};

/** Stores whose /db route exists (a TypeORM DataSource of our kind). */
export const dbStores = ['ours', 'handwritten-qr', 'datasource-query'];

export const SECRET = 'bench secret, not a real one';
export const POOL_SIZE = 10;
export const ITEM_COUNT = 1000;
