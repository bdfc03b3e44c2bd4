import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../src/cli.js';
import { TypeormSessionStore } from '../src/index.js';
import { createTableStatements, tableSql } from '../src/store/statements.js';
import { dialectNames, type DialectName } from '../src/dialects/index.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { indexesOf, runScript, sessionTableIndexes, tableExists, testDialect } from './helpers/dialect.js';
import { destroyFully } from './helpers/pool.js';

/** Runs the CLI in process and collects what it printed where. */
function run(...argv: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = main(argv, (t) => stdout.push(t), (t) => stderr.push(t));
  return { code, stdout: stdout.join(''), stderr: stderr.join('') };
}

describe('print-sql', () => {
  test('prints the PostgreSQL SQL for "sessions" by default, on stdout only, and returns 0', () => {
    const result = run('print-sql');
    expect(result).toEqual({ code: 0, stdout: tableSql('postgres', 'sessions'), stderr: '' });
    expect(result.stdout).toContain('CREATE TABLE IF NOT EXISTS "sessions" (');
    expect(result.stdout).toContain('CREATE INDEX IF NOT EXISTS "IDX_sessions_expires_at" ON "sessions" ("expires_at");');
    expect(result.stdout).toContain('CREATE INDEX IF NOT EXISTS "IDX_sessions_user_id" ON "sessions" ("user_id");');
  });

  test.each(dialectNames)('--dialect %s prints that dialect, in both option spellings', (dialect) => {
    const spaced = run('print-sql', '--dialect', dialect);
    const inline = run('print-sql', `--dialect=${dialect}`);
    expect(spaced).toEqual({ code: 0, stdout: tableSql(dialect, 'sessions'), stderr: '' });
    expect(inline).toEqual(spaced);
    for (const statement of createTableStatements(dialect, 'sessions')) expect(spaced.stdout).toContain(`${statement};`);
  });

  test('the dialects really differ where they must', () => {
    // TEXT, as the entity declares it (141910c): MEDIUMTEXT would make TypeORM's synchronize drop the column.
    expect(run('print-sql', '--dialect', 'mysql').stdout).toMatch(/`data` text NOT NULL[\s\S]*ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;/);
    expect(run('print-sql', '--dialect', 'mysql').stdout).toContain('INDEX `IDX_sessions_expires_at` (`expires_at`)');
    expect(run('print-sql', '--dialect', 'mysql').stdout).not.toContain('CREATE INDEX');
    expect(run('print-sql', '--dialect', 'sqlite').stdout).toContain('"data" text NOT NULL');
    expect(run('print-sql', '--dialect', 'sqlite').stdout).toContain('CREATE INDEX IF NOT EXISTS "IDX_sessions_user_id"');
  });

  test('--table names the table, its constraint and its indexes', () => {
    const result = run('print-sql', '--table', 'app_sessions', '--dialect', 'sqlite');
    expect(result).toEqual({ code: 0, stdout: tableSql('sqlite', 'app_sessions'), stderr: '' });
    expect(result.stdout).toContain('CREATE TABLE IF NOT EXISTS "app_sessions"');
    expect(result.stdout).toContain('CONSTRAINT "PK_app_sessions" PRIMARY KEY ("id")');
    expect(result.stdout).toContain('"IDX_app_sessions_user_id" ON "app_sessions"');
    expect(result.stdout).not.toMatch(/"sessions"/);
    expect(run('print-sql', '--table=x').stdout).toBe(tableSql('postgres', 'x'));
  });

  test.each([
    [['print-sql', '--dialect', 'oracle'], /--dialect must be one of postgres, mysql, sqlite/],
    [['print-sql', '--dialect=MySQL'], /--dialect must be one of/],
    [['print-sql', '--table', 'bad name'], /"--table" must be a plain SQL identifier/],
    [['print-sql', '--table', 'x"; DROP TABLE y; --'], /"--table" must be a plain SQL identifier/],
    [['print-sql', '--table', 'a'.repeat(41)], /"--table" must be a plain SQL identifier of at most 40/],
    [['print-sql', '--table'], /--table needs a value/],
    [['print-sql', '--table', '--dialect', 'mysql'], /--table needs a value/],
    [['print-sql', '--dialect='], /--dialect needs a value/],
    [['print-sql', '--tabel', 'x'], /unknown argument "--tabel"/],
    [['print-sql', 'extra'], /unknown argument "extra"/],
    [['print-sql', '--table', 'a', '--table', 'b'], /--table is given twice/],
    [['print-schema'], /unknown command "print-schema"/],
  ])('%j returns 1 with a message on stderr and prints no SQL', (argv, message) => {
    const result = run(...argv);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/^typeorm-session: /);
    expect(result.stderr).toContain('Usage: typeorm-session');
  });

  test('no command prints the usage on stderr and returns 1; --help prints it on stdout and returns 0', () => {
    const none = run();
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toContain('print-sql [--dialect postgres|mysql|sqlite] [--table sessions]');
    const help = run('--help');
    expect(help).toEqual({ code: 0, stdout: none.stderr, stderr: '' });
  });
});

describe('the shipped sql/*.sql files', () => {
  const shipped = (dialect: DialectName) => readFileSync(join(__dirname, '..', 'sql', `${dialect}.sql`), 'utf8');

  test.each(dialectNames)('sql/%s.sql is byte-identical to what the store runs and print-sql prints', (dialect) => {
    expect(shipped(dialect)).toBe(tableSql(dialect, 'sessions'));
    expect(shipped(dialect)).toBe(run('print-sql', '--dialect', dialect).stdout);
  });

  describe(`against the test database (${testDialect})`, () => {
    let db: TestDatabase;
    beforeAll(async () => {
      db = await createTestDatabase();
    });
    afterAll(async () => {
      await db.drop();
    });

    test(`running sql/${testDialect}.sql makes a table the store uses with createTable: false`, async () => {
      const dataSource = await openDataSource(db.url);
      try {
        // As an operator would paste it: statement by statement, comments and all.
        await runScript(dataSource, shipped(testDialect));
        // Running it again is harmless: every statement is IF NOT EXISTS.
        await runScript(dataSource, shipped(testDialect));
        expect(await tableExists(dataSource, 'sessions')).toBe(true);
        expect(await tableExists(dataSource, 'sessions_lease')).toBe(true);
        expect(await indexesOf(dataSource, 'sessions')).toEqual(sessionTableIndexes('sessions'));

        const store = new TypeormSessionStore({ dataSource, createTable: false });
        const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString() };
        await store.set('sid', { cookie, userId: 'u-7', cart: [1, 2] } as any);
        expect(await store.get('sid')).toMatchObject({ userId: 'u-7', cart: [1, 2] });
        expect(await store.length()).toBe(1);
        const rows = await dataSource.query('SELECT user_id FROM sessions');
        expect(rows).toEqual([{ user_id: 'u-7' }]);
      } finally {
        await destroyFully(dataSource);
      }
    });
  });
});
