import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createTestDatabase, type TestDatabase } from './database.js';

export interface ExampleServer {
  /** http://127.0.0.1:port, without a trailing slash. */
  base: string;
  db: TestDatabase;
  /** Everything the example wrote to stdout and stderr so far. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Runs examples/start.mjs as `npm start` does (`which`: express or koa) on a fresh test database instead of
 * an embedded one, on a free port of 127.0.0.1. Needs the build in dist/ (npm test builds first).
 */
export async function startExample(which: string, env: Record<string, string> = {}): Promise<ExampleServer> {
  if (!existsSync('dist/esm/index.js')) throw new Error('dist/ is missing: run `npm run build` (npm test does)');
  const db = await createTestDatabase();
  let child: ChildProcess | undefined;
  let out = '';
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await db.drop();
  };
  try {
    child = spawn(process.execPath, ['examples/start.mjs', which], {
      env: { ...process.env, DATABASE_URL: db.url, PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr!.on('data', (chunk) => (out += chunk));
    const base = await new Promise<string>((resolve, reject) => {
      child!.stdout!.on('data', (chunk) => {
        out += chunk;
        const match = /open (http:\/\/\S+?)\/?\s/.exec(out);
        if (match) resolve(match[1]!);
      });
      child!.once('exit', (code) => reject(new Error(`example exited with ${code}: ${out}`)));
    });
    return { base, db, output: () => out, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A cookie-keeping HTTP client for the example apps, which reads each form's CSRF token from the page. */
export class ExampleClient {
  readonly jar = new Map<string, string>();
  constructor(
    readonly base: string,
    readonly headers: Record<string, string> = {},
  ) {}

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

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const res = await fetch(this.base + path, {
      ...init,
      redirect: 'manual',
      headers: { ...this.headers, ...(init.headers as object), cookie: this.cookie },
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

  /** The CSRF token in the start page's forms (loading it starts a session if there is none). */
  async csrfToken(path = '/'): Promise<string> {
    const html = await (await this.request(path)).text();
    const match = /name="csrf" value="([^"]+)"/.exec(html);
    if (!match) throw new Error(`no CSRF token on ${path}`);
    return match[1]!;
  }

  /** POSTs a form; with `token: true` (the default) it carries this session's CSRF token. */
  async form(path: string, fields: Record<string, string>, { token = true } = {}): Promise<Response> {
    const body = new URLSearchParams(token ? { ...fields, csrf: await this.csrfToken() } : fields);
    return this.request(path, {
      method: 'POST',
      body: body.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
  }

  async me(): Promise<number | null> {
    const body = (await (await this.request('/me')).json()) as { userId: number | null };
    return body.userId;
  }
}
