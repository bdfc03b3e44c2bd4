import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { DataSource } from 'typeorm';
import {
  SessionTableMigration,
  sessionTableMigration,
  StoreQueryError,
  TableCreateError,
  TableMissingError,
  TypeormSessionStore,
} from '../src/index.js';
import { createTableStatements } from '../src/store/statements.js';
import { admin, createTestDatabase, dataSourceFor, openDataSource, type TestDatabase } from './helpers/database.js';
import {
  databaseLabel,
  indexesOf,
  mysqlAdmin,
  onlyOn,
  runScript,
  sessionTableIndexes,
  tableExists,
  testDialect,
} from './helpers/dialect.js';
import { destroyFully } from './helpers/pool.js';

let db: TestDatabase;
/** An admin connection of its own to the test database, for looking at the catalog and acting as the operator. */
let inspector: DataSource;
beforeAll(async () => {
  db = await createTestDatabase();
  inspector = await openDataSource(db.url);
});
afterAll(async () => {
  await destroyFully(inspector);
  await db.drop();
});

const opened: DataSource[] = [];
async function open(url = db.url, extra: Parameters<typeof dataSourceFor>[1] = {}): Promise<DataSource> {
  const ds = dataSourceFor(url, extra);
  opened.push(ds);
  await ds.initialize();
  return ds;
}
afterEach(async () => {
  for (const ds of opened.splice(0)) await destroyFully(ds);
});

const data = (extra: Record<string, unknown> = {}) =>
  ({ cookie: { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString() }, ...extra }) as any;

const inTestDb = <T>(work: Parameters<typeof admin<T>>[0]) => admin(work, db.url);

const exists = (table: string) => tableExists(inspector, table);
const indexes = (table: string) => indexesOf(inspector, table);

/** The CREATE statements of the table, each of which an error message must quote. */
const createSql = (table: string) => createTableStatements(testDialect, table);

/** The SQL block an error message tells the operator to run. */
function sqlFromMessage(message: string): string {
  const match = /Run this SQL as a user allowed to create tables:\n\n([\s\S]*?)\n\n\(also printed/.exec(message);
  if (!match) throw new Error(`no SQL block in: ${message}`);
  return match[1]!;
}

describe('creation', () => {
  test('the table is created on first use, with its primary key and both indexes', async () => {
    const ds = await open();
    const fresh = new TypeormSessionStore({ dataSource: ds, tableName: 'tbl_first_use' });
    expect(await exists('tbl_first_use')).toBe(false);
    await fresh.set('a', data({ v: 1 }));
    expect(await exists('tbl_first_use')).toBe(true);
    expect(await indexes('tbl_first_use')).toEqual(sessionTableIndexes('tbl_first_use'));
    expect(await fresh.get('a')).toMatchObject({ v: 1 });
  });

  test('constructing a store creates nothing: the table appears only with the first call', async () => {
    const ds = await open();
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'tbl_lazy' });
    await ds.query('SELECT 1');
    expect(await exists('tbl_lazy')).toBe(false);
    expect(await store.length()).toBe(0);
    expect(await exists('tbl_lazy')).toBe(true);
  });

  test('race: 8 DataSources, one store each on the same fresh table, all set() at once, in 5 rounds', async () => {
    const sources = await Promise.all(Array.from({ length: 8 }, () => open()));
    for (let round = 0; round < 5; round++) {
      const table = `tbl_race_${round}`;
      expect(await exists(table)).toBe(false);
      const stores = sources.map((dataSource) => new TypeormSessionStore({ dataSource, tableName: table }));
      const results = await Promise.allSettled(stores.map((store, i) => store.set(`sid-${i}`, data({ i }))));
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason?.cause ?? r.reason)] : []));
      expect({ table, failures }).toEqual({ table, failures: [] });
      expect(await exists(table)).toBe(true);
      expect(await indexes(table)).toEqual(sessionTableIndexes(table));
      expect(await stores[0]!.length()).toBe(8);
      for (const [i, store] of stores.entries()) expect(await store.get(`sid-${(i + 1) % 8}`)).toMatchObject({ i: (i + 1) % 8 });
    }
  });
});

describe('errors name the table, the database and the SQL', () => {
  test('createTable: false without a table: TableMissingError, and nothing is created', async () => {
    const ds = await open();
    const store = new TypeormSessionStore({ dataSource: ds, tableName: 'tbl_missing', createTable: false });
    const error = await store.set('a', data()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TableMissingError);
    const { code, message } = error as TableMissingError;
    expect(code).toBe('ERR_SESSION_TABLE_MISSING');
    expect(message).toContain('"tbl_missing"');
    expect(message).toContain(`"${databaseLabel(db)}"`);
    for (const statement of createSql('tbl_missing')) expect(message).toContain(statement);
    expect(message).toContain(`print-sql --dialect ${testDialect} --table tbl_missing`);
    expect(await exists('tbl_missing')).toBe(false);
    // Not cached either: once someone creates the table, the same store works.
    await runScript(inspector, sqlFromMessage(message));
    await store.set('a', data({ ok: true }));
    expect(await store.get('a')).toMatchObject({ ok: true });
  });

  /**
   * A database user who may read and write rows but not create tables: a PostgreSQL role without CREATE on the
   * schema, a MySQL user granted only SELECT, INSERT, UPDATE, DELETE on the database.
   */
  interface LimitedUser {
    url: string;
    /** How the database words the refusal, and the driver's error code for it. */
    denied: { message: RegExp; code: string };
    /** What the operator grants once the table exists (MySQL: nothing, the database-wide grant covers it). */
    grantOn(table: string): Promise<void>;
    drop(): Promise<void>;
  }

  async function limitedUser(): Promise<LimitedUser> {
    const name = `tsess_role_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(8).toString('hex');
    const url = new URL(db.url);
    url.username = name;
    url.password = password;
    if (testDialect === 'mysql') {
      await mysqlAdmin(async (q) => {
        await q(`CREATE USER '${name}'@'%' IDENTIFIED BY '${password}'`);
        await q(`GRANT SELECT, INSERT, UPDATE, DELETE ON \`${db.name}\`.* TO '${name}'@'%'`);
      });
      return {
        url: url.toString(),
        denied: { message: /CREATE command denied to user/, code: 'ER_TABLEACCESS_DENIED_ERROR' },
        grantOn: async () => undefined,
        drop: () => mysqlAdmin(async (q) => void (await q(`DROP USER '${name}'@'%'`))),
      };
    }
    await inTestDb(async (c) => {
      await c.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
      // PostgreSQL 15+ already denies this to new roles; older servers and odd setups grant it to PUBLIC.
      await c.query('REVOKE CREATE ON SCHEMA public FROM PUBLIC');
    });
    return {
      url: url.toString(),
      denied: { message: /permission denied/, code: '42501' },
      grantOn: async (table) => void (await inspector.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO ${name}`)),
      drop: async () => {
        await inTestDb((c) => c.query(`DROP OWNED BY ${name}`));
        await admin((c) => c.query(`DROP ROLE ${name}`));
      },
    };
  }

  // SQLite has no users or rights: whoever can open the file can create tables in it.
  if (onlyOn('postgres', 'mysql'))
    test('no CREATE right: TableCreateError with the driver error as cause; works once an admin creates the table', async () => {
      const user = await limitedUser();
      try {
        const ds = await open(user.url);
        const store = new TypeormSessionStore({ dataSource: ds, tableName: 'tbl_denied' });
        const error = await store.set('a', data()).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(TableCreateError);
        const { code, message, cause } = error as TableCreateError;
        expect(code).toBe('ERR_SESSION_TABLE_CREATE');
        expect(message).toContain('"tbl_denied"');
        expect(message).toContain(`"${db.name}"`);
        expect(message).toMatch(user.denied.message);
        for (const statement of createSql('tbl_denied')) expect(message).toContain(statement);
        expect(cause).toBeInstanceOf(Error);
        expect((cause as { driverError?: { code?: string }; code?: string }).driverError?.code ?? (cause as any).code).toBe(
          user.denied.code,
        );
        expect(await exists('tbl_denied')).toBe(false);

        // The operator runs the printed SQL as an admin and grants the app user its rights.
        await runScript(inspector, sqlFromMessage(message));
        await user.grantOn('tbl_denied');
        await store.set('a', data({ ok: 1 }));
        expect(await store.get('a')).toMatchObject({ ok: 1 });
        // Only PostgreSQL tables have an owner: the admin who ran the SQL, not the app role.
        if (testDialect === 'postgres') {
          const rows = await inspector.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'tbl_denied'`);
          expect(rows[0].tableowner).not.toBe(new URL(user.url).username);
        }
      } finally {
        for (const ds of opened.splice(0)) await destroyFully(ds);
        await user.drop();
      }
    });
});

/** A TCP hop in front of the database server that can play "database down": it cuts every connection and refuses new ones. */
class Hop {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private up = true;
  accepted = 0;
  refused = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => {
      if (!this.up) {
        this.refused++;
        client.destroy();
        return;
      }
      this.accepted++;
      const upstream = connect(this.target.port, this.target.host);
      for (const [a, b] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        this.sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.sockets.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port));
    });
  }

  down(): void {
    this.up = false;
    for (const socket of this.sockets) socket.destroy();
  }

  restore(): void {
    this.up = true;
  }

  close(): Promise<void> {
    this.down();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// SQLite is a file opened in process: there is no server to lose.
if (onlyOn('postgres', 'mysql'))
  describe('database down at first use', () => {
    let hop: Hop;
    afterAll(async () => {
      await hop?.close();
    });

    test('the first call fails with StoreQueryError; once the database is back the next call succeeds', async () => {
      const target = new URL(db.url);
      hop = new Hop({ host: target.hostname, port: Number(target.port || (testDialect === 'mysql' ? 3306 : 5432)) });
      const via = new URL(db.url);
      via.hostname = '127.0.0.1';
      via.port = String(await hop.listen());

      const warnings: string[] = [];
      const ds = await open(via.toString(), {
        logger: {
          logQuery() {},
          logQueryError() {},
          logQuerySlow() {},
          logSchemaBuild() {},
          logMigration() {},
          log: (level: string, message: unknown) => void (level === 'warn' && warnings.push(String(message))),
        },
      });
      expect(hop.accepted).toBeGreaterThan(0);
      const store = new TypeormSessionStore({ dataSource: ds, tableName: 'tbl_down' });

      hop.down();
      const error = await store.set('a', data({ n: 1 })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(StoreQueryError);
      expect((error as StoreQueryError).code).toBe('ERR_SESSION_QUERY');
      expect((error as StoreQueryError).cause).toBeInstanceOf(Error);
      expect(await exists('tbl_down')).toBe(false);
      // A second call while still down fails the same way: it tried again rather than replaying a result.
      const refusedBefore = hop.refused;
      await expect(store.get('a')).rejects.toBeInstanceOf(StoreQueryError);
      expect(hop.refused).toBeGreaterThan(refusedBefore);

      hop.restore();
      await store.set('a', data({ n: 2 }));
      expect(await store.get('a')).toMatchObject({ n: 2 });
      expect(await exists('tbl_down')).toBe(true);
      // The same DataSource keeps working for the application too.
      expect(await ds.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    });
  });

describe('SessionTableMigration', () => {
  test('up() creates the table with its indexes, down() drops it', async () => {
    const ds = await open();
    const runner = ds.createQueryRunner();
    try {
      expect(await exists('sessions')).toBe(false);
      await new SessionTableMigration().up(runner);
      expect(await exists('sessions')).toBe(true);
      expect(await indexes('sessions')).toEqual(sessionTableIndexes('sessions'));
      const store = new TypeormSessionStore({ dataSource: ds, createTable: false });
      await store.set('m', data({ via: 'migration' }));
      expect(await store.get('m')).toMatchObject({ via: 'migration' });
      await new SessionTableMigration().down(runner);
      expect(await exists('sessions')).toBe(false);
    } finally {
      await runner.release();
    }
  });

  test('sessionTableMigration({ tableName }) works for another table and leaves the default one alone', async () => {
    const ds = await open();
    const Other = sessionTableMigration({ tableName: 'other' });
    expect(new Other().name).toMatch(/other\d{13}$/);
    expect(new Other().name).not.toBe(new SessionTableMigration().name);
    const runner = ds.createQueryRunner();
    try {
      await new Other().up(runner);
      expect(await exists('other')).toBe(true);
      expect(await exists('sessions')).toBe(false);
      expect(await indexes('other')).toEqual(sessionTableIndexes('other'));
      await new Other().down(runner);
      expect(await exists('other')).toBe(false);
    } finally {
      await runner.release();
    }
    expect(() => sessionTableMigration({ tableName: 'bad name' })).toThrow(/tableName/);
  });

  test('run through a DataSource with `migrations: [SessionTableMigration]`, then undone', async () => {
    const ds = await open(db.url, { migrations: [SessionTableMigration] });
    const ran = await ds.runMigrations();
    expect(ran.map((m) => m.name)).toEqual([new SessionTableMigration().name]);
    expect(await exists('sessions')).toBe(true);
    expect(await indexes('sessions')).toEqual(sessionTableIndexes('sessions'));
    expect(await ds.runMigrations()).toEqual([]);
    const store = new TypeormSessionStore({ dataSource: ds, createTable: false });
    await store.set('x', data({ n: 1 }));
    expect(await store.get('x')).toMatchObject({ n: 1 });
    await ds.undoLastMigration();
    expect(await exists('sessions')).toBe(false);
  });
});
