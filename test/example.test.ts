import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';

// Runs examples/start.mjs the way `npm start` does (against the test database instead of an embedded one)
// and walks the login flow over real HTTP. Needs the build in dist/ (npm test builds first).
let db: TestDatabase;
let child: ChildProcess;
let base: string;

describe.each(['express', 'koa'])('the %s example', (which) => {
beforeAll(async () => {
  if (!existsSync('dist/esm/index.js')) throw new Error('dist/ is missing: run `npm run build` (npm test does)');
  db = await createTestDatabase();
  child = spawn(process.execPath, ['examples/start.mjs', which], {
    env: { ...process.env, DATABASE_URL: db.url, PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  base = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      const match = /open (http:\/\/\S+?)\/?\s/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`example exited with ${code}: ${out}`)));
  });
});

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  await db?.drop();
});

class Browser {
  readonly jar = new Map<string, string>();
  get cookie(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  set cookie(header: string) {
    this.jar.clear();
    for (const pair of header.split('; ').filter(Boolean)) {
      const at = pair.indexOf('=');
      this.jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
  }
  async request(path: string, init: RequestInit = {}) {
    const res = await fetch(base + path, {
      ...init,
      redirect: 'manual',
      headers: { ...(init.headers as object), cookie: this.cookie },
    });
    for (const set of res.headers.getSetCookie()) {
      const [pair] = set.split(';');
      const at = pair!.indexOf('=');
      const name = pair!.slice(0, at);
      const value = pair!.slice(at + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(set)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }
  form(path: string, fields: Record<string, string>) {
    return this.request(path, {
      method: 'POST',
      body: new URLSearchParams(fields).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
  }
  async me() {
    const body = (await (await this.request("/me")).json()) as { userId: number | null };
    return body.userId;
  }
}

test('register, log out, log in, wrong password, across two browsers', async () => {
  const alice = new Browser();
  expect((await alice.request('/')).status).toBe(200);
  expect((await alice.form('/register', { email: 'alice@example.com', password: 'pw1' })).status).toBe(303);
  const aliceId = await alice.me();
  expect(typeof aliceId).toBe('number');

  const planted = alice.cookie;
  expect((await alice.form('/logout', {})).status).toBe(303);
  expect(await alice.me()).toBeNull();

  const bob = new Browser();
  bob.cookie = planted; // a cookie from before logout is worthless
  expect(await bob.me()).toBeNull();

  expect((await bob.form('/login', { email: 'alice@example.com', password: 'wrong' })).status).toBe(401);
  expect(await bob.me()).toBeNull();
  expect((await bob.form('/login', { email: 'alice@example.com', password: 'pw1' })).status).toBe(303);
  expect(await bob.me()).toBe(aliceId);
  expect(bob.cookie).not.toBe(planted); // regenerated at login

  expect((await alice.form('/register', { email: 'alice@example.com', password: 'x' })).status).toBe(409);
});
});
