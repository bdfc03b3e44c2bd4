/**
 * Issue 5, against a real database (TEST_DB): per-user sessions (recorded user id, listing, revocation, over HTTP with
 * two clients), sessions that never come back from the dead (a save of a session loaded before its logout or
 * revocation), concurrent saves of one session (versioned, conflicts reported or rejected), and the idle and
 * absolute timeouts. The pruning half of the issue is in prune.test.ts.
 */
import type { Server } from 'node:http';
import Koa from 'koa';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { SessionConflictError, sessionStore, TypeormSessionStore, type TypeormSessionError } from '../src/index.js';
import { koaSessionStore, type KoaSessionStoreMiddleware } from '../src/koa.js';
import { digest } from '../src/store/session-state.js';
import { express } from './helpers/app.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { sideQuery, testDialect } from './helpers/dialect.js';

let db: TestDatabase;
let dataSource: DataSource;
const stores: TypeormSessionStore[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url);
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await dataSource.destroy();
  await db.drop();
});

// ---- helpers -------------------------------------------------------------------------------------------

let clock = Date.now();
const now = () => clock;

let tableCounter = 0;
function newStore(options: Partial<ConstructorParameters<typeof TypeormSessionStore>[0]> = {}) {
  const store = new TypeormSessionStore({ dataSource, tableName: `u_${++tableCounter}`, now, ...options });
  stores.push(store);
  return store;
}

/** A session as express-session hands it to set(): a cookie whose expiry is on the test clock, plus fields. */
const session = (extra: Record<string, unknown> = {}, maxAge = 3_600_000) =>
  ({ cookie: { originalMaxAge: maxAge, expires: new Date(clock + maxAge).toISOString() }, ...extra }) as any;
/** A browser-session cookie (no expiry): the store's ttl applies, measured on the test clock. */
const browserSession = (extra: Record<string, unknown> = {}) => ({ cookie: { originalMaxAge: null, expires: null }, ...extra }) as any;

/** Loads a session the way express-session does: get(), then createSession() on the result. */
async function load(store: TypeormSessionStore, sid: string): Promise<any> {
  const data = await store.get(sid);
  if (!data) return null;
  return store.createSession({ sessionID: sid, sessionStore: store } as any, data);
}

/** SQL on a connection of its own, outside every pool under test. */
const sql = <R = any>(text: string, params: unknown[] = []) => sideQuery<R>(db.url, text, params);
const rowsOf = (store: TypeormSessionStore, sid: string) =>
  sql<{ data: string; version: number; user_id: string | null; expires_at: string; created_at: string }>(
    `SELECT data, version, user_id, expires_at, created_at FROM "${store.tableName}" WHERE id = $1`,
    [digest(sid)],
  );

/** Rows of a session that are not dead (a destroyed session leaves a dead row until its expiry). */
const liveRowsOf = (store: TypeormSessionStore, sid: string) =>
  sql(`SELECT 1 FROM "${store.tableName}" WHERE id = $1 AND expires_at > 0`, [digest(sid)]);

/** A second store on an existing table, with its own clock. */
function newStoreOn(tableName: string, clockOf: () => number) {
  const store = new TypeormSessionStore({ dataSource, tableName, now: clockOf, pruneInterval: false });
  stores.push(store);
  return store;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Waits until the slow request is inside its handler; fails at once if it ended without getting there. */
function arrival(arrived: Deferred, slow: Promise<{ status: number; text: string }>): Promise<void> {
  return Promise.race([
    arrived.promise,
    slow.then((r) => {
      throw new Error(`the slow request ended before reaching its handler: ${r.status} ${r.text}`);
    }),
  ]);
}

/**
 * SQLite: one connection per DataSource, which a request's transaction holds until it ends; the store's own
 * statements (a logout's destroy) wait their turn behind it.
 */
const queuesBehindTransaction = testDialect === 'sqlite';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A small deterministic PRNG, so a failing interleaving can be replayed. */
function prng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

// ---- the user id ---------------------------------------------------------------------------------------

describe('the user id of a session', () => {
  test('is recorded from userId by default; a later save changes or clears it', async () => {
    const store = newStore();
    await store.set('anon', session({ cart: [1] }));
    await store.set('u42', session({ userId: 42 }));
    await store.set('ualice', session({ userId: 'alice' }));
    await store.set('object', session({ userId: { id: 7 } }));
    const ids = async (sid: string) => (await rowsOf(store, sid))[0]!.user_id;
    expect(await ids('anon')).toBeNull();
    expect(await ids('u42')).toBe('42');
    expect(await ids('ualice')).toBe('alice');
    expect(await ids('object')).toBeNull();

    // Signing in an anonymous session, then signing out, through loaded saves.
    const anon = await load(store, 'anon');
    anon.userId = 'bob';
    await store.set('anon', anon);
    expect(await ids('anon')).toBe('bob');
    expect((await store.listByUser('bob')).map((s) => s.handle)).toEqual([store.handleOf('anon')]);
    const signedIn = await load(store, 'anon');
    delete signedIn.userId;
    await store.set('anon', signedIn);
    expect(await ids('anon')).toBeNull();
    expect(await store.listByUser('bob')).toEqual([]);
  });

  test("is read from a dotted path such as passport's 'passport.user'", async () => {
    const store = newStore({ userIdField: 'passport.user' });
    await store.set('p1', session({ passport: { user: 'carol' }, userId: 'not-this' }));
    await store.set('p2', session({ passport: {} }));
    await store.set('p3', session({ passport: 'carol' }));
    expect((await rowsOf(store, 'p1'))[0]!.user_id).toBe('carol');
    expect((await rowsOf(store, 'p2'))[0]!.user_id).toBeNull();
    expect((await rowsOf(store, 'p3'))[0]!.user_id).toBeNull();
    expect((await store.listByUser('carol')).map((s) => s.handle)).toEqual([store.handleOf('p1')]);
    expect(await store.listByUser('not-this')).toEqual([]);
  });
});

// ---- listing and revoking, store level -----------------------------------------------------------------

describe('listByUser', () => {
  test("returns the user's live sessions only, most recently seen first, with handle, dates and metadata", async () => {
    const store = newStore({ touchAfter: 0 });
    const t0 = clock;
    try {
      await store.set('a1', session({ userId: 'ann', device: { userAgent: 'phone' } }));
      clock = t0 + 1_000;
      await store.set('a2', session({ userId: 'ann', device: { userAgent: 'laptop' } }));
      clock = t0 + 2_000;
      await store.set('a3', session({ userId: 'ann' })); // no device: metadata null
      await store.set('short', session({ userId: 'ann', device: { userAgent: 'expires soon' } }, 5_000));
      await store.set('b1', session({ userId: 'ben', device: { userAgent: 'other user' } }));
      await store.set('anon', session({ device: { userAgent: 'nobody' } }));
      clock = t0 + 10_000; // 'short' has expired (t0 + 2 s + 5 s)
      const touched = session({ userId: 'ann', device: { userAgent: 'phone' } });
      await store.touch('a1', touched); // a1 is now the most recently seen

      const list = await store.listByUser('ann');
      expect(list.map((s) => s.handle)).toEqual(['a1', 'a3', 'a2'].map((sid) => store.handleOf(sid)));
      for (const info of list) {
        expect(info.createdAt).toBeInstanceOf(Date);
        expect(info.lastSeenAt).toBeInstanceOf(Date);
        expect(info.expiresAt).toBeInstanceOf(Date);
        expect(info.handle).toMatch(/^[0-9a-f]{64}$/);
        expect(Object.keys(info).sort()).toEqual(['createdAt', 'expiresAt', 'handle', 'lastSeenAt', 'metadata']);
      }
      const [a1, a3, a2] = list;
      expect(a1!.handle).not.toBe('a1');
      expect(a1!.handle).toBe(digest('a1'));
      expect(a1!.createdAt.getTime()).toBe(t0);
      expect(a1!.lastSeenAt.getTime()).toBe(t0 + 10_000);
      expect(a1!.expiresAt.getTime()).toBe(t0 + 10_000 + 3_600_000);
      expect(a1!.metadata).toEqual({ userAgent: 'phone' });
      expect(a2!.createdAt.getTime()).toBe(t0 + 1_000);
      expect(a2!.lastSeenAt.getTime()).toBe(t0 + 1_000);
      expect(a2!.expiresAt.getTime()).toBe(t0 + 1_000 + 3_600_000);
      expect(a2!.metadata).toEqual({ userAgent: 'laptop' });
      expect(a3!.metadata).toBeNull();

      expect((await store.listByUser('ben')).map((s) => s.metadata)).toEqual([{ userAgent: 'other user' }]);
      expect(await store.listByUser('nobody-at-all')).toEqual([]);
    } finally {
      clock = t0;
    }
  });

  test('a numeric user id matches its string form; metadataField picks another field', async () => {
    const store = newStore({ metadataField: 'signIn' });
    await store.set('n', session({ userId: 1001, signIn: { ip: '203.0.113.9' }, device: 'ignored' }));
    const [byNumber] = await store.listByUser(1001);
    const [byString] = await store.listByUser('1001');
    expect(byNumber!.handle).toBe(store.handleOf('n'));
    expect(byString).toEqual(byNumber);
    expect(byNumber!.metadata).toEqual({ ip: '203.0.113.9' });
  });
});

describe('destroyByUser and destroyByHandle', () => {
  test('destroyByUser revokes all of a user, or all but one; other users keep theirs', async () => {
    const store = newStore();
    for (const sid of ['d1', 'd2', 'd3']) await store.set(sid, session({ userId: 'dan' }));
    await store.set('e1', session({ userId: 'eve' }));

    expect(await store.destroyByUser('dan', { except: 'd2' })).toBe(2);
    expect((await store.listByUser('dan')).map((s) => s.handle)).toEqual([store.handleOf('d2')]);
    expect(await store.get('d1')).toBeNull();
    expect(await store.get('d2')).toMatchObject({ userId: 'dan' });

    expect(await store.destroyByUser('dan')).toBe(1);
    expect(await store.listByUser('dan')).toEqual([]);
    expect(await store.destroyByUser('dan')).toBe(0);
    expect(await store.get('e1')).toMatchObject({ userId: 'eve' });
  });

  test('destroyByHandle revokes exactly one; false for an unknown handle; TypeError for anything else', async () => {
    const store = newStore();
    for (const sid of ['h1', 'h2']) await store.set(sid, session({ userId: 'hal' }));
    expect(await store.destroyByHandle(store.handleOf('h1'))).toBe(true);
    expect(await store.get('h1')).toBeNull();
    expect(await store.get('h2')).not.toBeNull();
    expect(await store.destroyByHandle(store.handleOf('h1'))).toBe(false);
    expect(await store.destroyByHandle('0'.repeat(64))).toBe(false);

    // Garbage, including a session id itself (not a handle) and a handle in the wrong case.
    const garbage: unknown[] = ['h2', '', 'x'.repeat(64), store.handleOf('h2').toUpperCase(), `${store.handleOf('h2')} `, 42, null, undefined];
    for (const value of garbage) {
      await expect(store.destroyByHandle(value as string)).rejects.toThrow(TypeError);
    }
    expect(await store.get('h2')).not.toBeNull();
  });

  test("destroyByHandle(handle, { userId }) ends only that user's session, in one statement", async () => {
    const store = newStore();
    await store.set('mine', session({ userId: 'owner' }));
    await store.set('theirs', session({ userId: 'someone-else' }));
    await store.set('anonymous', session({}));
    const mine = store.handleOf('mine');
    expect(await store.destroyByHandle(store.handleOf('theirs'), { userId: 'owner' })).toBe(false);
    expect(await store.destroyByHandle(store.handleOf('anonymous'), { userId: 'owner' })).toBe(false);
    // No user is nobody's owner: never the unchecked, administrative form.
    for (const userId of [undefined, null]) {
      expect(await store.destroyByHandle(store.handleOf('theirs'), { userId })).toBe(false);
      expect(await store.destroyByHandle(store.handleOf('anonymous'), { userId })).toBe(false);
    }
    expect(await store.get('theirs')).not.toBeNull();
    expect(await store.get('anonymous')).not.toBeNull();
    expect(await store.destroyByHandle(mine, { userId: 'owner' })).toBe(true);
    expect(await store.get('mine')).toBeNull();
    expect(await store.destroyByHandle(mine, { userId: 'owner' })).toBe(false);
    // A numeric user id matches its string form, as in listByUser().
    await store.set('numeric', session({ userId: 42 }));
    expect(await store.destroyByHandle(store.handleOf('numeric'), { userId: 42 })).toBe(true);
    await expect(store.destroyByHandle(store.handleOf('theirs'), null as never)).rejects.toThrow(TypeError);
    // The one-argument form is the administrator's: any session.
    expect(await store.destroyByHandle(store.handleOf('theirs'))).toBe(true);
  });
});

// ---- over HTTP: two clients of one user ----------------------------------------------------------------

type Handler = (req: any, res: any) => Promise<unknown>;
const handle = (fn: Handler) => (req: any, res: any, next: (err?: unknown) => void) => void fn(req, res).catch(next);

/** The app of the issue: login, whoami, list, revoke others, revoke one, logout, and a slow request. */
function accountApp(options: Record<string, unknown> = {}) {
  const app = express();
  const middleware = sessionStore({ dataSource, secret: 'users-test-secret', ...options });
  const store = middleware.store;
  stores.push(store);
  const slow = { arrived: deferred(), release: deferred() };
  app.use(middleware);
  app.post(
    '/login',
    handle(async (req, res) => {
      await new Promise<void>((resolve, reject) => req.session.regenerate((err: unknown) => (err ? reject(err) : resolve())));
      req.session.userId = String(req.query.user);
      req.session.device = { userAgent: req.get('user-agent') ?? null };
      res.json({ handle: store.handleOf(req.sessionID) });
    }),
  );
  app.get('/whoami', (req: any, res: any) => res.json({ userId: req.session.userId ?? null }));
  const signedIn = (fn: (req: any, res: any, userId: string) => Promise<unknown>) =>
    handle(async (req, res) => {
      const userId = req.session.userId;
      if (!userId) return res.status(401).json({ error: 'not signed in' });
      return fn(req, res, userId);
    });
  app.get('/sessions', signedIn(async (_req, res, userId) => res.json(await store.listByUser(userId))));
  app.post(
    '/sessions/revoke-others',
    signedIn(async (req, res, userId) => res.json({ revoked: await store.destroyByUser(userId, { except: req.sessionID }) })),
  );
  app.post('/sessions/revoke-all', signedIn(async (_req, res, userId) => res.json({ revoked: await store.destroyByUser(userId) })));
  app.delete(
    '/sessions/:handle',
    signedIn(async (req, res, userId) => {
      try {
        res.json({ revoked: await store.destroyByHandle(req.params.handle, { userId }) });
      } catch (err) {
        if (!(err instanceof TypeError)) throw err;
        res.status(400).json({ error: err.name });
      }
    }),
  );
  app.post(
    '/logout',
    handle(async (req, res) => {
      await new Promise<void>((resolve, reject) => req.session.destroy((err: unknown) => (err ? reject(err) : resolve())));
      res.json({ ok: true });
    }),
  );
  // Loads the session (the middleware did), changes it, and waits for the test before answering; with
  // ?db=1 it also queries the request's transaction first, so the session save runs inside it.
  app.get(
    '/slow',
    handle(async (req, res) => {
      if (req.query.db) await req.db.query('SELECT 1');
      req.session.visits = (req.session.visits ?? 0) + 1;
      req.session.lastPage = '/slow';
      slow.arrived.resolve();
      await slow.release.promise;
      res.json({ visits: req.session.visits });
    }),
  );
  return { app, store, slow };
}

async function login(agent: request.Agent, user: string, userAgent: string): Promise<{ handle: string; cookie: string }> {
  const res = await agent.post(`/login?user=${user}`).set('User-Agent', userAgent).expect(200);
  const setCookie = res.headers['set-cookie'] as unknown as string[];
  return { handle: res.body.handle, cookie: setCookie.map((c) => c.split(';')[0]).join('; ') };
}
const whoami = async (agent: request.Agent) => (await agent.get('/whoami').expect(200)).body.userId as string | null;

describe('two signed-in clients over HTTP', () => {
  test('list shows both; revoke-others from A keeps A and signs B out', async () => {
    const { app, store } = accountApp();
    const a = request.agent(app);
    const b = request.agent(app);
    const other = request.agent(app);
    const sa = await login(a, 'u1', 'client-A');
    const sb = await login(b, 'u1', 'client-B');
    await login(other, 'u2', 'client-other');
    expect(sa.handle).not.toBe(sb.handle);

    const listed = (await a.get('/sessions').expect(200)).body as Array<Record<string, any>>;
    expect(listed).toHaveLength(2);
    expect(listed.map((s) => s.handle).sort()).toEqual([sa.handle, sb.handle].sort());
    expect(listed.map((s) => s.metadata.userAgent).sort()).toEqual(['client-A', 'client-B']);
    for (const s of listed) {
      for (const field of ['createdAt', 'lastSeenAt', 'expiresAt']) expect(Number.isNaN(Date.parse(s[field]))).toBe(false);
    }
    // The handle is not the session id: the cookie's id does not appear in the listing.
    const sidOfA = decodeURIComponent(sa.cookie).match(/connect\.sid=s:([^.]+)\./)![1]!;
    expect(store.handleOf(sidOfA)).toBe(sa.handle);
    expect(JSON.stringify(listed)).not.toContain(sidOfA);

    expect((await a.post('/sessions/revoke-others').expect(200)).body).toEqual({ revoked: 1 });
    expect(await whoami(a)).toBe('u1');
    expect(await whoami(b)).toBeNull();
    await b.get('/sessions').expect(401);
    expect(await whoami(other)).toBe('u2');
    expect((await a.get('/sessions').expect(200)).body.map((s: any) => s.handle)).toEqual([sa.handle]);
  });

  test('revoke-all signs every client of the user out, the asking one included', async () => {
    const { app } = accountApp();
    const a = request.agent(app);
    const b = request.agent(app);
    const other = request.agent(app);
    await login(a, 'u3', 'client-A');
    await login(b, 'u3', 'client-B');
    await login(other, 'u4', 'client-other');
    expect((await a.post('/sessions/revoke-all').expect(200)).body).toEqual({ revoked: 2 });
    expect(await whoami(a)).toBeNull();
    expect(await whoami(b)).toBeNull();
    expect(await whoami(other)).toBe('u4');
  });

  test('revoking one by handle signs out exactly that client; unknown is false; garbage is a TypeError', async () => {
    const { app, store } = accountApp();
    const a = request.agent(app);
    const b = request.agent(app);
    const c = request.agent(app);
    await login(a, 'u5', 'client-A');
    const sb = await login(b, 'u5', 'client-B');
    await login(c, 'u5', 'client-C');
    expect((await a.delete(`/sessions/${sb.handle}`).expect(200)).body).toEqual({ revoked: true });
    expect(await whoami(a)).toBe('u5');
    expect(await whoami(b)).toBeNull();
    expect(await whoami(c)).toBe('u5');
    expect((await a.get('/sessions').expect(200)).body).toHaveLength(2);
    expect((await a.delete(`/sessions/${sb.handle}`).expect(200)).body).toEqual({ revoked: false });
    // A handle of another user's session, learnt somehow: the owner check refuses it.
    const stranger = request.agent(app);
    const victim = await login(request.agent(app), 'u5-other', 'client-victim');
    await login(stranger, 'u5-stranger', 'client-stranger');
    expect((await stranger.delete(`/sessions/${victim.handle}`).expect(200)).body).toEqual({ revoked: false });
    expect((await a.delete(`/sessions/${victim.handle}`).expect(200)).body).toEqual({ revoked: false });
    expect((await store.listByUser('u5-other')).map((s) => s.handle)).toEqual([victim.handle]);
    expect((await a.delete(`/sessions/${'f'.repeat(64)}`).expect(200)).body).toEqual({ revoked: false });
    expect((await a.delete('/sessions/not-a-handle').expect(400)).body).toEqual({ error: 'TypeError' });
    expect((await a.get('/sessions').expect(200)).body).toHaveLength(2);
  });
});

// ---- nothing comes back from the dead ------------------------------------------------------------------

describe('a destroyed session is never re-created by a save of what was loaded before', () => {
  type Order = 'destroy, then save' | 'save, then destroy' | 'together (destroy first)' | 'together (save first)' |
    'destroyByUser, then save' | 'together with destroyByUser' | 'destroy after a few ticks, save at once';
  const orders: Order[] = [
    'destroy, then save',
    'save, then destroy',
    'together (destroy first)',
    'together (save first)',
    'destroyByUser, then save',
    'together with destroyByUser',
    'destroy after a few ticks, save at once',
  ];
  // 1000 trials are bounded by count; on a loaded 2-core machine running the matrix they can take minutes.
  const TRIALS_TIMEOUT_MS = 300_000;
  const ticks = async (n: number) => {
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  };

  /**
   * How the slow request's save gets its object: express-session's createSession() (the store tied the
   * object to what it loaded), or a copy of the loaded data, as @fastify/session or a custom framework
   * passes it: a plain object carrying nothing of the load, so only the table can tell it was destroyed.
   */
  const saved = {
    'the session createSession() made': (store: TypeormSessionStore, sid: string, data: any, _i: number) =>
      store.createSession({ sessionID: sid, sessionStore: store } as any, data) as any,
    'a copy of the loaded data (spread or JSON)': (_store: TypeormSessionStore, _sid: string, data: any, i: number) =>
      i % 2 ? { ...data } : JSON.parse(JSON.stringify(data)),
  };

  test.each(Object.keys(saved) as Array<keyof typeof saved>)(
    '1000 interleaved trials at the store level, saving %s: zero resurrections',
    async (kind) => {
      const store = newStore({ now: Date.now });
      await store.ready();
      const random = prng(5);
      const trials = 1000;
      const resurrected: string[] = [];
      const perOrder = new Map<Order, number>();
      const runTrial = async (i: number) => {
        const sid = `trial-${i}`;
        const userId = `trial-user-${i}`;
        const order = orders[i % orders.length]!;
        perOrder.set(order, (perOrder.get(order) ?? 0) + 1);
        await store.set(sid, session({ userId, n: 0 }));
        const data = await store.get(sid);
        expect(data).not.toBeNull();
        const live = saved[kind](store, sid, data, i);
        live.n = 1;
        live.changed = `after load ${i}`;
        const save = () => store.set(sid, live);
        switch (order) {
          case 'destroy, then save':
            await store.destroy(sid);
            await save();
            break;
          case 'save, then destroy':
            await save();
            await store.destroy(sid);
            break;
          case 'together (destroy first)':
            await Promise.all([store.destroy(sid), save()]);
            break;
          case 'together (save first)':
            await Promise.all([save(), store.destroy(sid)]);
            break;
          case 'destroyByUser, then save':
            expect(await store.destroyByUser(userId)).toBe(1);
            await save();
            break;
          case 'together with destroyByUser':
            await Promise.all([store.destroyByUser(userId), save()]);
            break;
          case 'destroy after a few ticks, save at once':
            await Promise.all([ticks(Math.floor(random() * 8)).then(() => store.destroy(sid)), save()]);
            break;
        }
        if ((await liveRowsOf(store, sid)).length > 0 || (await store.get(sid)) !== null) resurrected.push(`${sid} (${order})`);
      };
      // 20 trials at a time, so trials also interleave with each other on the pool.
      for (let start = 0; start < trials; start += 20) {
        await Promise.all(Array.from({ length: 20 }, (_, k) => runTrial(start + k)));
      }
      expect(resurrected).toEqual([]);
      expect([...perOrder.values()].reduce((a, b) => a + b, 0)).toBe(trials);
      const [{ n }] = await sql<{ n: number | string }>(`SELECT count(*) AS n FROM "${store.tableName}" WHERE expires_at > 0`);
      expect(Number(n)).toBe(0);
      // What remains are the dead rows, nothing of the sessions in them, until their expiry; then a prune takes them.
      const dead = await sql<{ data: string; user_id: string | null }>(`SELECT data, user_id FROM "${store.tableName}"`);
      expect(dead).toHaveLength(trials);
      expect(dead.filter((row) => row.data !== '' || row.user_id !== null)).toEqual([]);
      expect(await store.length()).toBe(0);
      expect(await store.pruneExpired()).toBe(0);
      expect(await newStoreOn(store.tableName, () => Date.now() + 2 * 3_600_000).pruneExpired()).toBe(trials);
      expect(await sql(`SELECT 1 FROM "${store.tableName}"`)).toEqual([]);
    },
    TRIALS_TIMEOUT_MS,
  );

  test('control: what a destroy does not stop is saved (a new id after it, as at login; a row that is only damaged; another id)', async () => {
    const errors: TypeormSessionError[] = [];
    const store = newStore({ now: Date.now, onError: (e) => errors.push(e) });
    for (let i = 0; i < 50; i++) {
      // regenerate() at login: the old id is destroyed, the session continues under a new one.
      await store.set(`before-${i}`, session({ n: 0 }));
      const data = await store.get(`before-${i}`);
      await store.destroy(`before-${i}`);
      await store.set(`after-${i}`, { ...data!, userId: 'ctl', n: 1 } as any);
    }
    expect(await store.listByUser('ctl')).toHaveLength(50);
    expect(await store.get('after-7')).toMatchObject({ userId: 'ctl', n: 1 });
    expect(await store.get('before-7')).toBeNull();

    // A damaged row is not a destroyed one: it reads as no session, and a save over it makes a new session.
    await store.set('damaged', session({ n: 0 }));
    await sql(`UPDATE "${store.tableName}" SET data = $1 WHERE id = $2`, ['{not json', digest('damaged')]);
    expect(await store.get('damaged')).toBeNull();
    expect(errors.map((e) => e.code)).toEqual(['ERR_SESSION_DECODE']);
    await store.set('damaged', session({ n: 2 }));
    expect(await store.get('damaged')).toMatchObject({ n: 2 });

    // The same id after its destroy stays dead, whatever is saved under it.
    await store.set('dead', session({ n: 0 }));
    await store.destroy('dead');
    await store.set('dead', session({ userId: 'ctl', n: 3 }));
    expect(await store.get('dead')).toBeNull();
    expect(await liveRowsOf(store, 'dead')).toEqual([]);
  });

  test('over HTTP (Express): a slow request that loaded the session does not undo a logout or a revocation', async () => {
    const app = accountApp();
    const { store } = app;
    const trials = 30;
    const outcomes: string[] = [];
    for (let i = 0; i < trials; i++) {
      app.slow.arrived = deferred();
      app.slow.release = deferred();
      const client = request.agent(app.app);
      const other = request.agent(app.app);
      const user = `slow-${i}`;
      const { handle: handleOf, cookie } = await login(client, user, 'slow client');
      const { handle: otherHandle } = await login(other, user, 'other device');
      const useDb = i % 2 === 1;
      const slow = client.get(`/slow${useDb ? '?db=1' : ''}`).then((r) => r);
      let revoked: Promise<unknown> | undefined;
      try {
        await arrival(app.slow.arrived, slow);
        // Trials 0, 1 mod 4: the client logs out; 2, 3: the user signs the client out from the other device.
        revoked =
          i % 4 < 2
            ? client.post('/logout').expect(200)
            : other.post('/sessions/revoke-others').expect(200).then((r) => expect(r.body).toEqual({ revoked: 1 }));
        // On SQLite the slow request's transaction holds the one connection until it ends: the logout or
        // revocation can only queue behind it (its save), so it is sent first and awaited after the release.
        if (useDb && queuesBehindTransaction) await sleep(50);
        else await revoked;
      } finally {
        app.slow.release.resolve(); // also when an assertion failed, so no request is left hanging
      }
      await revoked;
      const response = await slow;
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ visits: 1 });

      const row = await sql(`SELECT 1 FROM "${store.tableName}" WHERE id = $1 AND expires_at > 0`, [handleOf]);
      const withOldCookie = (await request(app.app).get('/whoami').set('Cookie', cookie).expect(200)).body.userId;
      const withAgent = await whoami(client);
      if (row.length || withOldCookie !== null || withAgent !== null) outcomes.push(`trial ${i}: row=${row.length} old=${withOldCookie} agent=${withAgent}`);
      // The other device is untouched either way.
      expect((await store.listByUser(user)).map((s) => s.handle)).toEqual([otherHandle]);
      expect(await whoami(other)).toBe(user);
    }
    expect(outcomes).toEqual([]);
  });

  test('over HTTP (Koa): a slow request that loaded the session does not undo a logout or a revocation', async () => {
    const app = new Koa();
    app.keys = ['users-test-key'];
    const middleware: KoaSessionStoreMiddleware = koaSessionStore(app, { dataSource, tableName: 'koa_sessions' });
    stores.push(middleware.store);
    let arrived = deferred();
    let release = deferred();
    app.use(middleware);
    app.use(async (ctx: any) => {
      if (ctx.path === '/login') {
        ctx.session.userId = String(ctx.query.user);
        ctx.session.device = { userAgent: ctx.get('user-agent') };
        ctx.body = { ok: true };
      } else if (ctx.path === '/whoami') {
        ctx.body = { userId: ctx.session.userId ?? null };
      } else if (ctx.path === '/logout') {
        ctx.session = null;
        ctx.body = { ok: true };
      } else if (ctx.path === '/revoke-others') {
        ctx.body = { revoked: await middleware.store.destroyByUser(ctx.session.userId, { except: ctx.cookies.get('koa.sess') }) };
      } else if (ctx.path === '/slow') {
        if (ctx.query.db) await ctx.db.query('SELECT 1');
        ctx.session.visits = (ctx.session.visits ?? 0) + 1;
        arrived.resolve();
        await release.promise;
        ctx.body = { visits: ctx.session.visits };
      } else {
        ctx.status = 404;
      }
    });
    const server: Server = app.listen(0, '127.0.0.1');
    try {
      const store = middleware.store;
      const koaWhoami = async (agent: request.Agent) => (await agent.get('/whoami').expect(200)).body.userId as string | null;
      const problems: string[] = [];
      for (let i = 0; i < 20; i++) {
        arrived = deferred();
        release = deferred();
        const client = request.agent(server);
        const other = request.agent(server);
        const user = `koa-${i}`;
        const res = await client.post(`/login?user=${user}`).expect(200);
        const cookie = (res.headers['set-cookie'] as unknown as string[]).map((c) => c.split(';')[0]).join('; ');
        const key = cookie.match(/koa\.sess=([^;]+)/)![1]!;
        await other.post(`/login?user=${user}`).expect(200);
        expect((await store.listByUser(user)).map((s) => s.handle)).toContain(store.handleOf(key));

        const slow = client.get(`/slow${i % 2 ? '?db=1' : ''}`).then((r) => r);
        let revoked: Promise<unknown> | undefined;
        try {
          await arrival(arrived, slow);
          revoked =
            i % 4 < 2
              ? client.post('/logout').expect(200)
              : other.post('/revoke-others').expect(200).then((r) => expect(r.body).toEqual({ revoked: 1 }));
          // SQLite: queued behind the slow request's transaction, as in the Express test.
          if (i % 2 && queuesBehindTransaction) await sleep(50);
          else await revoked;
        } finally {
          release.resolve();
        }
        await revoked;
        const response = await slow;
        expect(response.status).toBe(200);
        expect(response.body).toEqual({ visits: 1 });

        const row = await sql(`SELECT 1 FROM "koa_sessions" WHERE id = $1 AND expires_at > 0`, [store.handleOf(key)]);
        const withOldCookie = (await request(server).get('/whoami').set('Cookie', cookie).expect(200)).body.userId;
        const withAgent = await koaWhoami(client);
        if (row.length || withOldCookie !== null || withAgent !== null) problems.push(`trial ${i}: row=${row.length} old=${withOldCookie} agent=${withAgent}`);
        expect((await store.listByUser(user)).map((s) => s.handle)).not.toContain(store.handleOf(key));
        expect(await koaWhoami(other)).toBe(user);
      }
      expect(problems).toEqual([]);
    } finally {
      release.resolve();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
  test('Koa adapter: 1000 interleaved trials of a save and a logout of one session: zero resurrections', async () => {
    const app = new Koa();
    app.keys = ['users-test-key'];
    const middleware: KoaSessionStoreMiddleware = koaSessionStore(app, { dataSource, tableName: 'koa_trials' });
    stores.push(middleware.store);
    app.use(middleware);
    app.use(async (ctx: any) => {
      await ticks(Number(ctx.query.ticks ?? 0));
      if (ctx.path === '/login') ctx.session.userId = String(ctx.query.user);
      else if (ctx.path === '/bump') ctx.session.n = (ctx.session.n ?? 0) + 1;
      else if (ctx.path === '/logout') ctx.session = null;
      ctx.body = { userId: ctx.session?.userId ?? null };
    });
    const server: Server = app.listen(0, '127.0.0.1');
    try {
      const store = middleware.store;
      const random = prng(17);
      const resurrected: string[] = [];
      const runTrial = async (i: number) => {
        const res = await request(server).post(`/login?user=koa-trial-${i}`).expect(200);
        const cookie = (res.headers['set-cookie'] as unknown as string[]).map((c) => c.split(';')[0]).join('; ');
        const key = cookie.match(/koa\.sess=([^;]+)/)![1]!;
        const bumpTicks = Math.floor(random() * 6);
        const logoutTicks = Math.floor(random() * 6);
        await Promise.all([
          request(server).post(`/bump?ticks=${bumpTicks}`).set('Cookie', cookie).expect(200),
          request(server).post(`/logout?ticks=${logoutTicks}`).set('Cookie', cookie).expect(200),
        ]);
        const who = (await request(server).get('/whoami').set('Cookie', cookie).expect(200)).body.userId;
        if (who !== null || (await store.get(key)) !== null) resurrected.push(`trial ${i} (ticks ${bumpTicks}/${logoutTicks})`);
      };
      for (let start = 0; start < 1000; start += 20) {
        await Promise.all(Array.from({ length: 20 }, (_, k) => runTrial(start + k)));
      }
      expect(resurrected).toEqual([]);
      // What may live on: a /bump that arrived after its logout found no session and so made a new one, under
      // a new key, with nothing of the signed-in session (koa-session's behaviour for an unknown key).
      const left = Object.values(await store.all()) as unknown as Array<Record<string, unknown>>;
      expect(left.filter((data) => data.userId !== undefined || data.n !== 1)).toEqual([]);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }, TRIALS_TIMEOUT_MS);
});

// ---- two requests changing one session -----------------------------------------------------------------

describe('concurrent saves of one session', () => {
  test("onConflict 'overwrite' (default): the later save wins, onError hears one SessionConflictError", async () => {
    const errors: TypeormSessionError[] = [];
    const store = newStore({ onError: (e) => errors.push(e) });
    await store.set('c', session({ cart: [] }));
    const first = await load(store, 'c');
    const second = await load(store, 'c');
    first.cart = ['book'];
    second.cart = ['pen'];
    await store.set('c', first);
    await expect(store.set('c', second)).resolves.toBeUndefined();
    expect(await store.get('c')).toMatchObject({ cart: ['pen'] });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(SessionConflictError);
    expect(errors[0]!.code).toBe('ERR_SESSION_CONFLICT');
    const [row] = await rowsOf(store, 'c');
    expect(row!.version).toBe(2);
    expect(JSON.parse(row!.data).cart).toEqual(['pen']);

    // The winner's object is now current: its next save is not a conflict.
    second.cart.push('ink');
    await store.set('c', second);
    expect(errors).toHaveLength(1);
    expect((await rowsOf(store, 'c'))[0]!.version).toBe(3);
  });

  test("onConflict 'reject': the second save fails with SessionConflictError; the first save's data stays", async () => {
    const errors: TypeormSessionError[] = [];
    const store = newStore({ onConflict: 'reject', onError: (e) => errors.push(e) });
    await store.set('r', session({ cart: [] }));
    const first = await load(store, 'r');
    const second = await load(store, 'r');
    first.cart = ['book'];
    second.cart = ['pen'];
    await store.set('r', first);
    const rejection = await store.set('r', second).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(rejection).toBeInstanceOf(SessionConflictError);
    expect((rejection as SessionConflictError).code).toBe('ERR_SESSION_CONFLICT');
    expect(await store.get('r')).toMatchObject({ cart: ['book'] });
    const [row] = await rowsOf(store, 'r');
    expect(row!.version).toBe(1);
    expect(errors).toEqual([]);
    // The callback form hears it too.
    const viaCallback = await new Promise((resolve) => store.set('r', second, resolve));
    expect(viaCallback).toBeInstanceOf(SessionConflictError);
  });

  test('many rounds of simultaneous saves: never a torn row; versions count the saves exactly', async () => {
    const errors: TypeormSessionError[] = [];
    const overwrite = newStore({ onError: (e) => errors.push(e) });
    const reject = newStore({ onConflict: 'reject' });
    const writers = 5;
    const payload = (round: number, w: number) => ({ round, writer: w, check: round * 1000 + w, blob: `${w}`.repeat(2000 + w) });
    for (const store of [overwrite, reject]) await store.set('hot', session({ round: -1 }));

    for (let round = 0; round < 30; round++) {
      for (const store of [overwrite, reject]) {
        const before = (await rowsOf(store, 'hot'))[0]!.version;
        const loaded = await Promise.all(Array.from({ length: writers }, () => load(store, 'hot')));
        loaded.forEach((s, w) => Object.assign(s, payload(round, w)));
        const results = await Promise.allSettled(loaded.map((s) => store.set('hot', s)));
        const [row] = await rowsOf(store, 'hot');
        const data = JSON.parse(row!.data);
        expect(data.check).toBe(data.round * 1000 + data.writer);
        expect(data.blob).toBe(`${data.writer}`.repeat(2000 + data.writer));
        expect(data.round).toBe(round);
        const fulfilled = results.filter((r) => r.status === 'fulfilled').length;
        if (store === overwrite) {
          expect(fulfilled).toBe(writers);
          expect(row!.version).toBe(before + writers);
        } else {
          expect(fulfilled).toBe(1);
          expect(row!.version).toBe(before + 1);
          for (const r of results) {
            if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(SessionConflictError);
          }
          // The stored data is the one save that succeeded.
          const winner = results.findIndex((r) => r.status === 'fulfilled');
          expect(data.writer).toBe(winner);
        }
      }
    }
    // Every save after the first of a round lost a race at least once.
    expect(errors.length).toBeGreaterThanOrEqual(30 * (writers - 1));
    expect(errors.every((e) => e instanceof SessionConflictError)).toBe(true);
  });
});

// ---- timeouts ------------------------------------------------------------------------------------------

describe('timeouts', () => {
  test('idle: a session not touched for its maxAge is gone; a touch extends it', async () => {
    const store = newStore({ touchAfter: 0 });
    const t0 = clock;
    try {
      await store.set('idle', session({ userId: 'i' }, 30_000));
      await store.set('active', session({ userId: 'i' }, 30_000));
      clock = t0 + 20_000;
      await store.touch('active', session({ userId: 'i' }, 30_000)); // now expires at t0 + 50 s
      clock = t0 + 29_999;
      expect(await store.get('idle')).not.toBeNull();
      clock = t0 + 30_000;
      expect(await store.get('idle')).toBeNull();
      expect(await store.get('active')).not.toBeNull();
      expect((await store.listByUser('i')).map((s) => s.handle)).toEqual([store.handleOf('active')]);
      clock = t0 + 49_999;
      expect(await store.get('active')).not.toBeNull();
      clock = t0 + 50_000;
      expect(await store.get('active')).toBeNull();
      // A touch after expiry does not bring it back.
      await store.touch('active', session({ userId: 'i' }, 30_000));
      expect(await store.get('active')).toBeNull();
    } finally {
      clock = t0;
    }
  });

  test('idle with a browser-session cookie: the store ttl applies and a loaded save extends it', async () => {
    const store = newStore({ ttl: 30, touchAfter: 0 });
    const t0 = clock;
    try {
      await store.set('b', browserSession({ n: 0 }));
      clock = t0 + 25_000;
      const live = await load(store, 'b');
      live.n = 1;
      await store.set('b', live); // expires at t0 + 55 s
      clock = t0 + 54_999;
      expect(await store.get('b')).toMatchObject({ n: 1 });
      clock = t0 + 55_000;
      expect(await store.get('b')).toBeNull();
    } finally {
      clock = t0;
    }
  });

  test('absolute: activity every 10 s does not keep a session past 60 s; regenerating starts a new lifetime', async () => {
    const store = newStore({ absoluteTimeout: 60, ttl: 3600, touchAfter: 0 });
    const t0 = clock;
    try {
      await store.set('abs', browserSession({ userId: 'abe', n: 0 }));
      for (let step = 1; step <= 5; step++) {
        clock = t0 + step * 10_000;
        const live = await load(store, 'abs');
        expect(live).not.toBeNull();
        if (step % 2) {
          live.n = step;
          await store.set('abs', live);
        } else {
          await store.touch('abs', live);
        }
        const [info] = await store.listByUser('abe');
        expect(info!.lastSeenAt.getTime()).toBe(clock);
        // The idle expiry would be an hour from now; the absolute one wins.
        expect(info!.expiresAt.getTime()).toBe(t0 + 60_000);
      }
      clock = t0 + 59_999;
      expect(await store.get('abs')).toMatchObject({ n: 5 });
      clock = t0 + 60_000;
      expect(await store.get('abs')).toBeNull();
      expect(await store.listByUser('abe')).toEqual([]);

      // Regenerate (what express-session does): destroy the old id, save the data under a new one.
      clock = t0 + 55_000;
      const old = await load(store, 'abs');
      await store.destroy('abs');
      const { cookie: _cookie, ...data } = old;
      await store.set('abs-2', browserSession(data));
      clock = t0 + 60_000;
      expect(await store.get('abs')).toBeNull();
      expect(await store.get('abs-2')).toMatchObject({ userId: 'abe', n: 5 });
      clock = t0 + 114_999;
      const renewed = await load(store, 'abs-2');
      await store.touch('abs-2', renewed);
      expect(await store.get('abs-2')).not.toBeNull();
      clock = t0 + 115_000;
      expect(await store.get('abs-2')).toBeNull();
    } finally {
      clock = t0;
    }
  });

  test('absolute: a save of an existing id that was not loaded (store.set() called directly) does not extend it', async () => {
    const store = newStore({ absoluteTimeout: 60, ttl: 3600 });
    const t0 = clock;
    try {
      await store.set('direct', browserSession({ userId: 'dee', n: 0 }));
      for (let step = 1; step <= 5; step++) {
        clock = t0 + step * 10_000;
        await store.set('direct', browserSession({ userId: 'dee', n: step }));
        const [row] = await rowsOf(store, 'direct');
        expect(Number(row!.created_at)).toBe(t0);
        expect(Number(row!.expires_at)).toBe(t0 + 60_000);
      }
      clock = t0 + 59_999;
      expect(await store.get('direct')).toMatchObject({ n: 5 });
      clock = t0 + 60_000;
      expect(await store.get('direct')).toBeNull();
    } finally {
      clock = t0;
    }
  });

  test('absolute over HTTP: a client active every 10 s is signed out at 60 s, and signing in again works', async () => {
    const t0 = clock;
    try {
      const { app } = accountApp({ absoluteTimeout: 60, now, tableName: 'abs_http' });
      const client = request.agent(app);
      await login(client, 'abby', 'client');
      for (let step = 1; step <= 5; step++) {
        clock = t0 + step * 10_000;
        expect(await whoami(client)).toBe('abby');
        if (step === 3) expect((await client.get('/sessions').expect(200)).body).toHaveLength(1);
      }
      clock = t0 + 60_000;
      expect(await whoami(client)).toBeNull();
      await login(client, 'abby', 'client');
      clock = t0 + 119_999;
      expect(await whoami(client)).toBe('abby');
      clock = t0 + 120_000;
      expect(await whoami(client)).toBeNull();
    } finally {
      clock = t0;
    }
  });
});
