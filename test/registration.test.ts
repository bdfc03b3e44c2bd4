import express from 'express';
import session from 'express-session';
import request from 'supertest';
import { Column, DataSource, Entity, EntitySchema, PrimaryColumn, type Logger } from 'typeorm';
import { sessionEntity, TypeormSessionStore } from '../src/index.js';
import { digest } from '../src/store/session-state.js';
import { createTestDatabase, dataSourceFor, type TestDatabase } from './helpers/database.js';
import { columnsOf, indexesOf, sessionTableIndexes, testDialect } from './helpers/dialect.js';
import { destroyFully, openConnections, poolPids } from './helpers/pool.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

// Every DataSource a test opens is destroyed after it, sockets closed, so tests never see each other's pools.
const opened: DataSource[] = [];
function track(dataSource: DataSource): DataSource {
  opened.push(dataSource);
  return dataSource;
}
afterEach(async () => {
  for (const ds of opened.splice(0)) await destroyFully(ds);
});

/** Collects what TypeORM reports as a problem: query errors and warnings (pool errors arrive as warnings). */
class ProblemLog implements Logger {
  readonly problems: string[] = [];
  logQuery() {}
  logQueryError(error: string | Error, query: string) {
    this.problems.push(`query error: ${String(error)} in ${query}`);
  }
  logQuerySlow() {}
  logSchemaBuild() {}
  logMigration() {}
  log(level: 'log' | 'info' | 'warn', message: unknown) {
    if (level === 'warn') this.problems.push(`warn: ${String(message)}`);
  }
}

const cookie = () => ({ originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString() });
const data = (extra: Record<string, unknown>) => ({ cookie: cookie(), ...extra }) as any;

const sessionMetadatas = (ds: DataSource, table: string) => ds.entityMetadatas.filter((m) => m.tableName === table);

/** The store round trip, plus the same row seen through TypeORM's own repository for the entity. */
async function expectWorking(ds: DataSource, store: TypeormSessionStore, sid = 'sid') {
  await store.set(sid, data({ sid }));
  expect(await store.get(sid)).toMatchObject({ sid });
  const entity = sessionEntity({ tableName: store.tableName });
  expect(ds.hasMetadata(entity)).toBe(true);
  expect(sessionMetadatas(ds, store.tableName)).toHaveLength(1);
  const rows = await ds.getRepository(entity).find();
  expect(rows.map((r) => r.id)).toContain(digest(sid));
  const row = rows.find((r) => r.id === digest(sid))!;
  expect(JSON.parse(row.data)).toMatchObject({ sid });
}

describe('sessionEntity()', () => {
  test('returns the identical object for one table name, distinct objects and entity names for others', () => {
    expect(sessionEntity()).toBe(sessionEntity());
    expect(sessionEntity({ tableName: 'sessions' })).toBe(sessionEntity());
    expect(sessionEntity({ tableName: 'reg_a' })).toBe(sessionEntity({ tableName: 'reg_a' }));
    const a = sessionEntity({ tableName: 'reg_a' });
    const b = sessionEntity({ tableName: 'reg_b' });
    expect(a).not.toBe(b);
    expect(a).not.toBe(sessionEntity());
    expect(a.options.tableName).toBe('reg_a');
    expect(b.options.tableName).toBe('reg_b');
    const names = new Set([sessionEntity().options.name, a.options.name, b.options.name]);
    expect(names.size).toBe(3);
  });

  test('rejects a table name that is not a plain identifier', () => {
    expect(() => sessionEntity({ tableName: 'x; DROP TABLE y' })).toThrow(/tableName/);
  });
});

describe('the store registers its entity in every setup', () => {
  test('entity listed by the user, DataSource initialized before the store', async () => {
    const entity = sessionEntity({ tableName: 'reg_listed' });
    const ds = track(dataSourceFor(db.url, { entities: [entity] }));
    await ds.initialize();
    const count = ds.entityMetadatas.length;
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_listed' });
    await expectWorking(ds, store);
    expect(ds.entityMetadatas).toHaveLength(count);
    expect((ds.options.entities as unknown[]).filter((e) => e === entity)).toHaveLength(1);
  });

  test('entity listed by the user, store created before initialize()', async () => {
    const entity = sessionEntity({ tableName: 'reg_listed_late' });
    const ds = track(dataSourceFor(db.url, { entities: [entity] }));
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_listed_late' });
    expect(ds.options.entities).toEqual([entity]);
    await ds.initialize();
    await expectWorking(ds, store);
  });

  test('entity not listed, DataSource initialized before the store', async () => {
    const ds = track(dataSourceFor(db.url));
    await ds.initialize();
    expect(ds.entityMetadatas).toHaveLength(0);
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_unlisted' });
    await expectWorking(ds, store);
    expect(ds.entityMetadatas).toHaveLength(1);
  });

  test('entity not listed, store created first, then `await ds.initialize()`', async () => {
    const ds = track(dataSourceFor(db.url));
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_unlisted_late' });
    await ds.initialize();
    await expectWorking(ds, store);
    expect(ds.entityMetadatas).toHaveLength(1);
  });

  test("the user's own entities survive a registration after initialize() and keep working", async () => {
    const Note = new EntitySchema<{ id: number; text: string }>({
      name: 'RegNote',
      tableName: 'reg_notes',
      columns: { id: { type: 'int', primary: true }, text: { type: 'text' } },
    });
    const ds = track(dataSourceFor(db.url, { entities: [Note] }));
    await ds.initialize();
    await ds.query('CREATE TABLE reg_notes (id int PRIMARY KEY, text text NOT NULL)');
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_with_user_entity' });
    await expectWorking(ds, store);
    expect(ds.entityMetadatas.map((m) => m.tableName).sort()).toEqual(['reg_notes', 'reg_with_user_entity']);
    await ds.getRepository(Note).save({ id: 1, text: 'kept' });
    expect(await ds.getRepository(Note).find()).toEqual([{ id: 1, text: 'kept' }]);
  });

  test('two stores on two tables of one DataSource work side by side, rows in the right tables', async () => {
    const ds = track(dataSourceFor(db.url));
    await ds.initialize();
    const left = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_left' });
    const right = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_right' });
    await Promise.all([left.set('l', data({ side: 'left' })), right.set('r', data({ side: 'right' }))]);
    expect(await left.get('l')).toMatchObject({ side: 'left' });
    expect(await right.get('r')).toMatchObject({ side: 'right' });
    expect(await left.get('r')).toBeNull();
    expect(await right.get('l')).toBeNull();
    expect(await ds.query('SELECT id FROM reg_left')).toEqual([{ id: digest('l') }]);
    expect(await ds.query('SELECT id FROM reg_right')).toEqual([{ id: digest('r') }]);
    const leftRows = await ds.getRepository(sessionEntity({ tableName: 'reg_left' })).find();
    const rightRows = await ds.getRepository(sessionEntity({ tableName: 'reg_right' })).find();
    expect(leftRows.map((r) => r.id)).toEqual([digest('l')]);
    expect(rightRows.map((r) => r.id)).toEqual([digest('r')]);
    expect(sessionMetadatas(ds, 'reg_left')).toHaveLength(1);
    expect(sessionMetadatas(ds, 'reg_right')).toHaveLength(1);
  });
});

describe('repeated app construction', () => {
  function buildApp(store: TypeormSessionStore, errors: unknown[]) {
    const app = express();
    app.use(session({ store, secret: 'test secret', resave: false, saveUninitialized: false }));
    app.get('/set/:n', (req, res) => {
      (req.session as any).n = Number(req.params.n);
      res.send('ok');
    });
    app.get('/get', (req, res) => {
      res.json({ n: (req.session as any).n ?? null });
    });
    app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(err);
      res.status(500).send(String(err));
    });
    return app;
  }

  async function roundTrip(app: express.Express, n: number) {
    const set = await request(app).get(`/set/${n}`);
    expect(set.status).toBe(200);
    const cookies = set.headers['set-cookie'] as unknown as string[] | undefined;
    expect(cookies).toHaveLength(1);
    const got = await request(app).get('/get').set('Cookie', cookies![0]!.split(';')[0]!);
    expect(got.status).toBe(200);
    expect(got.body).toEqual({ n });
  }

  test('100 builds of the whole app: same DataSource, then a fresh DataSource each time; nothing piles up or leaks', async () => {
    const errors: unknown[] = [];
    const consoleError = jest.spyOn(console, 'error');
    const consoleWarn = jest.spyOn(console, 'warn');
    try {
      // (a) one DataSource for the life of the process, the app (and its store) rebuilt 100 times
      const sharedLog = new ProblemLog();
      const shared = track(dataSourceFor(db.url, { logger: sharedLog, logging: true }));
      await shared.initialize();
      let metadataCount: number | undefined;
      for (let i = 0; i < 100; i++) {
        await roundTrip(buildApp(new TypeormSessionStore({ dataSource: shared }), errors), i);
        metadataCount ??= shared.entityMetadatas.length;
        expect(shared.entityMetadatas).toHaveLength(metadataCount);
      }
      expect(metadataCount).toBe(1);
      expect(sessionMetadatas(shared, 'sessions')).toHaveLength(1);
      const listed = (shared.options.entities as unknown[]).filter(
        (e) => (e as EntitySchema | undefined)?.options?.tableName === 'sessions',
      );
      expect(listed).toEqual([sessionEntity()]);
      expect(await shared.getRepository(sessionEntity()).count()).toBe(100);

      // (b) a fresh DataSource per app: initialize, serve, destroy
      const freshLog = new ProblemLog();
      for (let i = 0; i < 100; i++) {
        const ds = dataSourceFor(db.url, { logger: freshLog, logging: true });
        await ds.initialize();
        try {
          await roundTrip(buildApp(new TypeormSessionStore({ dataSource: ds }), errors), 1000 + i);
          expect(sessionMetadatas(ds, 'sessions')).toHaveLength(1);
        } finally {
          await destroyFully(ds);
        }
      }

      // Only the shared pool's connections remain on the test database. The shared pool may have closed its
      // idle connections while (b) ran (pg-pool's idle timeout is 10 s; slow runs take longer): one query
      // makes sure it holds one again.
      expect(await shared.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
      if (testDialect === 'sqlite') {
        // No server to ask: the shared DataSource's one connection is the only handle left on the file.
        expect(shared.isInitialized).toBe(true);
        expect(await openConnections(db)).toHaveLength(1);
      } else {
        expect(poolPids(shared).length).toBeGreaterThan(0);
        expect(await openConnections(db)).toEqual([...poolPids(shared)].sort((x, y) => x - y));
      }
      expect(errors).toEqual([]);
      expect(sharedLog.problems).toEqual([]);
      expect(freshLog.problems).toEqual([]);
      expect(consoleError).not.toHaveBeenCalled();
      expect(consoleWarn).not.toHaveBeenCalled();
      expect(await shared.getRepository(sessionEntity()).count()).toBe(200);
    } finally {
      consoleError.mockRestore();
      consoleWarn.mockRestore();
    }
  });
});

describe('a session entity the store did not make', () => {
  // What a second copy of this library (ESM next to CommonJS) hands TypeORM: equal, but not the same object.
  const copyOf = (tableName: string) => new EntitySchema({ ...sessionEntity({ tableName }).options });

  test('a different schema object for the same table, listed before initialize(): no second metadata', async () => {
    const copy = copyOf('reg_copy');
    expect(copy).not.toBe(sessionEntity({ tableName: 'reg_copy' }));
    const ds = track(dataSourceFor(db.url, { entities: [copy] }));
    const early = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_copy' });
    await ds.initialize();
    const late = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_copy' });
    await early.set('e', data({ who: 'early' }));
    expect(await late.get('e')).toMatchObject({ who: 'early' });
    expect(sessionMetadatas(ds, 'reg_copy')).toHaveLength(1);
    expect(ds.options.entities).toEqual([copy]);
    expect((await ds.getRepository(copy).find()).map((r: any) => r.id)).toEqual([digest('e')]);
  });

  test('a different schema object for the same table, DataSource initialized first: no second metadata', async () => {
    const copy = copyOf('reg_copy_init');
    const ds = track(dataSourceFor(db.url, { entities: [copy] }));
    await ds.initialize();
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'reg_copy_init' });
    await store.set('x', data({ ok: 1 }));
    expect(await store.get('x')).toMatchObject({ ok: 1 });
    expect(sessionMetadatas(ds, 'reg_copy_init')).toHaveLength(1);
    expect(ds.options.entities).toEqual([copy]);
  });

  test("the user's own entity on the table under another name (EntitySchema or decorated class): no second metadata", async () => {
    const Mine = new EntitySchema({
      name: 'MySessionRow',
      tableName: 'reg_user_named',
      columns: { id: { type: 'varchar', length: 64, primary: true }, data: { type: 'text' } },
    });
    const ds1 = track(dataSourceFor(db.url, { entities: [Mine] }));
    const store1 = new TypeormSessionStore({ dataSource: ds1, tableName: 'reg_user_named' });
    await ds1.initialize();
    await store1.set('a', data({ ok: 1 }));
    expect(sessionMetadatas(ds1, 'reg_user_named')).toHaveLength(1);
    expect(sessionMetadatas(ds1, 'reg_user_named')[0]!.name).toBe('MySessionRow');

    // A decorated class (decorators applied by hand: the test transform has no decorator syntax).
    class UserSessionClass {
      id!: string;
      data!: string;
    }
    PrimaryColumn({ type: 'varchar', length: 64 })(UserSessionClass.prototype, 'id');
    Column({ type: 'text' })(UserSessionClass.prototype, 'data');
    Entity('reg_user_class')(UserSessionClass);
    const ds2 = track(dataSourceFor(db.url, { entities: [UserSessionClass] }));
    const store2 = new TypeormSessionStore({ dataSource: ds2, tableName: 'reg_user_class' });
    await ds2.initialize();
    await store2.set('b', data({ ok: 2 }));
    expect(await store2.get('b')).toMatchObject({ ok: 2 });
    expect(sessionMetadatas(ds2, 'reg_user_class')).toHaveLength(1);
    expect(sessionMetadatas(ds2, 'reg_user_class')[0]!.target).toBe(UserSessionClass);
  });
});

describe('schema agreement', () => {
  test.each(['sessions', 'reg_sync_other'])(
    'after the store creates "%s" from its own SQL, TypeORM sees no pending schema change',
    async (tableName) => {
      const maker = track(dataSourceFor(db.url));
      await maker.initialize();
      const store = new TypeormSessionStore({ dataSource: maker, tableName });
      await store.set('x', data({}));

      const ds = track(dataSourceFor(db.url, { entities: [sessionEntity({ tableName })] }));
      await ds.initialize();
      const pending = await ds.driver.createSchemaBuilder().log();
      const queries = pending.upQueries.map((q) => q.query);
      expect({ tableName, upQueries: queries }).toEqual({ tableName, upQueries: [] });
    },
  );

  test('synchronize: true on a DataSource listing the entity leaves the table and its rows alone', async () => {
    const maker = track(dataSourceFor(db.url));
    await maker.initialize();
    const store = new TypeormSessionStore({ dataSource: maker, tableName: 'reg_sync_rows' });
    await store.set('keep', data({ kept: true, userId: 'u-1' }));
    const columns = () => columnsOf(maker, 'reg_sync_rows');
    const rows = () => maker.query('SELECT * FROM reg_sync_rows');
    const [columnsBefore, rowsBefore] = [await columns(), await rows()];
    expect(columnsBefore).toHaveLength(7);
    const synced = track(dataSourceFor(db.url, { entities: [sessionEntity({ tableName: 'reg_sync_rows' })], synchronize: true }));
    await synced.initialize();
    expect(await columns()).toEqual(columnsBefore);
    expect(await rows()).toEqual(rowsBefore);
    expect(rowsBefore[0].user_id).toBe('u-1');
    expect(await store.get('keep')).toMatchObject({ kept: true });
    expect(await indexesOf(maker, 'reg_sync_rows')).toEqual(sessionTableIndexes('reg_sync_rows'));
  });
});

describe('rebuild on an initialized DataSource', () => {
  test('10 stores on 10 tables constructed at once: 10 session metadatas, no duplicates, all working', async () => {
    const ds = track(dataSourceFor(db.url));
    await ds.initialize();
    const tables = Array.from({ length: 10 }, (_, i) => `reg_many_${i}`);
    const stores = tables.map((tableName) => new TypeormSessionStore({ dataSource: ds, tableName }));
    await Promise.all(stores.map((store, i) => store.set(`sid-${i}`, data({ i }))));
    const sessionTables = ds.entityMetadatas.map((m) => m.tableName).filter((t) => t.startsWith('reg_many_'));
    expect(sessionTables.sort()).toEqual([...tables].sort());
    expect(ds.entityMetadatas).toHaveLength(10);
    for (const [i, store] of stores.entries()) {
      expect(await store.get(`sid-${i}`)).toMatchObject({ i });
      const rows = await ds.getRepository(sessionEntity({ tableName: tables[i] })).find();
      expect(rows.map((r) => r.id)).toEqual([digest(`sid-${i}`)]);
    }
    // A second round of stores on the same tables adds nothing.
    const again = tables.map((tableName) => new TypeormSessionStore({ dataSource: ds, tableName }));
    await Promise.all(again.map((store, i) => store.get(`sid-${i}`)));
    expect(ds.entityMetadatas).toHaveLength(10);
    expect((ds.options.entities as unknown[]).length).toBe(10);
  });
});
