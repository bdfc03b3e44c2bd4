/**
 * PgBouncer in transaction mode in front of PostgreSQL (the configuration TEST_PGBOUNCER turns on; the
 * global setup starts it and each test database is reached through it). Debian 12's PgBouncer is 1.18: it
 * hands every transaction, and every autocommit statement, to whichever server connection is free, and
 * keeps no prepared statement across them (max_prepared_statements arrived in 1.21).
 */
import { Client } from 'pg';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { StoreQueryError, TypeormSessionStore } from '../../src/index.js';
import { makeApp } from '../helpers/app.js';
import { createTestDatabase, openDataSource, type TestDatabase } from '../helpers/database.js';

let db: TestDatabase;
let dataSource: DataSource;

/** Runs `work` on PgBouncer's admin console (simple-query protocol only, as the console requires). */
async function console<T>(work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ host: '127.0.0.1', port: Number(process.env.TEST_PGBOUNCER_PORT), user: 'postgres', database: 'pgbouncer' });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** The server connections PgBouncer holds for the test database. */
async function serverConnections(): Promise<number> {
  const { rows } = await console((c) => c.query('SHOW POOLS'));
  const pool = rows.find((row: { database: string }) => row.database === db.name);
  return pool ? Number(pool.sv_active) + Number(pool.sv_idle) + Number(pool.sv_used) + Number(pool.sv_tested) + Number(pool.sv_login) : 0;
}

/** Client connections through PgBouncer, each inside a transaction: every server connection it has is taken. */
async function holdEveryServer(): Promise<() => Promise<void>> {
  const holders: Client[] = [];
  for (let n = await serverConnections(); n > 0; n--) {
    const client = new Client({ connectionString: db.url });
    await client.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1');
    holders.push(client);
  }
  return async () => {
    for (const client of holders) {
      await client.query('ROLLBACK');
      await client.end();
    }
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url, { poolSize: 1 } as never);
  await dataSource.query('CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)');
});
afterAll(async () => {
  await dataSource.destroy();
  await db.drop();
});

const cookie = (maxAge: number) => ({ originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge).toISOString() });

test('the test database is reached through PgBouncer, in transaction mode', async () => {
  expect(new URL(db.url).port).toBe(process.env.TEST_PGBOUNCER_PORT);
  const { rows } = await console((c) => c.query('SHOW CONFIG'));
  expect(rows.find((row: { key: string }) => row.key === 'pool_mode')?.value).toBe('transaction');
  expect(await serverConnections()).toBeGreaterThan(0);
});

test('named prepared statements fail on another server connection, with an error naming preparedStatements: false', async () => {
  const store = new TypeormSessionStore({ dataSource, tableName: 'named', pruneInterval: false });
  await store.set('a', { cookie: cookie(60_000), n: 1 } as never);
  expect(await store.get('a')).toMatchObject({ n: 1 });
  // The DataSource's one client prepared the statement on some server connection; with all of them taken,
  // its next statement goes to a new one, as it would under any concurrent load.
  const release = await holdEveryServer();
  try {
    const err = await store.get('a').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreQueryError);
    expect((err as Error).message).toMatch(/set the store option `preparedStatements: false`/);
    expect((err as { cause?: { driverError?: { code?: string } } }).cause?.driverError?.code).toMatch(/^(26000|42P05)$/);
  } finally {
    await release();
  }
});

test('with preparedStatements: false the same sequence works', async () => {
  const store = new TypeormSessionStore({ dataSource, tableName: 'unnamed', pruneInterval: false, preparedStatements: false });
  await store.set('a', { cookie: cookie(60_000), n: 1 } as never);
  expect(await store.get('a')).toMatchObject({ n: 1 });
  const release = await holdEveryServer();
  try {
    expect(await store.get('a')).toMatchObject({ n: 1 });
    await store.set('a', { cookie: cookie(60_000), n: 2 } as never);
  } finally {
    await release();
  }
  expect(await store.get('a')).toMatchObject({ n: 2 });
});

test('a request transaction keeps one server connection: SET LOCAL holds for the request, and ends with it', async () => {
  const { app, middleware } = makeApp(
    dataSource,
    (app) => {
      app.post('/note', async (req, res) => {
        await req.db!.query("SET LOCAL statement_timeout = '4321ms'");
        await req.db!.query('INSERT INTO notes (text) VALUES ($1)', ['kept']);
        const [{ statement_timeout: timeout }] = await req.db!.query('SHOW statement_timeout');
        (req.session as unknown as { notes: number }).notes = 1;
        res.json({ timeout });
      });
      app.get('/timeout', async (req, res) => {
        const [{ statement_timeout: timeout }] = await req.db!.query('SHOW statement_timeout');
        res.json({ timeout, notes: (req.session as unknown as { notes?: number }).notes ?? 0 });
      });
    },
    { preparedStatements: false, tableName: 'app_sessions', pruneInterval: false },
  );
  try {
    const agent = request.agent(app);
    // Other clients keep PgBouncer's server connections busy meanwhile, so a statement of the request that
    // left its connection would land on another one.
    const release = await holdEveryServer();
    let first;
    try {
      first = await agent.post('/note').expect(200);
    } finally {
      await release();
    }
    expect(first.body.timeout).toBe('4321ms');
    const second = await agent.get('/timeout').expect(200);
    expect(second.body).toEqual({ timeout: '0', notes: 1 });
    expect(await dataSource.query('SELECT text FROM notes')).toEqual([{ text: 'kept' }]);
  } finally {
    await middleware.close();
  }
});
