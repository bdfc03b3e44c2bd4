/**
 * How the middleware finds a request's state. Express gives every request a hidden class of its own, after
 * which each property added to it takes V8's slowest path: so the middleware adds none to req or res, and
 * finds the state through the request's socket instead. These check that nothing is added, and that requests
 * sharing a socket (keep-alive, pipelining) each find their own state.
 */
import http from 'node:http';
import net from 'node:net';
import type { Request, Response, NextFunction } from 'express';
import { TransactionClosedError } from '../../src/index.js';
import { deferred, express, namedTable, names, sql, useDatabase, warm, within } from './harness.js';

const ctx = useDatabase([namedTable('items')], ['items']);

const ownKeys = (o: object) => [...Object.getOwnPropertyNames(o), ...Object.getOwnPropertySymbols(o).map(String)];
const insert = (req: Request, name: string) => req.db.query(sql('INSERT INTO items (name) VALUES ($1)'), [name]);

/**
 * The own properties of req and res that appear between a middleware mounted before `middleware` and the
 * route after it.
 */
async function keysAddedAround(
  middleware: (req: Request, res: Response, next: NextFunction) => void,
  route: (req: Request) => Promise<unknown> | unknown,
  cookie?: string,
): Promise<{ req: string[]; res: string[]; cookie?: string }> {
  const app = express();
  let before: { req: Set<string>; res: Set<string> } | undefined;
  let added: { req: string[]; res: string[] } | undefined;
  app.use((req, res, next) => {
    before = { req: new Set(ownKeys(req)), res: new Set(ownKeys(res)) };
    next();
  });
  app.use(middleware);
  app.get('/route', async (req, res) => {
    await route(req);
    added = { req: ownKeys(req).filter((k) => !before!.req.has(k)), res: ownKeys(res).filter((k) => !before!.res.has(k)) };
    res.send('ok');
  });
  const port = await ctx.listen(app);
  const response = await fetch(`http://127.0.0.1:${port}/route`, { headers: cookie ? { cookie } : {} });
  expect(response.status).toBe(200);
  await response.text();
  return { ...added!, cookie: response.headers.getSetCookie()[0]?.split(';')[0] };
}

describe('no property of its own on req or res', () => {
  const empty = (_req: Request, _res: Response, next: NextFunction) => next();

  test.each([
    ['a route that uses neither the session nor req.db', () => undefined],
    ['a route that reads the session', (req: Request) => (req.session as unknown as Record<string, unknown>).visits],
    ['a route that changes the session', (req: Request) => ((req.session as unknown as Record<string, unknown>).visits = 1)],
    ['a route that queries through req.db', (req: Request) => insert(req, 'keys')],
  ])('%s adds what an empty middleware adds, nothing more', async (_label, route) => {
    const middleware = ctx.app(() => undefined).locals.sessionStore;
    await middleware.store.ready();
    // A session to send back, so the reading routes load one.
    const { cookie } = await keysAddedAround(middleware, (req) => ((req.session as unknown as Record<string, unknown>).visits = 0));
    expect(cookie).toBeDefined();

    const ours = await keysAddedAround(middleware, route, cookie);
    // Express itself adds the same properties whatever the route does (params, route, ...).
    const reference = await keysAddedAround(empty, () => undefined);

    expect(ours.req).toEqual(reference.req);
    expect(ours.res).toEqual(reference.res);
  });
});

describe('requests sharing a socket', () => {
  /** Sends `requests` in one write on one connection and returns the raw responses, in order. */
  async function pipelined(port: number, requests: string[]): Promise<Array<{ status: number; body: string; cookie?: string }>> {
    const socket = net.connect(port, '127.0.0.1');
    let raw = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (raw += chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(
      requests
        .map((line, i) => `${line} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n${i === requests.length - 1 ? 'Connection: close\r\n' : ''}\r\n`)
        .join(''),
    );
    await within(closed, 10_000, 'the pipelined responses');
    return raw
      .split(/(?=HTTP\/1\.1 \d{3})/)
      .filter(Boolean)
      .map((response) => {
        const [head, body] = response.split('\r\n\r\n');
        return {
          status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)![1]),
          body: body ?? '',
          cookie: /\r\nSet-Cookie: ([^;\r]+)/i.exec(head!)?.[1],
        };
      });
  }

  test('three pipelined requests, the first still running while the others are served: each commits its own row and gets its own session', async () => {
    const thirdArrived = deferred();
    const app = ctx.app((a) =>
      a.post('/add/:name', async (req, res) => {
        const name = req.params.name as string;
        if (name === 'third') thirdArrived.resolve();
        await insert(req, name);
        // The first request is still at work (holding its transaction) when the second and third arrive. It
        // waits for their arrival, not their end: on SQLite's single connection their inserts wait for it.
        if (name === 'first') await within(thirdArrived.promise, 5000, 'the third request');
        (req.session as unknown as Record<string, unknown>).name = name;
        res.json({ name, id: req.sessionID, db: (await req.db.query(sql('SELECT COUNT(*) AS n FROM items WHERE name = $1'), [name]))[0] });
      }),
    );
    await warm(app);
    const port = await ctx.listen(app);

    const responses = await pipelined(port, ['POST /add/first', 'POST /add/second', 'POST /add/third']);

    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    const bodies = responses.map((r) => JSON.parse(r.body) as { name: string; id: string; db: { n: unknown } });
    expect(bodies.map((b) => b.name)).toEqual(['first', 'second', 'third']);
    // Each saw its own row inside its own transaction.
    expect(bodies.map((b) => Number(b.db.n))).toEqual([1, 1, 1]);
    expect(new Set(bodies.map((b) => b.id)).size).toBe(3);
    expect(responses.every((r) => r.cookie !== undefined)).toBe(true);
    expect((await names(ctx)).sort()).toEqual(['first', 'second', 'third']);
  });

  test('a late req.db query, made after the next request on the same keep-alive connection, is rejected and never runs', async () => {
    const late = deferred<unknown>();
    const secondDone = deferred();
    const app = ctx.app((a) => {
      a.get('/first', (req, res) => {
        res.send('first');
        void secondDone.promise.then(() => insert(req, 'late')).then(late.resolve, late.resolve);
      });
      a.get('/second', async (req, res) => {
        await insert(req, 'second');
        res.send('second');
      });
    });
    await warm(app);
    const port = await ctx.listen(app);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });

    expect(await get('/first')).toBe('first');
    expect(await get('/second')).toBe('second');
    secondDone.resolve();
    agent.destroy();

    expect(await within(late.promise, 5000, 'the late query')).toBeInstanceOf(TransactionClosedError);
    expect(await names(ctx)).toEqual(['second']);
  });
});
