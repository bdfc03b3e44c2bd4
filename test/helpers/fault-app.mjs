// The app the fault suite (test/faults.test.ts) runs in a process of its own, as a user would run theirs:
// Express 5 and sessionStore() from the built package (dist/), on the test database FAULT_DB_URL with a small
// pool. It records every uncaught exception and unhandled rejection instead of dying, so the suite can count
// them, and serves its own state at GET /__state. It prints its URL once listening.
import http from 'node:http';
import express from 'express';
import { DataSource } from 'typeorm';
import { sessionStore } from '../../dist/esm/index.js';

const uncaught = [];
const unhandled = [];
process.on('uncaughtException', (err) => uncaught.push(String(err?.stack ?? err)));
process.on('unhandledRejection', (err) => unhandled.push(String(err?.stack ?? err)));

const url = process.env.FAULT_DB_URL;
const poolSize = Number(process.env.FAULT_POOL_SIZE ?? 3);
const postgres = url.startsWith('postgres');
const dataSource = new DataSource(
  postgres
    ? { type: 'postgres', url, applicationName: 'tsess-fault-app', extra: { max: poolSize } }
    : { type: url.startsWith('mariadb') ? 'mariadb' : 'mysql', url: url.replace(/^mariadb:/, 'mysql:'), extra: { connectionLimit: poolSize } },
);
await dataSource.initialize();

const sql = (text) => (postgres ? text : text.replace(/\$\d+/g, '?'));
const sleepSql = (seconds) => (postgres ? `SELECT pg_sleep(${seconds})` : `SELECT SLEEP(${seconds})`);
/** Every error the app answered with, and what caused it (the texts the suite checks for hidden causes). */
const answered = [];
const reported = [];
let commitsOfUnknownOutcome = 0;

const app = express();
const middleware = sessionStore({
  dataSource,
  secret: 'fault-secret',
  transaction: { acquireTimeoutMs: Number(process.env.FAULT_ACQUIRE_TIMEOUT_MS ?? 2000) },
  onError: (err) => {
    reported.push(`${err.code}: ${err.message}`);
    if (err.outcomeUnknown) commitsOfUnknownOutcome++;
  },
});
app.use(middleware);
app.use(express.json());

app.post('/login', (req, res) => {
  req.session.userId = String(req.query.user ?? 'someone');
  res.json({ user: req.session.userId });
});
app.get('/read', (req, res) => void res.json({ user: req.session.userId ?? null }));
app.post('/write/:key', async (req, res) => {
  await req.db.query(sql('INSERT INTO writes (k) VALUES ($1)'), [req.params.key]);
  res.status(201).send(req.params.key);
});
app.post('/slow/:key', async (req, res) => {
  await req.db.query(sql('INSERT INTO writes (k) VALUES ($1)'), [req.params.key]);
  await req.db.query(sleepSql(Number(req.query.seconds ?? 0.05)));
  res.status(201).send(req.params.key);
});
app.get('/__state', (_req, res) => {
  const driver = dataSource.driver;
  const pool = postgres
    ? { total: driver.master.totalCount, idle: driver.master.idleCount, waiting: driver.master.waitingCount }
    : { total: driver.pool._allConnections.length, idle: driver.pool._freeConnections.length, waiting: driver.pool._connectionQueue.length };
  res.json({ uncaught, unhandled, answered, reported, commitsOfUnknownOutcome, pool });
});
// Each test of the suite starts with empty records.
app.post('/__reset', (_req, res) => {
  for (const list of [uncaught, unhandled, answered, reported]) list.length = 0;
  commitsOfUnknownOutcome = 0;
  res.status(204).end();
});
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, _next) => {
  const causes = [];
  for (let e = err; e && causes.length < 5; e = e.cause) causes.push(String(e.message ?? e));
  answered.push(`${req.method} ${req.path}: ${causes.join(' <- ')}`);
  if (!res.headersSent) res.status(err.status ?? err.statusCode ?? 500).json({ error: err.code ?? 'error' });
  else res.destroy();
});

const server = http.createServer(app);
server.keepAliveTimeout = 1000;
server.listen(0, '127.0.0.1', () => console.log(`fault app on http://127.0.0.1:${server.address().port}`));
process.on('SIGTERM', async () => {
  server.close();
  server.closeAllConnections();
  await middleware.close();
  await dataSource.destroy().catch(() => undefined);
  process.exit(0);
});
