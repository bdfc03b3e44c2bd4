import type { DataSource } from 'typeorm';
import expressSession from 'express-session';
import request from 'supertest';
import { express } from './helpers/app.js';
import { TypeormSessionStore, SessionDecodeError, StoreQueryError, type TypeormSessionError } from '../src/index.js';
import { digest } from '../src/store/session-state.js';
import { settle } from '../src/callback.js';
import { admin, createTestDatabase, openDataSource, QueryLog, type TestDatabase } from './helpers/database.js';
import { onlyOn, sql, testDialect } from './helpers/dialect.js';

let db: TestDatabase;
let dataSource: DataSource;
const log = new QueryLog();
let clock = Date.now();
const now = () => clock;

beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url, { logging: ['query'], logger: log });
});
afterAll(async () => {
  await dataSource.destroy();
  await db.drop();
});

let tableCounter = 0;
function newStore(options: Partial<ConstructorParameters<typeof TypeormSessionStore>[0]> = {}) {
  return new TypeormSessionStore({ dataSource, tableName: `s_${++tableCounter}`, now, ...options });
}

const cookie = (maxAge: number) => ({ originalMaxAge: maxAge, expires: new Date(clock + maxAge).toISOString() });
const session = (extra: Record<string, unknown> = {}, maxAge = 60_000) => ({ cookie: cookie(maxAge), ...extra }) as any;

describe('Store interface', () => {
  test('set then get returns the data; get of an unknown id is null', async () => {
    const store = newStore();
    await store.set('sid-1', session({ n: 1 }));
    expect(await store.get('sid-1')).toMatchObject({ n: 1 });
    expect(await store.get('nope')).toBeNull();
  });

  test('set overwrites', async () => {
    const store = newStore();
    await store.set('a', session({ n: 1 }));
    await store.set('a', session({ n: 2 }));
    expect(await store.get('a')).toMatchObject({ n: 2 });
    expect(await store.length()).toBe(1);
  });

  test('destroy removes one id, or many given an array', async () => {
    const store = newStore();
    for (const id of ['a', 'b', 'c', 'd']) await store.set(id, session());
    await store.destroy('a');
    expect(await store.get('a')).toBeNull();
    await store.destroy(['b', 'c']);
    expect(await store.length()).toBe(1);
    expect(await store.get('d')).not.toBeNull();
  });

  test('destroy of many ids crosses the chunk size', async () => {
    const store = newStore();
    const ids = Array.from({ length: 1201 }, (_, i) => `id-${i}`);
    await Promise.all(ids.map((id) => store.set(id, session())));
    expect(await store.length()).toBe(1201);
    await store.destroy(ids.slice(0, 1200));
    expect(await store.ids()).toEqual([digest('id-1200')]);
  });

  test('all() and ids() key live sessions by digest; clear() empties', async () => {
    const store = newStore();
    await store.set('x', session({ v: 'x' }));
    await store.set('y', session({ v: 'y' }));
    const all = await store.all();
    expect(Object.keys(all).sort()).toEqual([digest('x'), digest('y')].sort());
    expect(all[digest('x')]).toMatchObject({ v: 'x' });
    expect((await store.ids()).sort()).toEqual(Object.keys(all).sort());
    await store.clear();
    expect(await store.length()).toBe(0);
    expect(await store.all()).toEqual({});
  });

  test('callbacks: called once with the result, and no promise is returned', async () => {
    const store = newStore();
    const calls: unknown[][] = [];
    await new Promise<void>((resolve) => {
      const returned = store.set('cb', session({ k: 1 }), (...args: unknown[]) => {
        calls.push(args);
        resolve();
      });
      expect(returned).toBeUndefined();
    });
    const got = await new Promise<unknown[]>((resolve) => store.get('cb', (...args) => resolve(args)));
    expect(got[0]).toBeNull();
    expect(got[1]).toMatchObject({ k: 1 });
    const length = await new Promise<unknown[]>((resolve) => store.length((...args) => resolve(args)));
    expect(length).toEqual([null, 1]);
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toEqual([[null, undefined]]);
  });

  test('a callback that throws is not called a second time with its own error', async () => {
    // The callback runs on its own tick, outside the promise chain: its exception escapes instead of being
    // caught by the rejection handler and fed back to the same callback.
    const ticks: Array<[(...a: unknown[]) => void, unknown[]]> = [];
    const realNextTick = process.nextTick;
    let calls = 0;
    process.nextTick = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => void ticks.push([fn, args])) as any;
    try {
      settle(Promise.resolve(5), () => {
        calls++;
        throw new Error('from the callback');
      });
      for (let i = 0; i < 5; i++) await Promise.resolve();
    } finally {
      process.nextTick = realNextTick;
    }
    expect(ticks).toHaveLength(1);
    const [fn, args] = ticks[0]!;
    expect(() => fn(...args)).toThrow('from the callback');
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(calls).toBe(1);
  });

  test('a database failure reaches the callback once, as StoreQueryError with the driver error as cause', async () => {
    const store = newStore();
    await store.set('exists', session());
    await dataSource.query(sql(`ALTER TABLE "${store.tableName}" RENAME COLUMN "data" TO "data_gone"`));
    const results: unknown[] = [];
    await new Promise<void>((resolve) =>
      store.get('exists', (err) => {
        results.push(err);
        resolve();
      }),
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(results).toHaveLength(1);
    expect(results[0]).toBeInstanceOf(StoreQueryError);
    expect((results[0] as StoreQueryError).code).toBe('ERR_SESSION_QUERY');
    expect(String(((results[0] as Error).cause as Error).message)).toMatch(/data/);
    await expect(store.get('exists')).rejects.toBeInstanceOf(StoreQueryError);
  });
});

describe('expiry', () => {
  test('expired sessions are neither returned, listed nor counted (like MemoryStore)', async () => {
    const store = newStore();
    await store.set('short', session({}, 1_000));
    await store.set('long', session({}, 100_000));
    clock += 2_000;
    try {
      expect(await store.get('short')).toBeNull();
      expect(await store.get('long')).not.toBeNull();
      expect(await store.length()).toBe(1);
      expect(Object.keys(await store.all())).toEqual([digest('long')]);
      expect(await store.ids()).toEqual([digest('long')]);
    } finally {
      clock -= 2_000;
    }
  });

  test('expiry checks happen in SQL, not after loading the row', async () => {
    const store = newStore();
    await store.set('short', session({}, 1_000));
    clock += 2_000;
    log.clear();
    try {
      expect(await store.get('short')).toBeNull();
    } finally {
      clock -= 2_000;
    }
    const [select] = log.matching(/SELECT/);
    expect(select).toMatch(testDialect === 'postgres' ? /"expires_at" > \$2/ : /.expires_at. > \?/);
  });

  test('a cookie with maxAge only, or no expiry at all, falls back in that order to maxAge then ttl', async () => {
    const store = newStore({ ttl: 10 });
    await store.set('maxage', { cookie: { maxAge: 5_000 } } as any);
    await store.set('ttl', { cookie: {} } as any);
    const rows = await dataSource.query(sql(`SELECT id, expires_at FROM "${store.tableName}"`));
    const byId = Object.fromEntries(rows.map((r: any) => [r.id, Number(r.expires_at)]));
    expect(byId[digest('maxage')]).toBe(clock + 5_000);
    expect(byId[digest('ttl')]).toBe(clock + 10_000);
  });

  test('ttl: 0 and negative values are rejected naming the option', () => {
    expect(() => newStore({ ttl: 0 })).toThrow(/option "ttl"/);
    expect(() => newStore({ touchAfter: -1 })).toThrow(/option "touchAfter"/);
  });
});

describe('touch', () => {
  test('inside touchAfter, an unchanged session is touched without any query', async () => {
    const store = newStore({ touchAfter: 60 });
    await store.set('t', session({}, 3_600_000));
    const loaded = await store.get('t');
    const req = { sessionID: 't', sessionStore: store } as any;
    const live = store.createSession(req, loaded as any);
    clock += 30_000;
    log.clear();
    try {
      // express-session's Cookie reads the real clock; set its expiry from the test clock instead.
      live.cookie.expires = new Date(clock + 3_600_000);
      await store.touch('t', live);
      expect(log.queries).toHaveLength(0);
      clock += 31_000; // 61 s after the stored expiry was written
      live.cookie.expires = new Date(clock + 3_600_000);
      await store.touch('t', live);
      expect(log.matching(/^UPDATE/)).toHaveLength(1);
    } finally {
      clock -= 61_000;
    }
  });

  test('a touch inside the window calls back before touch() returns, so express-session sends its response in one piece', async () => {
    const store = newStore({ touchAfter: 60 });
    await store.set('t', session({}, 3_600_000));
    const live = store.createSession({ sessionID: 't', sessionStore: store } as any, (await store.get('t')) as any);
    live.cookie.expires = new Date(clock + 3_600_000);
    let calls = 0;
    store.touch('t', live, (err) => {
      expect(err).toBeNull();
      calls++;
    });
    expect(calls).toBe(1);
    // Outside the window it is a real write, answered later.
    live.cookie.expires = new Date(clock + 3_600_000 + 61_000);
    const written = new Promise<void>((resolve) => store.touch('t', live, () => resolve()));
    expect(calls).toBe(1);
    await written;
  });

  test('the SQL itself refuses to write inside the window when touch is called without a loaded session', async () => {
    const store = newStore({ touchAfter: 60 });
    await store.set('t', session({}, 3_600_000));
    const before = await dataSource.query(sql(`SELECT expires_at, updated_at FROM "${store.tableName}"`));
    clock += 10_000;
    try {
      await store.touch('t', session({}, 3_600_000));
      const same = await dataSource.query(sql(`SELECT expires_at, updated_at FROM "${store.tableName}"`));
      expect(same).toEqual(before);
      clock += 60_000;
      await store.touch('t', session({}, 3_600_000));
      const moved = await dataSource.query(sql(`SELECT expires_at, updated_at FROM "${store.tableName}"`));
      expect(Number(moved[0].expires_at)).toBe(clock + 3_600_000);
      expect(Number(moved[0].updated_at)).toBe(clock);
    } finally {
      clock -= 70_000;
    }
  });

  test('touchAfter: 0 writes on every touch; short sessions roll even with a large touchAfter', async () => {
    const eager = newStore({ touchAfter: 0 });
    await eager.set('e', session({}, 60_000));
    clock += 1;
    log.clear();
    await eager.touch('e', session({}, 60_000));
    clock -= 1;
    expect(log.matching(/^UPDATE/)).toHaveLength(1);

    // A 10 s session with touchAfter 60 s: the window is capped at a tenth of the lifetime (1 s).
    const short = newStore({ touchAfter: 60 });
    await short.set('s', session({}, 10_000));
    clock += 2_000;
    try {
      await short.touch('s', session({}, 10_000));
      const [row] = await dataSource.query(sql(`SELECT expires_at FROM "${short.tableName}"`));
      expect(Number(row.expires_at)).toBe(clock + 10_000);
    } finally {
      clock -= 2_000;
    }
  });

  test('after a touch, get() returns the expiry in force in cookie.expires (as MemoryStore does)', async () => {
    const store = newStore({ touchAfter: 0 });
    await store.set('t', session({ n: 1 }, 60_000));
    const first = (await store.get('t')) as any;
    clock += 10_000;
    try {
      await store.touch('t', session({ n: 1 }, 60_000));
      const touched = (await store.get('t')) as any;
      expect(touched.cookie.expires).toBe(new Date(clock + 60_000).toISOString());
      expect(touched.cookie.expires).not.toBe(first.cookie.expires);
      const [row] = await dataSource.query(sql(`SELECT expires_at FROM "${store.tableName}" WHERE id = $1`), [digest('t')]);
      expect(new Date(touched.cookie.expires).getTime()).toBe(Number(row.expires_at));
      // A browser-session cookie stays one.
      await store.set('b', { cookie: { originalMaxAge: null, expires: null }, n: 2 } as any);
      await store.touch('b', { cookie: { originalMaxAge: null, expires: null }, n: 2 } as any);
      expect(((await store.get('b')) as any).cookie.expires).toBeNull();
    } finally {
      clock -= 10_000;
    }
  });

  test("express-session's own \"should reset session expiration\": a touched session read back has the new expiry", async () => {
    const store = newStore({ now: Date.now, touchAfter: 0 });
    const app = express();
    app.use(expressSession({ store, secret: 'touch-test', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }));
    app.get('/', (req: any, res) => {
      req.session.hit = true;
      req.session.touch();
      res.end();
    });
    const first = await request(app).get('/').expect(200);
    const cookieHeader = (first.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
    const sid = decodeURIComponent(cookieHeader.split('=')[1]!).slice(2).split('.')[0]!;
    const before = new Date(((await store.get(sid)) as any).cookie.expires).getTime();
    await new Promise((resolve) => setTimeout(resolve, 20)); // so the second expiry differs from the first
    await request(app).get('/').set('Cookie', cookieHeader).expect(200);
    const after = new Date(((await store.get(sid)) as any).cookie.expires).getTime();
    expect(after).toBeGreaterThan(before);
    const [row] = await dataSource.query(sql(`SELECT expires_at FROM "${store.tableName}" WHERE id = $1`), [digest(sid)]);
    expect(after).toBe(Number(row.expires_at));
  });

  test('touch does not revive an expired session', async () => {
    const store = newStore({ touchAfter: 0 });
    await store.set('gone', session({}, 1_000));
    clock += 5_000;
    try {
      await store.touch('gone', session({}, 1_000));
      expect(await store.get('gone')).toBeNull();
    } finally {
      clock -= 5_000;
    }
  });
});

describe('at rest', () => {
  test('no clear-text session id anywhere in the table', async () => {
    const store = newStore();
    const sid = 'SECRET-session-id-0123456789abcdef';
    await store.set(sid, session({ hello: 'world' }));
    const rows = await dataSource.query(sql(`SELECT * FROM "${store.tableName}"`));
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(sid);
    expect(rows[0].id).toBe(digest(sid));
    expect(rows[0].id).toMatch(/^[0-9a-f]{64}$/);
  });

  test('the user id comes from the configured field, dotted paths included', async () => {
    const plain = newStore();
    await plain.set('u1', session({ userId: 42 }));
    await plain.set('u2', session({ userId: { not: 'an id' } }));
    const rows = await dataSource.query(sql(`SELECT id, user_id FROM "${plain.tableName}"`));
    const byId = Object.fromEntries(rows.map((r: any) => [r.id, r.user_id]));
    expect(byId).toEqual({ [digest('u1')]: '42', [digest('u2')]: null });

    const passport = newStore({ userIdField: 'passport.user' });
    await passport.set('p', session({ passport: { user: 'alice' } }));
    const [row] = await dataSource.query(sql(`SELECT user_id FROM "${passport.tableName}"`));
    expect(row.user_id).toBe('alice');
  });

  test('a corrupt row is no session, reported through onError, and does not break all()', async () => {
    const errors: TypeormSessionError[] = [];
    const store = newStore({ onError: (e) => errors.push(e) });
    await store.set('good', session({ ok: true }));
    await store.set('bad', session());
    await dataSource.query(sql(`UPDATE "${store.tableName}" SET data = '{not json' WHERE id = $1`), [digest('bad')]);
    expect(await store.get('bad')).toBeNull();
    expect(Object.keys(await store.all())).toEqual([digest('good')]);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toBeInstanceOf(SessionDecodeError);
    expect(errors[0]!.cause).toBeInstanceOf(SyntaxError);
    expect(errors[0]!.message).not.toContain('bad');
  });

  test('a custom serializer is used both ways', async () => {
    const store = newStore({
      serializer: {
        stringify: (v) => Buffer.from(JSON.stringify(v)).toString('base64'),
        parse: (t) => JSON.parse(Buffer.from(t, 'base64').toString()),
      },
    });
    await store.set('s', session({ secret: 'shh' }));
    const [row] = await dataSource.query(sql(`SELECT data FROM "${store.tableName}"`));
    expect(row.data).not.toContain('shh');
    expect(await store.get('s')).toMatchObject({ secret: 'shh' });
  });
});

describe('concurrency', () => {
  test('100 concurrent first saves of one id all succeed and leave one row', async () => {
    const store = newStore();
    await store.ready();
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) => store.set('same', session({ i }))),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const rows = await dataSource.query(sql(`SELECT COUNT(*) AS n FROM "${store.tableName}"`));
    expect(Number(rows[0].n)).toBe(1);
  });

  test('concurrent first saves also succeed while the table is still being created', async () => {
    const store = newStore();
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => store.set(`id-${i % 5}`, session({ i }))),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(await store.length()).toBe(5);
  });
});

describe('options', () => {
  test('unknown and malformed options throw a TypeError naming the option', () => {
    expect(() => new TypeormSessionStore({ dataSource, tabelName: 'x' } as any)).toThrow(/unknown option "tabelName"/);
    expect(() => new TypeormSessionStore({} as any)).toThrow(/option "dataSource"/);
    expect(() => newStore({ tableName: 'bad name; drop' })).toThrow(/option "tableName"/);
    expect(() => newStore({ serializer: {} as any })).toThrow(/option "serializer"/);
    expect(() => newStore({ createTable: 'yes' as any })).toThrow(/option "createTable"/);
    expect(() => newStore({ userIdField: 'a..b' })).toThrow(/option "userIdField"/);
    expect(() => newStore({ preparedStatements: 'no' as any })).toThrow(/option "preparedStatements"/);
  });

  test('a cockroachdb DataSource is refused at construction, naming the option and the reason', async () => {
    const { DataSource } = await import('typeorm');
    // Never initialized: the type alone decides, before any connection.
    const cockroach = new DataSource({ type: 'cockroachdb', url: 'postgres://root@127.0.0.1:1/defaultdb' } as never);
    expect(() => new TypeormSessionStore({ dataSource: cockroach })).toThrow(TypeError);
    expect(() => new TypeormSessionStore({ dataSource: cockroach })).toThrow(/option "dataSource" .*"cockroachdb".*SAVEPOINT cockroach_restart/);
    // Another type without a dialect gets the list of those that have one.
    const mssql = { options: { type: 'mssql' }, createQueryRunner: () => undefined } as never;
    expect(() => new TypeormSessionStore({ dataSource: mssql })).toThrow(/option "dataSource" uses database type "mssql", which is not supported \(postgres, mysql/);
  });

  if (onlyOn('postgres')) {
    /** The names of the prepared statements on the one connection of a pool of one. */
    async function preparedOn(options: { preparedStatements?: boolean }): Promise<string[]> {
      const single = await openDataSource(db.url, { poolSize: 1 } as never);
      try {
        const store = new TypeormSessionStore({ dataSource: single, tableName: `s_${++tableCounter}`, now, pruneInterval: false, ...options });
        await store.set('p', session());
        expect(await store.get('p')).not.toBeNull();
        const pool = (single.driver as unknown as { master: { query(text: string): Promise<{ rows: Array<{ name: string }> }> } }).master;
        const { rows } = await pool.query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'tsess_%' ORDER BY name");
        return rows.map((row) => row.name);
      } finally {
        await single.destroy();
      }
    }

    test('PostgreSQL: the store\'s statements are prepared once per connection, or never with preparedStatements: false', async () => {
      // get and the upsert of a new session.
      expect(await preparedOn({})).toHaveLength(2);
      expect(await preparedOn({ preparedStatements: false })).toEqual([]);
    });

    test('PostgreSQL: a prepared statement the server lost fails with an error naming preparedStatements: false', async () => {
      // What a pooler in transaction mode does (PgBouncer 1.18, Debian 12's): the next statement of this
      // client runs on a server connection that never saw its Parse. DEALLOCATE ALL on the pool's one
      // connection makes the same state without a pooler (test/deploy/pgbouncer.test.ts shows it with one).
      const single = await openDataSource(db.url, { poolSize: 1 } as never);
      try {
        const pool = (single.driver as unknown as { master: { query(text: string): Promise<unknown> } }).master;
        const named = new TypeormSessionStore({ dataSource: single, tableName: `s_${++tableCounter}`, now, pruneInterval: false });
        await named.set('p', session({ n: 1 }));
        expect(await named.get('p')).toMatchObject({ n: 1 });
        await pool.query('DEALLOCATE ALL');
        const err = await named.get('p').then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(StoreQueryError);
        expect((err as Error).message).toMatch(/session get failed: .*set the store option `preparedStatements: false`/);
        expect((err as { cause?: { driverError?: { code?: string } } }).cause?.driverError?.code).toBe('26000');

        const unnamed = new TypeormSessionStore({ dataSource: single, tableName: named.tableName, now, pruneInterval: false, preparedStatements: false });
        await unnamed.set('q', session({ n: 2 }));
        await pool.query('DEALLOCATE ALL');
        expect(await unnamed.get('q')).toMatchObject({ n: 2 });
      } finally {
        await single.destroy();
      }
    });

    test('PostgreSQL: a prepared statement keeps working after its table is dropped and made again', async () => {
      const single = await openDataSource(db.url, { poolSize: 1 } as never);
      try {
        const store = new TypeormSessionStore({ dataSource: single, tableName: `s_${++tableCounter}`, now, pruneInterval: false });
        await store.set('p', session({ n: 1 }));
        expect(await store.get('p')).toMatchObject({ n: 1 });
        await single.query(`DROP TABLE "${store.tableName}"`);
        await single.query(`DROP TABLE "${store.tableName}_lease"`);
        const again = new TypeormSessionStore({ dataSource: single, tableName: store.tableName, now, pruneInterval: false });
        await again.set('p', session({ n: 2 }));
        expect(await store.get('p')).toMatchObject({ n: 2 });
      } finally {
        await single.destroy();
      }
    });
  }

  test('constructing a store starts no query and no timer', async () => {
    log.clear();
    const handlesBefore = (process as any)._getActiveHandles().length;
    const store = newStore();
    expect(log.queries).toEqual([]);
    expect((process as any)._getActiveHandles().length).toBe(handlesBefore);
    await store.close();
    await expect(store.get('x')).rejects.toMatchObject({ code: 'ERR_SESSION_STORE_CLOSED' });
  });

  test('a store whose DataSource is not initialized fails its calls clearly, then works once it is', async () => {
    const { dataSourceFor } = await import('./helpers/database.js');
    const late = dataSourceFor(db.url);
    const store = new TypeormSessionStore({ dataSource: late, tableName: 'late_init', now });
    await expect(store.get('x')).rejects.toMatchObject({ code: 'ERR_DATASOURCE_NOT_INITIALIZED' });
    await late.initialize();
    try {
      await store.set('x', session({ ok: 1 }));
      expect(await store.get('x')).toMatchObject({ ok: 1 });
    } finally {
      await late.destroy();
    }
  });
});

if (onlyOn('postgres')) test('admin helper reaches the same server (sanity for the other tests)', async () => {
  const rows = await admin((c) => c.query('SELECT current_database() AS name'), db.url);
  expect(rows.rows[0].name).toBe(db.name);
});
