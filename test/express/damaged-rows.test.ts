/**
 * A damaged row is no session: the request is answered as if its cookie named no session, the damage is
 * reported once as a SessionDecodeError naming the row's short tag, and a new session can be made. Before
 * this was checked, `{"cookie":"x"}` left the request unanswered (express-session's Cookie constructor threw
 * inside the load, an unhandled rejection) and an array was read as a live session whose id the next login
 * kept, sending no Set-Cookie.
 */
import request from 'supertest';
import type { Request } from 'express';
import { SessionDecodeError, type TypeormSessionError } from '../../src/index.js';
import { damagedRows } from '../helpers/damaged-rows.js';
import { cookieOf, useDatabase, within } from './harness.js';

const ctx = useDatabase([]);
const fields = (req: Request) => req.session as unknown as Record<string, unknown>;

function loginApp(reported: TypeormSessionError[], serializer?: { stringify(v: unknown): string; parse(t: string): unknown }) {
  return ctx.app(
    (a) => {
      a.get('/me', (req, res) => void res.json({ userId: fields(req).userId ?? null }));
      a.post('/login', (req, res) => {
        fields(req).userId = 'alice';
        res.json({ ok: true });
      });
    },
    { onError: (e) => reported.push(e), ...(serializer ? { serializer } : {}) },
  );
}

/** Signs in, then overwrites the stored row with `data`; returns the cookie and the row's short tag. */
async function damagedSession(app: Parameters<typeof request>[0], data: string) {
  const login = await request(app).post('/login').expect(200);
  const cookie = cookieOf(login.headers['set-cookie']);
  const rows = await ctx.sql<{ id: string }>('SELECT id FROM sessions');
  expect(rows).toHaveLength(1);
  await ctx.sql('UPDATE sessions SET data = $1', [data]);
  return { cookie, tag: rows[0]!.id.slice(0, 8) };
}

describe.each(damagedRows)('a stored row with %s', (_label, data) => {
  test('reads as no session, is reported once, and a new session is made over it', async () => {
    const reported: TypeormSessionError[] = [];
    const app = loginApp(reported);
    const { cookie, tag } = await damagedSession(app, data);

    const me = await within(request(app).get('/me').set('Cookie', cookie), 10_000, 'the request with the damaged session');
    expect(me.status).toBe(200);
    expect(me.body).toEqual({ userId: null });
    expect(reported).toHaveLength(1);
    expect(reported[0]).toBeInstanceOf(SessionDecodeError);
    expect(reported[0]!.message).toContain(tag);

    // Signing in over it gives the browser a new session (a new cookie), which then reads back.
    const login = await request(app).post('/login').set('Cookie', cookie).expect(200);
    const fresh = cookieOf(login.headers['set-cookie']);
    expect(fresh).not.toBe(cookie);
    await request(app).get('/me').set('Cookie', fresh).expect(200, { userId: 'alice' });
  });
});

test('a serializer whose parse() throws: no session, reported once with the thrown error as cause', async () => {
  const reported: TypeormSessionError[] = [];
  const broken = new Error('serializer broke');
  const app = loginApp(reported, {
    stringify: (v) => JSON.stringify(v),
    parse: (t) => {
      if (t.includes('"poison"')) throw broken;
      return JSON.parse(t);
    },
  });
  const { cookie } = await damagedSession(app, JSON.stringify({ cookie: { originalMaxAge: null }, poison: true }));

  await request(app).get('/me').set('Cookie', cookie).expect(200, { userId: null });
  expect(reported).toHaveLength(1);
  expect(reported[0]).toBeInstanceOf(SessionDecodeError);
  expect(reported[0]!.cause).toBe(broken);
});
