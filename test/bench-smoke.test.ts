import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { admin, createTestDatabase, type TestDatabase } from './helpers/database.js';

// The bench apps (bench/server.mjs), started the way `npm run bench` starts them — one process per store —
// and walked with a handful of requests: nothing is timed. This only proves each app answers and really
// keeps its session, so the bench cannot rot unnoticed. Needs the build in dist/ (npm test builds first).

const SERVER = join(__dirname, '..', 'bench', 'server.mjs');
const sessionTables: Record<string, string | null> = {
  memory: null,
  'pg-simple': 'session_pg_simple',
  'connect-typeorm': 'session_connect_typeorm',
  redis: null,
  floor: 'session_floor',
  'ours-store': 'sessions',
  ours: 'sessions',
  'ours-no-transaction': 'sessions',
  'handwritten-qr': 'sessions',
  'datasource-query': 'sessions',
};
const dbRoutes = new Set(['ours', 'handwritten-qr', 'datasource-query']);
/** Apps without session middleware, for the no-database route. */
const plainApps = ['none', 'none-again', 'empty-middleware', 'async-context'];

interface Stats {
  requests: number;
  queries: number;
  errors: number;
  lastError: string | null;
}

class BenchServer {
  readonly child: ChildProcess;
  readonly ready: Promise<string>;
  private readonly exited: Promise<void>;
  private nextId = 1;
  private readonly pending = new Map<number, (msg: any) => void>();

  constructor(store: string, url: string) {
    this.child = fork(SERVER, [store, 'smoke'], {
      env: { ...process.env, DATABASE_URL: url },
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    this.ready = new Promise((resolve, reject) => {
      this.child.on('message', (msg: any) => {
        if (msg.id && this.pending.has(msg.id)) {
          this.pending.get(msg.id)!(msg);
          this.pending.delete(msg.id);
        } else if (msg.type === 'ready') resolve(`http://127.0.0.1:${msg.port}`);
        else if (msg.type === 'error') reject(new Error(`bench server ${store}: ${msg.message}`));
      });
      this.exited.then(() => reject(new Error(`bench server ${store} exited with ${this.child.exitCode}`)));
    });
  }

  call(type: string): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.send({ type, id });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.connected) await this.call('close');
    await this.exited;
  }
}

let db: TestDatabase;
const servers = new Map<string, BenchServer>();
/** Whether a Redis answers at REDIS_URL or 127.0.0.1:6379: the connect-redis app needs one. */
let redisUp = false;

beforeAll(async () => {
  // The servers import the package itself (dist/), or BENCH_LIB when set, as bench/run.mjs sets it.
  if (!process.env.BENCH_LIB && !existsSync(join(__dirname, '..', 'dist', 'esm', 'index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (npm test does)');
  }
  db = await createTestDatabase();
  // The bench's own probe, in a process of its own (bench/redis.mjs is an ES module, which jest cannot load).
  redisUp =
    execFileSync(process.execPath, ['--input-type=module', '-e', "console.log(await (await import('./bench/redis.mjs')).redisAnswers())"], {
      cwd: join(__dirname, '..'),
      encoding: 'utf8',
    }).trim() === 'true';
  for (const store of [...Object.keys(sessionTables), ...plainApps]) {
    if (store === 'redis' && !redisUp) continue;
    servers.set(store, new BenchServer(store, db.url));
  }
  await Promise.all([...servers.values()].map((s) => s.ready));
});

afterAll(async () => {
  await Promise.all([...servers.values()].map((s) => s.close()));
  await db?.drop();
});

async function request(base: string, method: string, path: string, cookie?: string) {
  const res = await fetch(base + path, { method, headers: cookie ? { cookie } : {} });
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text();
  return { status: res.status, body: body as any, setCookie: res.headers.getSetCookie() };
}

test.each(Object.keys(sessionTables))('the %s bench app logs in, keeps and changes its session', async (store) => {
  if (store === 'redis' && !redisUp) {
    // No Redis here: the app fails to start with the client's connection error (bench/run.mjs leaves this
    // anchor out before starting it, and says so).
    const app = new BenchServer(store, db.url);
    await expect(app.ready).rejects.toThrow(/ECONNREFUSED|connect/);
    await app.close().catch(() => undefined);
    return;
  }
  const server = servers.get(store)!;
  const base = await server.ready;

  const login = await request(base, 'POST', '/login');
  expect(login.status).toBe(200);
  const cookie = login.setCookie.find((c) => c.startsWith('connect.sid='))?.split(';')[0];
  expect(cookie).toBeDefined();

  const read = await request(base, 'GET', '/read', cookie);
  expect(read).toMatchObject({ status: 200, body: { userId: login.body.userId, visits: 0 } });
  expect((await request(base, 'POST', '/write', cookie)).body).toMatchObject({ visits: 1 });
  expect((await request(base, 'POST', '/write', cookie)).body).toMatchObject({ visits: 2 });
  expect(await request(base, 'GET', '/read', cookie)).toMatchObject({ status: 200, body: { visits: 2 } });
  // Without the cookie there is no session: the bench would count these as failures.
  expect((await request(base, 'GET', '/read')).status).toBe(401);
  expect((await request(base, 'GET', '/nodb')).status).toBe(200);

  const table = sessionTables[store];
  if (table) {
    const rows = await admin((c) => c.query(`SELECT count(*)::int AS n FROM "${table}"`), db.url);
    expect(rows.rows[0].n).toBeGreaterThanOrEqual(1);
  }
  if (dbRoutes.has(store)) {
    expect(await request(base, 'GET', '/db')).toMatchObject({ status: 200, body: { id: 1, name: 'item 1' } });
  }

  const stats: Stats = await server.call('stats');
  expect(stats).toMatchObject({ errors: 0, lastError: null });
  expect(stats.requests).toBeGreaterThanOrEqual(dbRoutes.has(store) ? 8 : 7);
  if (table) expect(stats.queries).toBeGreaterThan(0);
  else expect(stats.queries).toBe(0);
});

test.each(plainApps)('the %s app (no session middleware) answers its route', async (store) => {
  const base = await servers.get(store)!.ready;
  expect(await request(base, 'GET', '/nodb')).toMatchObject({ status: 200, body: { ok: true } });
});

test('every app of bench/stores.mjs is started here, and bench/server.mjs refuses a store it has no app for', () => {
  const listed = (code: string) =>
    execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: join(__dirname, '..'), encoding: 'utf8' }).trim();
  const names = JSON.parse(listed("const { stores } = await import('./bench/stores.mjs'); console.log(JSON.stringify(Object.keys(stores)))"));
  expect([...names].sort()).toEqual([...Object.keys(sessionTables), ...plainApps].sort());
  const refused = listed(
    "const { buildApp } = await import('./bench/server.mjs'); " +
      "const { stores } = await import('./bench/stores.mjs'); stores.unbuilt = { label: 'x', table: null }; " +
      "console.log(await buildApp('unbuilt').then(() => 'built', (err) => err.message));",
  );
  expect(refused).toBe('bench/server.mjs builds no app for store "unbuilt"');
});
