import { admin } from './helpers/database.js';
import { ExampleClient, startExample, type ExampleServer } from './helpers/example-server.js';

// The example apps over plain HTTP: the login flow and the defences a browser does not exercise (input
// limits, headers, the per-address limit behind a proxy, what reaches the log). The same flows in a real
// browser are in browser.test.ts.
describe.each(['express', 'koa'])('the %s example', (which) => {
  let server: ExampleServer;
  const client = (headers: Record<string, string> = {}) => new ExampleClient(server.base, headers);

  beforeAll(async () => {
    server = await startExample(which, { TRUST_PROXY: '1', SESSION_SECRET: 'a test secret' });
  });
  afterAll(() => server?.stop());

  test('register, sign out, sign in, wrong password, across two clients', async () => {
    const alice = client();
    expect((await alice.request('/')).status).toBe(200);
    expect((await alice.form('/register', { email: 'alice@example.com', password: 'password one' })).status).toBe(303);
    const aliceId = await alice.me();
    expect(typeof aliceId).toBe('number');

    const planted = alice.cookie;
    expect((await alice.form('/logout', {})).status).toBe(303);
    expect(await alice.me()).toBeNull();

    const bob = client();
    bob.cookie = planted; // a cookie from before sign-out is worthless
    expect(await bob.me()).toBeNull();

    expect((await bob.form('/login', { email: 'alice@example.com', password: 'wrong password' })).status).toBe(401);
    expect(await bob.me()).toBeNull();
    const beforeLogin = bob.cookie;
    expect((await bob.form('/login', { email: 'ALICE@example.com ', password: 'password one' })).status).toBe(303);
    expect(await bob.me()).toBe(aliceId);
    expect(bob.cookie).not.toBe(beforeLogin); // a new session id at sign-in

    const again = await alice.form('/register', { email: 'alice@example.com', password: 'another password' });
    expect(again.status).toBe(409);
    expect(await again.text()).toContain('already exists');
  });

  test('every state-changing form needs the session CSRF token', async () => {
    const victim = client();
    expect((await victim.form('/register', { email: 'victim@example.com', password: 'victim password' })).status).toBe(303);
    const victimId = await victim.me();

    const attacker = client();
    const attackerToken = await attacker.csrfToken();
    const withoutToken = await victim.form('/logout', {}, { token: false });
    expect(withoutToken.status).toBe(403);
    expect(await withoutToken.text()).toContain('This form has expired');
    expect((await victim.form('/logout', { csrf: attackerToken }, { token: false })).status).toBe(403);
    expect((await victim.form('/sessions/revoke-all', {}, { token: false })).status).toBe(403);
    expect(await victim.me()).toBe(victimId); // still signed in: nothing was revoked

    const fresh = client();
    const login = await fresh.form('/login', { email: 'victim@example.com', password: 'victim password', csrf: attackerToken }, { token: false });
    expect(login.status).toBe(403);
    expect(await fresh.me()).toBeNull();
  });

  test('a session can revoke only its own user sessions', async () => {
    const mallory = client();
    expect((await mallory.form('/register', { email: 'mallory@example.com', password: 'mallory password' })).status).toBe(303);
    const trent = client();
    expect((await trent.form('/register', { email: 'trent@example.com', password: 'trent password' })).status).toBe(303);
    const trentHandle = await admin(
      async (c) => (await c.query(`SELECT id FROM sessions WHERE user_id = (SELECT id::text FROM example_users WHERE email = 'trent@example.com')`)).rows[0].id as string,
      server.db.url,
    );
    const refused = await mallory.form('/sessions/revoke', { handle: trentHandle });
    expect(refused.status).toBe(404);
    expect(await trent.me()).not.toBeNull();
  });

  test('failed sign-ins are limited per client address behind a proxy (X-Forwarded-For)', async () => {
    const erin = client({ 'x-forwarded-for': '198.51.100.1' });
    expect((await erin.form('/register', { email: 'erin@example.com', password: 'erin password' })).status).toBe(303);

    const guesser = client({ 'x-forwarded-for': '203.0.113.9' });
    for (let i = 0; i < 20; i++) {
      expect((await guesser.form('/login', { email: `nobody${i}@example.com`, password: 'guess' })).status).toBe(401);
    }
    const refused = await guesser.form('/login', { email: 'erin@example.com', password: 'erin password' });
    expect(refused.status).toBe(429);
    expect(await refused.text()).toContain('Too many failed sign-in attempts');
    expect(await guesser.me()).toBeNull();

    const elsewhere = client({ 'x-forwarded-for': '203.0.113.10' });
    expect((await elsewhere.form('/login', { email: 'erin@example.com', password: 'erin password' })).status).toBe(303);
  });

  test('input limits answer with a clear 4xx and no internals', async () => {
    const visitor = client();
    const cases: Array<[Record<string, string>, string, number, string]> = [
      [{ email: `${'x'.repeat(10_000)}@example.com`, password: 'password one' }, '/login', 413, 'The form is too large'],
      [{ email: `${'x'.repeat(300)}@example.com`, password: 'password one' }, '/login', 400, 'e-mail address is too long'],
      [{ email: 'someone@example.com', password: 'p'.repeat(300) }, '/login', 400, 'password is too long'],
      [{ email: 'someone@example.com', password: 'short' }, '/register', 400, 'at least 8 characters'],
      [{ email: 'not an address', password: 'password one' }, '/register', 400, 'such as name@example.com'],
    ];
    for (const [fields, path, status, text] of cases) {
      const res = await visitor.form(path, fields);
      const body = await res.text();
      expect([path, res.status, body.includes(text)]).toEqual([path, status, true]);
      expect(body).not.toMatch(/\bat \S+ \(|node_modules|\/examples\//); // no stack frame, no path
    }
  });

  test('security headers, and Secure cookies when the proxy says https', async () => {
    const res = await client().request('/');
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('referrer-policy')).toBe('same-origin');
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(res.headers.getSetCookie().join()).not.toMatch(/;\s*secure/i);

    const https = await client({ 'x-forwarded-proto': 'https' }).request('/');
    expect(https.headers.getSetCookie().join()).toMatch(/;\s*secure/i);
  });

  test('a failed INSERT of a user is a plain 500 page, and its log line carries no password material', async () => {
    await admin((c) => c.query(`ALTER TABLE example_users ADD CONSTRAINT refuse_zed CHECK (email <> 'zed@example.com')`), server.db.url);
    const zed = client();
    const res = await zed.form('/register', { email: 'zed@example.com', password: 'zed secret words' });
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(body).toContain('Something went wrong');
    expect(body).not.toMatch(/\bat \S+ \(|QueryFailedError|refuse_zed|node_modules/);
    const log = server.output();
    expect(log).toContain('refuse_zed'); // the failure was logged...
    expect(log).not.toContain('scrypt$'); // ...without the hash (every hash starts so)
    expect(log).not.toContain('zed secret words');
  });
});
