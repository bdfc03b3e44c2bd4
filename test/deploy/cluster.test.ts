/**
 * Several app processes on one database: sessionStore() in 4 workers of node:cluster sharing one port
 * (test/deploy/cluster-app.cjs, on the built library in dist/). Sessions made by one worker are read by the
 * others; of 4 workers pruning at once, one at a time holds the lease and deletes; a worker killed inside a
 * request's transaction loses nothing that was committed. Bounded: a fixed number of requests, every wait
 * capped. PostgreSQL and MySQL (jest.config.cjs leaves it out on SQLite, whose processes on one file take
 * turns through SQLite's own lock rather than a pool of connections).
 */
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { openTransactions, sideQuery, sql, testDialect } from '../helpers/dialect.js';
import { within } from '../helpers/async.js';

const APP = join(__dirname, 'cluster-app.cjs');
const LIBRARY = join(__dirname, '..', '..', 'dist', 'cjs', 'index.js');
const WORKERS = 4;

interface Reply {
  status: number;
  body: any;
  cookie?: string;
}

/** One request on a connection of its own (agent: false), so the cluster's round robin picks the worker. */
function call(port: number, method: string, path: string, cookie?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path, agent: false, headers: cookie ? { cookie } : {} },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk) => (text += chunk));
        res.on('end', () => {
          // An error page is text: kept as it is, so the assertion on the body shows it.
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : null;
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body, cookie: res.headers['set-cookie']?.[0]?.split(';')[0] });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

class Cluster {
  readonly child: ChildProcess;
  readonly messages: any[] = [];
  private waiters: Array<() => void> = [];

  constructor(url: string) {
    this.child = fork(APP, [], {
      env: { ...process.env, CLUSTER_DATABASE_URL: url, CLUSTER_LIBRARY: LIBRARY, CLUSTER_WORKERS: String(WORKERS) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (msg) => {
      this.messages.push(msg);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** The first message `match` accepts (already received or still to come), within 30 s. */
  async next(match: (msg: any) => boolean, label: string): Promise<any> {
    const find = async (): Promise<any> => {
      for (;;) {
        const error = this.messages.find((m) => m.type === 'error');
        if (error) throw new Error(`cluster worker failed: ${error.message}`);
        const found = this.messages.find(match);
        if (found) return found;
        await new Promise<void>((resolve) => this.waiters.push(resolve));
      }
    };
    return within(find(), 30_000, label);
  }

  send(msg: unknown): void {
    this.child.send(msg as never);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.send({ type: 'stop' });
    await within(exited, 20_000, 'the cluster to stop').catch(() => {
      this.child.kill('SIGKILL');
    });
  }
}

describe('node:cluster, 4 workers', () => {
  let db: TestDatabase;
  let cluster: Cluster;
  let port: number;
  let pids: number[];

  beforeAll(async () => {
    db = await createTestDatabase();
    await sideQuery(db.url, `CREATE TABLE notes (id ${testDialect === 'mysql' ? 'int AUTO_INCREMENT' : 'serial'} PRIMARY KEY, text varchar(64) NOT NULL)`);
    cluster = new Cluster(db.url);
    const ready = await cluster.next((m) => m.type === 'ready', 'the cluster to listen');
    port = ready.port;
    pids = ready.pids;
  });

  afterAll(async () => {
    await cluster?.stop();
    await db?.drop();
  });

  test('a session made by one worker is read by every other worker', async () => {
    expect(new Set(pids).size).toBe(WORKERS);
    const sessions: Array<{ cookie: string; user: string; madeBy: number }> = [];
    for (let i = 0; i < 8; i++) {
      const reply = await call(port, 'POST', `/login/user-${i}`);
      expect(reply.status).toBe(200);
      sessions.push({ cookie: reply.cookie!, user: `user-${i}`, madeBy: reply.body.pid });
    }
    // The logins themselves were spread over the workers.
    expect(new Set(sessions.map((s) => s.madeBy)).size).toBeGreaterThan(1);
    for (const session of sessions) {
      const readers = new Set<number>();
      // Round robin over new connections: a bounded number of reads reaches every worker.
      for (let attempt = 0; attempt < 4 * WORKERS && readers.size < WORKERS; attempt++) {
        const reply = await call(port, 'GET', '/me', session.cookie);
        expect(reply.body.userId).toBe(session.user);
        readers.add(reply.body.pid);
      }
      expect([...readers].sort()).toEqual([...pids].sort());
    }
  });

  test('four workers pruning at once: one holds the lease at a time, and every expired row goes once', async () => {
    const expired = 1000;
    const now = Date.now();
    // Rows expired an hour ago, beside the live sessions of the test above.
    for (let start = 0; start < expired; start += 250) {
      const values = Array.from({ length: 250 }, (_, i) => `('expired-${start + i}', '{}', ${now - 3_600_000}, ${now - 7_200_000}, ${now - 7_200_000})`);
      await sideQuery(db.url, sql(`INSERT INTO "sessions" ("id", "data", "expires_at", "created_at", "updated_at") VALUES ${values.join(', ')}`));
    }
    const before = cluster.messages.length;
    cluster.send({ type: 'broadcast', message: { type: 'prune' } });
    const replies = [];
    for (const pid of pids) replies.push(await cluster.next((m) => m.type === 'pruned' && m.pid === pid && cluster.messages.indexOf(m) >= before, `worker ${pid}'s prune`));
    expect(replies.reduce((n, r) => n + r.deleted, 0)).toBe(expired);
    // Each holder's time with the lease: from its first DELETE to its release. No two overlap.
    const holds = replies
      .filter((r) => r.deleted > 0)
      .map((r) => {
        const deletes = r.events.filter(([kind]: [string]) => kind === 'delete').map(([, at]: [string, number]) => at);
        const release = r.events.find(([kind]: [string]) => kind === 'release')?.[1];
        return { pid: r.pid, from: Math.min(...deletes), to: release as number };
      })
      .sort((a, b) => a.from - b.from);
    expect(holds.length).toBeGreaterThan(0);
    for (let i = 1; i < holds.length; i++) expect(holds[i]!.from).toBeGreaterThanOrEqual(holds[i - 1]!.to);
    // The workers that got no lease deleted nothing and sent no DELETE at all.
    for (const r of replies.filter((x) => x.deleted === 0)) expect(r.events.filter(([kind]: [string]) => kind === 'delete')).toEqual([]);
    expect(Number((await sideQuery(db.url, sql(`SELECT COUNT(*) AS n FROM "sessions" WHERE "id" LIKE 'expired-%'`)))[0].n)).toBe(0);
  });

  test('a worker killed inside a request transaction loses nothing committed', async () => {
    const committed: string[] = [];
    for (let i = 0; i < 8; i++) {
      const reply = await call(port, 'POST', `/note/kept-${i}`);
      expect(reply.status).toBe(200);
      committed.push(`kept-${i}`);
    }
    const login = await call(port, 'POST', '/login/survivor');
    const hanging = call(port, 'POST', '/hang/lost').then(
      () => 'answered',
      (err: Error) => err.message,
    );
    const { pid } = await cluster.next((m) => m.type === 'hanging', 'a worker inside /hang');
    cluster.send({ type: 'kill', pid });
    await cluster.next((m) => m.type === 'exit' && m.pid === pid, 'the killed worker to exit');
    expect(await hanging).toMatch(/socket hang up|ECONNRESET/);
    const rows = await sideQuery<{ text: string }>(db.url, 'SELECT text FROM notes ORDER BY id');
    expect(rows.map((r) => r.text)).toEqual(committed);
    // The remaining workers serve the session made before the kill.
    for (let i = 0; i < WORKERS; i++) {
      const reply = await call(port, 'GET', '/me', login.cookie);
      expect(reply.body).toMatchObject({ userId: 'survivor' });
      expect(reply.body.pid).not.toBe(pid);
    }
    // The server ended the dead worker's transaction (its socket closed with the process).
    const { openDataSource } = await import('../helpers/database.js');
    const probe = await openDataSource(db.url);
    try {
      const deadline = Date.now() + 10_000;
      while ((await openTransactions(probe)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await openTransactions(probe)).toBe(0);
    } finally {
      await probe.destroy();
    }
  });
});
