/**
 * Issue 5, pruning, against a real database (TEST_DB): pruneExpired() deletes expired rows only, in bounded batches,
 * under a lease that two instances (or a crashed one) respect; a million expired rows are pruned while other
 * clients keep being served; the background pruner starts lazily, never holds the process open, and stops on
 * close(); stats() counts exactly.
 */
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { sessionEntity, sessionStore, TypeormSessionStore, type TypeormSessionError } from '../src/index.js';
import { createTableStatements } from '../src/store/statements.js';
import { express } from './helpers/app.js';
import { admin, createTestDatabase, dataSourceFor, openDataSource, QueryLog, type TestDatabase } from './helpers/database.js';
import { hexId64Sql, onlyOn, selectSeries, sideQuery, testDialect } from './helpers/dialect.js';

let db: TestDatabase;
let dataSource: DataSource;
const log = new QueryLog();
const stores: TypeormSessionStore[] = [];
const dataSources: DataSource[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url, { logging: ['query'], logger: log });
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  for (const ds of dataSources) if (ds.isInitialized) await ds.destroy();
  await dataSource.destroy();
  await db.drop();
});

let clock = Date.now();
const now = () => clock;

type Options = Partial<ConstructorParameters<typeof TypeormSessionStore>[0]>;
let tableCounter = 0;
const nextTable = () => `p_${++tableCounter}`;
function newStore(options: Options = {}) {
  const store = new TypeormSessionStore({ dataSource, tableName: nextTable(), now, pruneInterval: false, ...options });
  stores.push(store);
  return store;
}
async function openSecond(options: Parameters<typeof openDataSource>[1] = {}) {
  const ds = await openDataSource(db.url, options);
  dataSources.push(ds);
  return ds;
}

/** SQL (PostgreSQL-style, rewritten per database) on a connection of its own, outside every pool under test. */
const sql = <R = any>(text: string, params: unknown[] = []) => sideQuery<R>(db.url, text, params);
const count = async (table: string, where = '1 = 1', params: unknown[] = []) =>
  Number((await sql<{ n: number | string }>(`SELECT count(*) AS n FROM "${table}" WHERE ${where}`, params))[0]!.n);

/**
 * Inserts `n` rows straight in SQL (ids 64 hex characters, distinct per `offset`), expiring at `expiresAt`
 * (+ i ms when `spread`), created long ago.
 */
async function insertRows(table: string, n: number, expiresAt: number, options: { offset?: number; userId?: string; spread?: boolean } = {}) {
  const offset = options.offset ?? 0;
  if (!Number.isSafeInteger(expiresAt)) throw new TypeError('expiresAt: an integer');
  const expiry = `${expiresAt} + ${options.spread ? `(i - ${offset} - 1)` : '0'}`;
  await sql(
    `INSERT INTO "${table}" (id, data, expires_at, created_at, updated_at, user_id)
     ${selectSeries(offset + 1, offset + n, `${hexId64Sql('i')}, '{}', ${expiry}, 1000, 1000, $1`)}`,
    [options.userId ?? null],
  );
}
const liveSession = (extra: Record<string, unknown> = {}) =>
  ({ cookie: { originalMaxAge: 86_400_000, expires: new Date(clock + 86_400_000).toISOString() }, ...extra }) as any;

// A prune batch is the only DELETE that bounds itself with LIMIT (its SQL differs per database).
const pruneDeletes = (table: string) => log.matching(new RegExp(`^DELETE FROM [\`"]${table}[\`"] .*LIMIT`));

// ---- pruneExpired --------------------------------------------------------------------------------------

describe('pruneExpired()', () => {
  test('deletes only expired rows and returns how many, in batches of pruneBatchSize', async () => {
    const store = newStore({ pruneBatchSize: 100 });
    await store.set('live-1', liveSession());
    await store.set('live-2', liveSession({ userId: 'u' }));
    await insertRows(store.tableName, 1050, clock - 60_000, { spread: true }); // all before now
    await insertRows(store.tableName, 5, clock, { offset: 2000 }); // expiring exactly now: expired (get() agrees)
    await insertRows(store.tableName, 40, clock + 1, { offset: 3000, spread: true }); // expiring after now: live
    log.clear();
    const progress: number[] = [];
    const deleted = await store.pruneExpired({ onProgress: (n) => progress.push(n) });

    expect(deleted).toBe(1055);
    expect(await count(store.tableName)).toBe(42);
    expect(await count(store.tableName, 'expires_at <= $1', [clock])).toBe(0);
    expect(await store.get('live-1')).not.toBeNull();
    expect(await store.length()).toBe(42);
    // ceil(1055 / 100) = 11 statements: 10 full batches and one of 55.
    expect(pruneDeletes(store.tableName)).toHaveLength(11);
    expect(progress).toEqual([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1055]);

    // Nothing expired: one statement, 0.
    log.clear();
    expect(await store.pruneExpired()).toBe(0);
    expect(pruneDeletes(store.tableName)).toHaveLength(1);

    // A multiple of the batch size takes one more (empty) statement to see the end: ceil(N / batch) + 1.
    await insertRows(store.tableName, 300, clock - 1, { offset: 5000 });
    log.clear();
    expect(await store.pruneExpired()).toBe(300);
    expect(pruneDeletes(store.tableName)).toHaveLength(4);

    // Rows expire with the clock: the 40 that were live are pruned once it has passed them.
    clock += 100;
    try {
      expect(await store.pruneExpired()).toBe(40);
      expect(await count(store.tableName)).toBe(2);
    } finally {
      clock -= 100;
    }
  });

  test(
    'a million expired rows: all deleted in batches of 10,000 while another client keeps being answered',
    async () => {
      const table = nextTable();
      // The table exactly as the store makes it, but with its primary key and indexes built after the bulk
      // insert (a million inserts into a random-keyed primary key take several times longer); the store then
      // finds the table and uses it.
      const [createTable, ...indexesAndLease] = createTableStatements(testDialect, table);
      if (testDialect === 'postgres') await admin(async (c) => {
        await c.query(createTable!);
        await c.query(`ALTER TABLE "${table}" DROP CONSTRAINT "PK_${table}"`);
        await c.query(
          `INSERT INTO "${table}" (id, data, expires_at, created_at, updated_at)
           SELECT md5(i::text) || md5((i + 1)::text), '{}', 1000000 + i, 1000, 1000 FROM generate_series(1, 1000000) AS i`,
        );
        await c.query(`SET maintenance_work_mem = '256MB'`);
        await c.query(`ALTER TABLE "${table}" ADD CONSTRAINT "PK_${table}" PRIMARY KEY ("id")`);
        for (const statement of indexesAndLease) await c.query(statement);
        await c.query(`ANALYZE "${table}"`);
      }, db.url);
      else {
        // MySQL and SQLite: ids in the order of i, so the insert appends to the primary key as it goes.
        await sql(createTable!);
        await sql(
          `INSERT INTO "${table}" (id, data, expires_at, created_at, updated_at)
           ${selectSeries(1, 1_000_000, `${hexId64Sql('i')}, '{}', 1000000 + i, 1000, 1000`)}`,
        );
        for (const statement of indexesAndLease) await sql(statement);
      }
      const store = newStore({ tableName: table, pruneBatchSize: 10_000 });
      for (let i = 0; i < 5; i++) await store.set(`live-${i}`, liveSession({ userId: 'survivor', i }));
      expect(await count(table)).toBe(1_000_005);

      // The second client: a store on a DataSource of its own, reading a live session in a loop. On SQLite a
      // store on the same DataSource: its statements take turns with the prune batches on the one connection.
      const readerSource = testDialect === 'sqlite' ? dataSource : await openSecond();
      const reader = new TypeormSessionStore({ dataSource: readerSource, tableName: table, pruneInterval: false });
      stores.push(reader);
      expect(await reader.get('live-3')).toMatchObject({ i: 3 });

      let pruning = true;
      let readsDuringPrune = 0;
      const misses: unknown[] = [];
      const readLoop = (async () => {
        while (pruning) {
          // A client's next request comes through the event loop. (better-sqlite3 answers synchronously: without
          // this the loop would be an endless chain of microtasks that never lets the pruner's next batch start.)
          await new Promise((resolve) => setImmediate(resolve));
          const got = await reader.get('live-3');
          if ((got as { i?: number } | null)?.i !== 3) misses.push(got);
          if (pruning) readsDuringPrune++;
        }
      })();
      const progress: number[] = [];
      log.clear();
      let deleted: number;
      try {
        deleted = await store.pruneExpired({ onProgress: (n) => progress.push(n) });
      } finally {
        pruning = false;
        await readLoop;
      }

      expect(deleted).toBe(1_000_000);
      expect(await count(table)).toBe(5);
      expect((await store.listByUser('survivor')).map((s) => s.handle).sort()).toEqual(
        [0, 1, 2, 3, 4].map((i) => store.handleOf(`live-${i}`)).sort(),
      );
      // 100 full batches, then the empty one that shows the end.
      expect(pruneDeletes(table)).toHaveLength(101);
      expect(progress).toHaveLength(101);
      expect(progress.every((n, i) => i === 0 || n >= progress[i - 1]!)).toBe(true);
      expect(progress.slice(0, 100).every((n, i) => n === (i + 1) * 10_000)).toBe(true);
      expect(progress.at(-1)).toBe(1_000_000);
      expect(misses).toEqual([]);
      expect(readsDuringPrune).toBeGreaterThanOrEqual(20);
    },
    600_000,
  );
});

// ---- the lease -----------------------------------------------------------------------------------------

describe('the prune lease', () => {
  test('two instances pruning at once delete each expired row exactly once, never both running', async () => {
    const table = nextTable();
    const otherSource = await openSecond();
    const a = new TypeormSessionStore({ dataSource, tableName: table, now, pruneInterval: false, pruneBatchSize: 250 });
    const b = new TypeormSessionStore({ dataSource: otherSource, tableName: table, now, pruneInterval: false, pruneBatchSize: 250 });
    stores.push(a, b);
    await Promise.all([a.ready(), b.ready()]);
    await a.set('live', liveSession());

    for (let round = 0; round < 6; round++) {
      const expired = 5_000 + round * 17;
      await insertRows(table, expired, clock - 1_000, { offset: round * 100_000, spread: false });
      // One ordered log of both runs: when each was called, each batch it finished, when it returned.
      const events: string[] = [];
      const run = async (who: 'a' | 'b', store: TypeormSessionStore) => {
        events.push(`${who} called`);
        const deleted = await store.pruneExpired({ onProgress: (n) => events.push(`${who} batch ${n}`) });
        events.push(`${who} returned`);
        return deleted;
      };
      // Alternate which one starts first.
      const order: Array<'a' | 'b'> = round % 2 ? ['a', 'b'] : ['b', 'a'];
      const returned = await Promise.all(order.map((who) => run(who, who === 'a' ? a : b)));
      const results = { [order[0]!]: returned[0]!, [order[1]!]: returned[1]! } as { a: number; b: number };

      expect(results.a + results.b).toBe(expired);
      expect(Math.min(results.a, results.b)).toBe(0);
      // The batches never overlap: the one that got 0 ran no batch before the other had returned (it was
      // turned away by the lease; at most it found nothing left after the other one finished).
      const winner = results.a > 0 ? 'a' : 'b';
      const loser = winner === 'a' ? 'b' : 'a';
      const winnerDone = events.indexOf(`${winner} returned`);
      const loserBatches = events.map((e, i) => [e, i] as const).filter(([e]) => e.startsWith(`${loser} batch`));
      expect(loserBatches.filter(([, i]) => i < winnerDone)).toEqual([]);
      expect(events.filter((e) => e.startsWith(`${winner} batch`))).toHaveLength(Math.ceil((expired + 1) / 250));
      expect(await count(table)).toBe(1);
    }
  });

  test('an instance asking while another is mid-prune gets 0 at once; the holder finishes alone', async () => {
    const table = nextTable();
    const otherSource = await openSecond();
    const a = new TypeormSessionStore({ dataSource, tableName: table, now, pruneInterval: false, pruneBatchSize: 100 });
    const b = new TypeormSessionStore({ dataSource: otherSource, tableName: table, now, pruneInterval: false, pruneBatchSize: 100 });
    stores.push(a, b);
    await a.ready();
    await insertRows(table, 2_000, clock - 1);
    const timeline: string[] = [];
    let second: Promise<number> | undefined;
    const total = await a.pruneExpired({
      onProgress: (deleted) => {
        timeline.push(`a:${deleted}`);
        if (deleted === 500) {
          second = b.pruneExpired({ onProgress: (n) => timeline.push(`b:${n}`) }).then((n) => {
            timeline.push(`b returned ${n}`);
            return n;
          });
        }
      },
    });
    timeline.push(`a returned ${total}`);
    expect(await second).toBe(0);
    expect(total).toBe(2_000);
    // b answered while a still held the lease (before a's last batch), and ran no batch of its own.
    expect(timeline.indexOf('b returned 0')).toBeLessThan(timeline.indexOf('a:2000'));
    expect(timeline.filter((t) => t.startsWith('b:'))).toEqual([]);
    // Released: b can prune right away now.
    await insertRows(table, 10, clock - 1, { offset: 50_000 });
    expect(await b.pruneExpired()).toBe(10);
  });

  test('a lease left by a crashed instance blocks pruning until it expires, then pruning proceeds', async () => {
    const store = newStore({ pruneBatchSize: 100 });
    await store.ready();
    await insertRows(store.tableName, 250, 5_000);
    const lease = `${store.tableName}_lease`;
    await sql(`DELETE FROM "${lease}" WHERE name = 'prune'`);
    await sql(`INSERT INTO "${lease}" (name, holder, expires_at) VALUES ('prune', 'crashed-instance', $1)`, [clock + 30_000]);
    const t0 = clock;
    try {
      expect(await store.pruneExpired()).toBe(0);
      clock = t0 + 29_999;
      expect(await store.pruneExpired()).toBe(0);
      expect(await count(store.tableName)).toBe(250);
      expect(await sql(`SELECT holder FROM "${lease}"`)).toEqual([{ holder: 'crashed-instance' }]);
      clock = t0 + 30_001;
      expect(await store.pruneExpired()).toBe(250);
      expect(await count(store.tableName)).toBe(0);
      // Released after the run, not left to expire.
      expect(Number((await sql(`SELECT expires_at FROM "${lease}"`))[0].expires_at)).toBe(0);
    } finally {
      clock = t0;
    }
  });

  test('close() during a prune stops after the current batch and releases the lease', async () => {
    const errors: TypeormSessionError[] = [];
    const store = newStore({ pruneBatchSize: 100, onError: (e) => errors.push(e) });
    await store.ready();
    await insertRows(store.tableName, 1_000, clock - 1);
    let closing: Promise<void> | undefined;
    const deleted = await store.pruneExpired({
      onProgress: () => {
        closing ??= store.close();
      },
    });
    await closing;
    expect(deleted).toBe(100);
    expect(await count(store.tableName)).toBe(900);
    const lease = await sql(`SELECT expires_at FROM "${store.tableName}_lease"`);
    expect(Number(lease[0].expires_at)).toBe(0);
    expect(errors).toEqual([]);
    await expect(store.pruneExpired()).rejects.toMatchObject({ code: 'ERR_SESSION_STORE_CLOSED' });
    // Another instance is not locked out by the closed one.
    const next = newStore({ tableName: store.tableName });
    expect(await next.pruneExpired()).toBe(900);
  });

  test('a table made by synchronize (no lease table yet) is pruned too', async () => {
    const tableName = nextTable();
    const synced = dataSourceFor(db.url, { synchronize: true, entities: [sessionEntity({ tableName })] });
    dataSources.push(synced);
    await synced.initialize();
    const runner = synced.createQueryRunner();
    try {
      expect(await runner.hasTable(tableName)).toBe(true);
      expect(await runner.hasTable(`${tableName}_lease`)).toBe(false);
    } finally {
      await runner.release();
    }
    const errors: TypeormSessionError[] = [];
    const store = new TypeormSessionStore({ dataSource: synced, tableName, now, pruneInterval: false, onError: (e) => errors.push(e) });
    stores.push(store);
    await store.set('live', liveSession());
    await insertRows(tableName, 30, clock - 1);
    expect(await store.pruneExpired()).toBe(30);
    expect(await count(tableName)).toBe(1);
    expect(errors).toEqual([]);
  });

  // On SQLite the request's transaction holds the one connection, so there the prune joins it (next test).
  if (onlyOn('postgres', 'mysql')) test('pruneExpired() called inside a request is not part of its transaction', async () => {
    const app = express();
    const middleware = sessionStore({ dataSource, secret: 'prune-secret', tableName: nextTable(), now, pruneInterval: false });
    const store = middleware.store;
    stores.push(store);
    app.use(middleware);
    app.post('/admin/prune', (req: any, res: any, next: any) => {
      (async () => {
        await req.db.query('SELECT 1'); // the request's transaction is open
        const deleted = await store.pruneExpired();
        res.status(503).json({ deleted }); // a failure status: the request's transaction rolls back
      })().catch(next);
    });
    await store.ready();
    await insertRows(store.tableName, 500, clock - 1);
    const res = await request(app).post('/admin/prune').expect(503);
    expect(res.body).toEqual({ deleted: 500 });
    expect(await count(store.tableName)).toBe(0);
    expect(Number((await sql(`SELECT expires_at FROM "${store.tableName}_lease"`))[0].expires_at)).toBe(0);
  });

  // SQLite only: its one connection is the request's until the request ends, so waiting for a turn of its own
  // would deadlock; the prune joins the request's transaction and commits or rolls back with it.
  if (onlyOn('sqlite')) test('on SQLite, pruneExpired() inside a request joins its transaction instead of deadlocking', async () => {
    const app = express();
    const middleware = sessionStore({ dataSource, secret: 'prune-secret', tableName: nextTable(), now, pruneInterval: false });
    const store = middleware.store;
    stores.push(store);
    app.use(middleware);
    app.post('/admin/prune', (req: any, res: any, next: any) => {
      (async () => {
        await req.db.query('SELECT 1'); // the request's transaction is open
        const deleted = await store.pruneExpired();
        res.status(req.query.fail ? 503 : 200).json({ deleted });
      })().catch(next);
    });
    await store.ready();
    await insertRows(store.tableName, 500, clock - 1);
    expect((await request(app).post('/admin/prune?fail=1').expect(503)).body).toEqual({ deleted: 500 });
    expect(await count(store.tableName)).toBe(500);
    expect((await request(app).post('/admin/prune').expect(200)).body).toEqual({ deleted: 500 });
    expect(await count(store.tableName)).toBe(0);
    expect(Number((await sql(`SELECT expires_at FROM "${store.tableName}_lease"`))[0].expires_at)).toBe(0);
  });
});

// ---- the background pruner ------------------------------------------------------------------------------

async function eventually(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}
const timerOf = (store: TypeormSessionStore) => (store as unknown as { pruner?: { timer?: NodeJS.Timeout } }).pruner?.timer;

describe('the background pruner', () => {
  test('starts with the first use, not the constructor; unref-ed; prunes; close() stops it', async () => {
    const table = nextTable();
    const handlesBefore = (process as any)._getActiveHandles().length;
    const store = new TypeormSessionStore({ dataSource, tableName: table, now, pruneInterval: 0.05, pruneBatchSize: 50 });
    stores.push(store);
    expect((process as any)._getActiveHandles().length).toBe(handlesBefore);
    expect(timerOf(store)).toBeUndefined();

    // First use creates the table; expired rows then appear, and the pruner removes them.
    await store.set('live', liveSession());
    const timer = timerOf(store);
    expect(timer).toBeDefined();
    expect(timer!.hasRef()).toBe(false);
    await insertRows(table, 420, clock - 1);
    expect(await eventually(async () => (await count(table)) === 1)).toBe(true);
    expect(await store.get('live')).not.toBeNull();
    expect(timerOf(store)?.hasRef()).toBe(false);

    await store.close();
    expect(timerOf(store)).toBeUndefined();
    await insertRows(table, 30, clock - 1, { offset: 10_000 });
    // Twenty periods later nothing has touched them.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await count(table)).toBe(31);
  });

  test('pruneInterval: false starts no timer at all', async () => {
    const store = newStore({ pruneInterval: false });
    await store.set('x', liveSession());
    expect((store as unknown as { pruner?: unknown }).pruner).toBeUndefined();
  });

  test('close() while a background prune runs: no error reported, the lease released', async () => {
    const errors: TypeormSessionError[] = [];
    const table = nextTable();
    const store = new TypeormSessionStore({
      dataSource, tableName: table, now, pruneInterval: 0.05, pruneBatchSize: 1, onError: (e) => errors.push(e),
    });
    stores.push(store);
    await store.ready();
    await insertRows(table, 3_000, clock - 1);
    // A prune of 3,000 batches is under way once rows start disappearing.
    expect(await eventually(async () => (await count(table)) < 3_000)).toBe(true);
    await store.close();
    const left = await count(table);
    expect(left).toBeGreaterThan(0);
    expect(Number((await sql(`SELECT expires_at FROM "${table}_lease"`))[0].expires_at)).toBe(0);
    expect(errors).toEqual([]);
    // Stopped: nothing more is deleted.
    await new Promise((r) => setTimeout(r, 500));
    expect(await count(table)).toBe(left);
  });
});

// ---- stats ---------------------------------------------------------------------------------------------

describe('stats()', () => {
  test('live, expired and the users with most sessions are exact', async () => {
    const store = newStore();
    const users = { ann: 4, bob: 3, cat: 2, dan: 1 };
    for (const [user, n] of Object.entries(users)) {
      for (let i = 0; i < n; i++) await store.set(`${user}-${i}`, liveSession({ userId: user }));
    }
    for (let i = 0; i < 5; i++) await store.set(`anon-${i}`, liveSession());
    // Expired rows count as expired, not live, and not towards their user (dan would otherwise lead).
    await insertRows(store.tableName, 7, clock - 1, { userId: 'dan' });
    await insertRows(store.tableName, 6, clock, { offset: 100 });

    const stats = await store.stats();
    expect(stats.live).toBe(15);
    expect(stats.expired).toBe(13);
    expect(stats.topUsers).toEqual([
      { userId: 'ann', sessions: 4 },
      { userId: 'bob', sessions: 3 },
      { userId: 'cat', sessions: 2 },
      { userId: 'dan', sessions: 1 },
    ]);
    expect((await store.stats({ topUsers: 2 })).topUsers).toEqual([
      { userId: 'ann', sessions: 4 },
      { userId: 'bob', sessions: 3 },
    ]);

    expect(await store.pruneExpired()).toBe(13);
    expect(await store.stats()).toEqual({ live: 15, expired: 0, topUsers: stats.topUsers });
    clock += 86_400_001;
    try {
      expect(await store.stats()).toEqual({ live: 0, expired: 15, topUsers: [] });
    } finally {
      clock -= 86_400_001;
    }
  });
});
