import type { DataSource } from 'typeorm';
import { main } from '../src/cli.js';
import { TypeormSessionStore } from '../src/index.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { sql } from './helpers/dialect.js';

let db: TestDatabase;
let dataSource: DataSource;
beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url);
});
afterAll(async () => {
  await dataSource.destroy();
  await db.drop();
});

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, (t) => out.push(t), (t) => err.push(t));
  return { code, out: out.join(''), err: err.join('') };
}

test('stats and prune against a real table', async () => {
  let clock = Date.now();
  const store = new TypeormSessionStore({ dataSource, tableName: 'cli_ops', now: () => clock, pruneInterval: false });
  for (let i = 0; i < 120; i++) {
    await store.set(`s${i}`, { cookie: { maxAge: i < 100 ? 1000 : 3_600_000 }, userId: i % 3 === 0 ? 'carol' : 'dave' } as any);
  }
  clock += 10_000;
  // The CLI reads the real clock; move the rows instead of the CLI's clock.
  await dataSource.query(sql(`UPDATE cli_ops SET expires_at = expires_at - 10000`));

  const stats = await run('stats', '--url', db.url, '--table', 'cli_ops');
  expect(stats.code).toBe(0);
  expect(stats.out).toContain('20 live sessions, 100 expired rows');
  expect(stats.out).toMatch(/dave\t1[0-9]/);

  const prune = await run('prune', '--url', db.url, '--table', 'cli_ops', '--batch-size', '30');
  expect(prune).toMatchObject({ code: 0 });
  expect(prune.out).toContain('pruned 100 expired sessions');
  const [{ n }] = await dataSource.query('SELECT COUNT(*) AS n FROM cli_ops');
  expect(Number(n)).toBe(20);
  await store.close();
});

test('bad input is an error, not a silent default', async () => {
  expect((await run('prune', '--url', 'redis://x')).code).toBe(1);
  expect((await run('prune', '--url', db.url, '--batch-size', '0')).code).toBe(1);
  const missing = await run('stats', '--url', db.url, '--table', 'no_such_table');
  expect(missing.code).toBe(1);
  expect(missing.err).toMatch(/no_such_table/);
});
