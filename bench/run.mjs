// `npm run bench`: every store in its own server process (bench/server.mjs), the same autocannon load from
// this process, one run. Prints req/s, p50 and p99 per scenario per store, database round trips per
// request, ratios to the anchors and the issue's targets; writes .bench-results/latest.json.
//
// Environment:
//   DATABASE_URL           use this PostgreSQL (a database "tsess_bench_<pid>" is created on it and dropped after);
//                          unset: an embedded PostgreSQL is started (examples/database.mjs)
//   BENCH_DURATION         seconds measured per run (default 10)
//   BENCH_WARMUP           seconds of unmeasured load before each run (default 2)
//   BENCH_SLICES           slices the measured time of each store is cut into, stores taking turns (default 10)
//   BENCH_PROCESSES        server processes per store, taking the store's slices in turn (default 1; nodb: 3)
//   BENCH_ONLY             comma-separated scenarios to run (read,write,login,db,nodb,prune,memory)
//   BENCH_MEMORY_REQUESTS  requests in the memory check (default 200000)
//   BENCH_MEMORY_SAMPLES   samples taken over them, evenly spaced (default 8)
//   BENCH_STORES           comma-separated stores to run (see bench/stores.mjs), for quick checks
//   BENCH_REF              measure the library as committed at this git ref instead of the working tree's src/
//   BENCH_PRUNE=delete     prune with the plain batched DELETE even when the library has store.pruneExpired()
//   REDIS_URL              the Redis of the connect-redis anchor (default redis://127.0.0.1:6379); when
//                          none answers, that anchor is left out and the report says so
// See bench/README.md for what each scenario and store is.
import { fork, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { startDatabase } from '../examples/database.mjs';
import { stores } from './stores.mjs';
import { redisAnswers, redisUrl } from './redis.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SERVER = join(root, 'bench/server.mjs');
const PRUNER = join(root, 'bench/pruner.mjs');
const OUT = join(root, '.bench-results');
// This run's private files (the compiled library), removed at the end; per process, so runs never collide.
const WORK = join(OUT, `run-${process.pid}`);

const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const SLICES = Number(process.env.BENCH_SLICES ?? 10);
// Processes per app. The no-database route compares apps a few percent apart, and one process per app does
// not average out how differently processes settle (an empty middleware once measured 1.19x faster than
// none): it gets three processes per app, whose slices rotate. Session scenarios differ by far more.
const PROCESSES = process.env.BENCH_PROCESSES ? Number(process.env.BENCH_PROCESSES) : undefined;
const processesFor = (scenario) => PROCESSES ?? (scenario === 'nodb' ? 3 : 1);
const CONNECTIONS = 20;
const SESSIONS = 1000;
const EXPIRED_ROWS = 1_000_000;
const MEMORY_REQUESTS = Number(process.env.BENCH_MEMORY_REQUESTS ?? 200_000);
// Requests before the memory check's first sample: V8's young generation and the allocator's arenas grow
// under load for a while, which is not a leak.
const MEMORY_WARMUP = Number(process.env.BENCH_MEMORY_WARMUP ?? 20_000);
const MEMORY_SAMPLES = Number(process.env.BENCH_MEMORY_SAMPLES ?? 8);
const STORES = process.env.BENCH_STORES ? new Set(process.env.BENCH_STORES.split(',').map((s) => s.trim())) : null;
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : null;

const sessionStores = ['memory', 'redis', 'pg-simple', 'connect-typeorm', 'floor', 'ours-store', 'ours'];
// Stores main() found no server for, left out of every scenario (and named in the report).
const leftOut = new Map();

const log = (line = '') => process.stdout.write(`${line}\n`);
const report = [];
const out = (line = '') => {
  report.push(line);
  log(line);
};

// ---- processes -----------------------------------------------------------------------------------------------

function startServer(store, scenario, env, { gc = false } = {}) {
  const child = fork(SERVER, [store, scenario], {
    env: { ...process.env, ...env },
    execArgv: gc ? ['--expose-gc'] : [],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  // The server's stderr (warnings such as MaxListenersExceededWarning), kept per distinct line.
  const stderrLines = new Map();
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop();
    for (const line of lines) if (line.trim()) stderrLines.set(line, (stderrLines.get(line) ?? 0) + 1);
  });
  const pending = new Map();
  let nextId = 1;
  let exited = false;
  const exit = once(child, 'exit').then(() => (exited = true));
  const ready = new Promise((resolveReady, reject) => {
    child.on('message', (msg) => {
      if (msg.id && pending.has(msg.id)) {
        pending.get(msg.id)(msg);
        pending.delete(msg.id);
      } else if (msg.type === 'ready') resolveReady(msg.port);
      else if (msg.type === 'error') reject(new Error(`server ${store}: ${msg.message}`));
    });
    exit.then(() => reject(new Error(`server ${store} (${scenario}) exited with code ${child.exitCode}`)));
  });
  const call = (msg) =>
    new Promise((resolveCall, reject) => {
      if (exited) return reject(new Error(`server ${store} has exited`));
      const id = nextId++;
      pending.set(id, resolveCall);
      child.send({ ...msg, id });
    });
  return {
    ready,
    call,
    stderr: () => [...stderrLines].filter(([line]) => !line.startsWith('(Use `node --trace-warnings')).map(([line, n]) => (n > 1 ? `${line} (x${n})` : line)),
    async close() {
      if (exited) return;
      await Promise.race([call({ type: 'close' }).catch(() => undefined), delay(10_000)]);
      await Promise.race([exit, delay(5_000)]);
      if (!exited) {
        child.kill('SIGKILL');
        await exit;
      }
    },
  };
}

// ---- load ----------------------------------------------------------------------------------------------------

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** Runs autocannon against the server; latencies of 2xx responses are kept at full (sub-ms) precision. */
async function load(port, requests, { duration, amount, stopWhen } = {}) {
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  const instance = autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    ...(amount ? { amount } : { duration }),
    requests,
    timeout: 30,
  });
  instance.on('response', (client, statusCode, bytes, responseTime) => {
    if (statusCode < 200 || statusCode >= 300) return;
    if (count === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2);
      bigger.set(latencies);
      latencies = bigger;
    }
    latencies[count++] = responseTime;
  });
  stopWhen?.then(() => instance.stop());
  const result = await instance;
  return summarize([
    {
      latencies: latencies.subarray(0, count),
      requests: result.requests.total,
      seconds: result.duration,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
    },
  ]);
}

/** Adds up load slices: req/s over their total time, percentiles over all their latencies. */
function summarize(slices) {
  const total = slices.reduce((n, s) => n + s.latencies.length, 0);
  const sorted = new Float64Array(total);
  let at = 0;
  for (const s of slices) {
    sorted.set(s.latencies, at);
    at += s.latencies.length;
  }
  sorted.sort();
  const sum = (key) => slices.reduce((n, s) => n + s[key], 0);
  const seconds = sum('seconds');
  const result = {
    rps: sum('requests') / seconds,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    requests: sum('requests'),
    seconds,
    non2xx: sum('non2xx'),
    errors: sum('errors'),
    timeouts: sum('timeouts'),
  };
  // Kept for merging slices, but out of spreads and the JSON.
  Object.defineProperty(result, 'latencies', { value: sorted, enumerable: false });
  return result;
}

function cookieCycler(cookies) {
  let i = 0;
  return (req) => ({ ...req, headers: { ...req.headers, cookie: cookies[i++ % cookies.length] } });
}

const POST = { method: 'POST', headers: { 'content-length': '0' } };
const requestsFor = {
  read: (cookies) => [{ method: 'GET', path: '/read', setupRequest: cookieCycler(cookies) }],
  write: (cookies) => [{ ...POST, path: '/write', setupRequest: cookieCycler(cookies) }],
  login: () => [{ ...POST, path: '/login' }],
  db: () => [{ method: 'GET', path: '/db' }],
  nodb: () => [{ method: 'GET', path: '/nodb' }],
  mixed: (cookies) => [
    { method: 'GET', path: '/read', setupRequest: cookieCycler(cookies) },
    { ...POST, path: '/write', setupRequest: cookieCycler(cookies) },
    { ...POST, path: '/login' },
    { method: 'GET', path: '/db' },
    { method: 'GET', path: '/nodb' },
  ],
};

/** Logs in SESSIONS times over HTTP; returns the session cookies. */
async function seed(port, n = SESSIONS) {
  const cookies = [];
  let started = 0;
  const worker = async () => {
    while (started < n) {
      started++;
      const res = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST' });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`seeding: POST /login answered ${res.status}: ${body}`);
      const cookie = res.headers.getSetCookie().find((c) => c.startsWith('connect.sid='));
      if (!cookie) throw new Error('seeding: POST /login set no session cookie');
      cookies.push(cookie.split(';')[0]);
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  const check = await fetch(`http://127.0.0.1:${port}/read`, { headers: { cookie: cookies[0] } });
  if (check.status !== 200) throw new Error(`seeding: a seeded session does not read back (${check.status})`);
  return cookies;
}

// ---- database ------------------------------------------------------------------------------------------------

async function admin(url, work) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function createBenchDatabase(url) {
  // Per run, so two runs against one server cannot drop each other's database.
  const name = `tsess_bench_${process.pid}`;
  try {
    await admin(url, async (c) => {
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.query(`CREATE DATABASE ${name}`);
    });
  } catch (err) {
    log(`(could not create database ${name}: ${err.message}; using the given database)`);
    return { url, drop: async () => {} };
  }
  const own = new URL(url);
  own.pathname = `/${name}`;
  return { url: own.toString(), drop: () => admin(url, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)) };
}

async function dropTable(url, table) {
  await admin(url, async (c) => {
    await c.query(`DROP TABLE IF EXISTS "${table}_lease"`);
    await c.query(`DROP TABLE IF EXISTS "${table}"`);
  });
}

// ---- runs ----------------------------------------------------------------------------------------------------

const results = { runs: [], prune: null, memory: null, serverStderr: {} };
const fmt = (n, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '-';

function perRequest(stats, requests) {
  const n = Math.max(requests, 1);
  const kinds = Object.entries(stats.kinds)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, count]) => `${kind} ${(count / n).toFixed(2)}`)
    .join(', ');
  return { queriesPerRequest: stats.queries / n, kinds, cpuMicrosPerRequest: stats.cpuMicros / n };
}

function describe(run) {
  const problems = [];
  if (run.non2xx) problems.push(`${run.non2xx} non-2xx`);
  if (run.errors) problems.push(`${run.errors} errors`);
  if (run.timeouts) problems.push(`${run.timeouts} timeouts`);
  if (run.serverErrors) problems.push(`server: ${run.serverErrors} handler errors`);
  return problems.join(', ');
}

/**
 * Runs one scenario for several stores. Every store's server is started first; the measured time is then
 * cut into BENCH_SLICES slices given to the stores in turn (the order rotating), so a change in the
 * machine's background load during the scenario falls on every store alike instead of on whichever store
 * ran at that moment. With several processes per store, each store's slices rotate over its processes.
 */
async function measureScenario(ctx, scenario, list) {
  for (const table of new Set(list.map((store) => stores[store].table))) if (table) await dropTable(ctx.url, table);
  const copies = processesFor(scenario);
  const servers = [];
  try {
    for (const store of list) {
      for (let copy = 0; copy < copies; copy++) {
        const server = startServer(store, scenario, ctx.env);
        servers.push({ store, server, port: await server.ready });
      }
    }
    // Per process: a MemoryStore knows only the sessions made through its own process.
    for (const s of servers) s.requests = requestsFor[scenario](['read', 'write'].includes(scenario) ? await seed(s.port) : []);
    await admin(ctx.url, (c) => c.query('CHECKPOINT'));
    for (const s of servers) if (WARMUP > 0) await load(s.port, s.requests, { duration: WARMUP });
    for (const s of servers) await s.server.call({ type: 'reset' });
    const slices = new Map(list.map((store) => [store, []]));
    for (let slice = 0; slice < SLICES; slice++) {
      for (let i = 0; i < list.length; i++) {
        const store = list[(slice + i) % list.length];
        // Round `slice` of every store goes to the same copy number, so paired slices differ in app only.
        const s = servers.filter((x) => x.store === store)[slice % copies];
        slices.get(store).push(await load(s.port, s.requests, { duration: DURATION / SLICES }));
      }
    }
    for (const store of list) {
      const own = servers.filter((x) => x.store === store);
      const stats = mergeStats(await Promise.all(own.map((s) => s.server.call({ type: 'stats' }))));
      const measured = summarize(slices.get(store));
      const run = {
        scenario,
        store,
        label: stores[store].label,
        processes: copies,
        ...measured,
        // Each slice's req/s, one per round: the stores took their slices in turn, so round i of two stores
        // ran under nearly the same machine conditions.
        sliceRps: slices.get(store).map((slice) => slice.rps),
        serverRequests: stats.requests,
        serverErrors: stats.errors,
        lastServerError: stats.lastError,
        ...perRequest(stats, stats.requests),
      };
      results.runs.push(run);
      const problems = describe(run);
      log(
        `  ${scenario.padEnd(6)} ${run.label.padEnd(46)} ${fmt(run.rps).padStart(7)} req/s  p50 ${fmt(run.p50, 2).padStart(6)} ms` +
          `  p99 ${fmt(run.p99, 2).padStart(6)} ms  ${run.queriesPerRequest.toFixed(2)} queries/req  ${fmt(run.cpuMicrosPerRequest).padStart(5)} µs CPU/req` +
          `${copies > 1 ? `  (${copies} processes)` : ''}${problems ? `  !! ${problems}` : ''}`,
      );
      if (run.lastServerError) log(`         last server error: ${run.lastServerError.split('\n')[0]}`);
    }
  } finally {
    for (const s of servers) {
      await s.server.close();
      noteStderr(`${scenario}/${s.store}`, s.server.stderr());
    }
  }
}

/** The counters of one store's processes, added up. */
function mergeStats(all) {
  const merged = { requests: 0, queries: 0, cpuMicros: 0, errors: 0, lastError: null, kinds: {} };
  for (const stats of all) {
    merged.requests += stats.requests;
    merged.queries += stats.queries;
    merged.cpuMicros += stats.cpuMicros;
    merged.errors += stats.errors;
    merged.lastError ??= stats.lastError;
    for (const [kind, count] of Object.entries(stats.kinds)) merged.kinds[kind] = (merged.kinds[kind] ?? 0) + count;
  }
  return merged;
}

/** Server stderr lines, printed once per run and kept in the results. */
function noteStderr(name, lines) {
  if (!lines.length) return;
  results.serverStderr[name] = lines;
  for (const line of lines.slice(0, 3)) log(`         [${name} stderr] ${line}`);
  if (lines.length > 3) log(`         [${name} stderr] ... ${lines.length - 3} more distinct lines`);
}

async function pruneScenario(ctx) {
  await dropTable(ctx.url, stores.ours.table);
  const server = startServer('ours', 'prune', ctx.env);
  try {
    const port = await server.ready;
    const cookies = await seed(port);
    const now = Date.now();
    log(`  prune  inserting ${fmt(EXPIRED_ROWS)} expired rows (one INSERT ... SELECT generate_series) ...`);
    const t0 = Date.now();
    await admin(ctx.url, async (c) => {
      await c.query(
        'INSERT INTO sessions (id, data, expires_at, created_at, updated_at, user_id) ' +
          `SELECT encode(sha256(('expired-' || g)::bytea), 'hex'), '{"cookie":{"originalMaxAge":86400000},"userId":"gone"}', ` +
          `$1::bigint - 3600000 - g, $1::bigint - 90000000, $1::bigint - 90000000, NULL FROM generate_series(1, ${EXPIRED_ROWS}) g`,
        [now],
      );
      await c.query('VACUUM ANALYZE sessions');
      await c.query('CHECKPOINT');
    });
    const insertMs = Date.now() - t0;
    const requests = requestsFor.read(cookies);
    if (WARMUP > 0) await load(port, requests, { duration: WARMUP });

    // Reads without pruning: half the time before the prune and half after it, merged, so that a drift in
    // the machine's background load does not land on one side of the comparison only.
    await server.call({ type: 'reset' });
    const before = await load(port, requests, { duration: DURATION / 2 });

    const pruner = fork(PRUNER, [], { env: { ...process.env, ...ctx.env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const state = { mode: null, deleted: 0, doneMs: null, error: null };
    let markStarted;
    const started = new Promise((r) => (markStarted = r));
    let markDone;
    const done = new Promise((r) => (markDone = r));
    pruner.on('message', (msg) => {
      if (msg.type === 'started') {
        state.mode = msg.mode;
        markStarted();
      } else if (msg.type === 'progress') state.deleted = msg.deleted;
      else if (msg.type === 'done') {
        state.deleted = msg.deleted;
        state.doneMs = msg.ms;
        markDone();
      } else if (msg.type === 'error') {
        state.error = msg.message;
        markStarted();
        markDone();
      }
    });
    pruner.once('exit', () => {
      markStarted();
      markDone();
    });
    await started;
    if (state.error) throw new Error(`pruner: ${state.error}`);
    const beforeStats = await server.call({ type: 'stats' });
    await server.call({ type: 'reset' });
    const windowStart = Date.now();
    // Measured while the prune runs: for DURATION seconds, or until the prune ends if it ends sooner.
    const during = await load(port, requests, { duration: DURATION, stopWhen: done });
    const windowMs = Date.now() - windowStart;
    const duringStats = await server.call({ type: 'stats' });
    const deletedInWindow = state.deleted;
    // The measurement is over: stop the pruner rather than wait for the rest of the million rows.
    const finished = state.doneMs !== null;
    if (pruner.exitCode === null) {
      pruner.kill('SIGKILL');
      await once(pruner, 'exit');
    }
    await admin(ctx.url, (c) =>
      c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tsess-bench-pruner'"),
    );
    if (state.error) throw new Error(`pruner: ${state.error}`);
    await server.call({ type: 'reset' });
    const after = await load(port, requests, { duration: DURATION / 2 });
    const afterStats = await server.call({ type: 'stats' });
    const quiet = summarize([before, after]);
    const rowsPerSecond = deletedInWindow / (windowMs / 1000);
    results.prune = {
      mode: state.mode,
      expiredRows: EXPIRED_ROWS,
      insertMs,
      quiet: { ...quiet, before: { ...before }, after: { ...after } },
      during: { ...during, ...perRequest(duringStats, duringStats.requests) },
      beforeQueries: perRequest(beforeStats, beforeStats.requests),
      afterQueries: perRequest(afterStats, afterStats.requests),
      windowMs,
      deletedInWindow,
      finished,
      pruneMs: finished ? state.doneMs : null,
      rowsPerSecond,
      p99Ratio: during.p99 / quiet.p99,
    };
    const p = results.prune;
    log(`  prune  pruner: ${p.mode}`);
    log(
      `  prune  reads, no prune:     ${fmt(quiet.rps)} req/s  p50 ${fmt(quiet.p50, 2)} ms  p99 ${fmt(quiet.p99, 2)} ms ` +
        `(before: p99 ${fmt(before.p99, 2)} ms, after: p99 ${fmt(after.p99, 2)} ms) ${describe(quiet)}`,
    );
    log(
      `  prune  reads, during prune: ${fmt(during.rps)} req/s  p50 ${fmt(during.p50, 2)} ms  p99 ${fmt(during.p99, 2)} ms ` +
        `(window ${fmt(windowMs / 1000, 1)} s, ${fmt(deletedInWindow)} rows deleted in it) ${describe(during)}`,
    );
    log(
      p.finished
        ? `  prune  the prune finished: ${fmt(p.deletedInWindow)} rows in ${fmt(p.pruneMs / 1000, 1)} s`
        : `  prune  prune rate ${fmt(p.rowsPerSecond)} rows/s (a million rows in about ${fmt(EXPIRED_ROWS / p.rowsPerSecond, 0)} s); stopped after the window`,
    );
  } finally {
    await server.close();
    noteStderr('prune/ours', server.stderr());
  }
}

async function memoryScenario(ctx) {
  await dropTable(ctx.url, stores.ours.table);
  const server = startServer('ours', 'memory', ctx.env, { gc: true });
  try {
    const port = await server.ready;
    const cookies = await seed(port);
    const requests = requestsFor.mixed(cookies);
    log(`  memory ${fmt(MEMORY_WARMUP)} requests of warm-up, then ${fmt(MEMORY_REQUESTS)} (read, write, login, one req.db query, no-db route, in turn) ...`);
    await load(port, requests, { amount: MEMORY_WARMUP });
    const samples = [await server.call({ type: 'stats', gc: true })];
    await server.call({ type: 'reset' });
    let requestsDone = 0;
    let seconds = 0;
    let problems = '';
    for (let i = 0; i < MEMORY_SAMPLES; i++) {
      const run = await load(port, requests, { amount: Math.round(MEMORY_REQUESTS / MEMORY_SAMPLES) });
      requestsDone += run.requests;
      seconds += run.seconds;
      problems ||= describe(run);
      samples.push(await server.call({ type: 'stats', gc: true }));
    }
    const after = samples[samples.length - 1];
    const half = samples[Math.floor(samples.length / 2)];
    results.memory = {
      requests: requestsDone,
      seconds,
      rps: requestsDone / seconds,
      problems,
      warmup: MEMORY_WARMUP,
      rss: samples.map((sample) => sample.rss),
      heap: samples.map((sample) => sample.heapUsed),
      external: samples.map((sample) => sample.external),
      rssBefore: samples[0].rss,
      rssAfter: after.rss,
      heapBefore: samples[0].heapUsed,
      heapAfter: after.heapUsed,
      rssSecondHalf: after.rss - half.rss,
      heapSecondHalf: after.heapUsed - half.heapUsed,
      rssTrend: trend(samples.map((sample) => sample.rss)),
      heapTrend: trend(samples.map((sample) => sample.heapUsed)),
      ...perRequest(after, after.requests),
    };
    const m = results.memory;
    const mb = (b) => `${(b / 1048576).toFixed(1)} MB`;
    log(
      `  memory RSS ${m.rss.map(mb).join(' -> ')}; heap after GC ${m.heap.map(mb).join(' -> ')}; ` +
        `${fmt(m.requests)} requests in ${fmt(m.seconds, 1)} s ${m.problems}`,
    );
  } finally {
    await server.close();
    noteStderr('memory/ours', server.stderr());
  }
}

/**
 * The growth over evenly spaced samples that a least-squares line through them gives (first to last), and its
 * standard error. RSS wanders by several MB between samples as V8 and the allocator take and return pages, so
 * the difference of two samples cannot tell a leak from that; a trend through all of them can.
 */
function trend(values) {
  const n = values.length;
  const meanX = (n - 1) / 2;
  const meanY = values.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (i - meanX) ** 2;
    sxy += (i - meanX) * (values[i] - meanY);
  }
  const slope = sxy / sxx;
  let residuals = 0;
  for (let i = 0; i < n; i++) residuals += (values[i] - meanY - slope * (i - meanX)) ** 2;
  const slopeError = n > 2 ? Math.sqrt(residuals / (n - 2) / sxx) : NaN;
  return { growth: slope * (n - 1), error: slopeError * (n - 1), mean: meanY };
}

// ---- report --------------------------------------------------------------------------------------------------

function find(scenario, store) {
  return results.runs.find((r) => r.scenario === scenario && r.store === store);
}

function ratio(scenario, ours, anchor) {
  const a = find(scenario, ours);
  const b = find(scenario, anchor);
  return a && b ? a.rps / b.rps : NaN;
}

/**
 * How much a ratio moved from round to round: the standard error of the mean of the per-round ratios. The
 * machine's speed drifts by several percent within seconds (another tenant, frequency changes), so this
 * says how far the ratio can be trusted.
 */
function ratioError(scenario, ours, anchor) {
  const a = find(scenario, ours)?.sliceRps;
  const b = find(scenario, anchor)?.sliceRps;
  if (!a || !b || a.length !== b.length || a.length < 2) return NaN;
  const ratios = a.map((v, i) => v / b[i]);
  const mean = ratios.reduce((x, y) => x + y, 0) / ratios.length;
  const variance = ratios.reduce((x, y) => x + (y - mean) ** 2, 0) / (ratios.length - 1);
  return Math.sqrt(variance / ratios.length);
}

/** Fixed-width columns; `align` has one letter per column, l or r. */
function table(rows, align) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (align[i] === 'r' ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}

function printReport(meta) {
  out();
  out(`== typeorm-session bench: ${meta.date}`);
  out(
    `node ${meta.node}, ${meta.cpus} x ${meta.cpuModel}, PostgreSQL ${meta.postgres} (${meta.database}); ` +
      `${CONNECTIONS} connections, ${DURATION} s per run after ${WARMUP} s warm-up; library: ${meta.library}`,
  );
  out();
  const rows = [['scenario', 'store', 'req/s', 'p50 ms', 'p99 ms', 'server CPU µs/req', 'queries/req', 'by kind', 'failures']];
  for (const r of results.runs) {
    rows.push([
      r.scenario, r.label, fmt(r.rps), fmt(r.p50, 2), fmt(r.p99, 2), fmt(r.cpuMicrosPerRequest), r.queriesPerRequest.toFixed(2),
      r.kinds || '-', describe(r) || '-',
    ]);
  }
  for (const line of table(rows, 'llrrrrrll')) out(line);

  const anchors = [
    ['memory', 'MemoryStore'],
    ['redis', 'connect-redis'],
    ['pg-simple', 'connect-pg-simple'],
    ['connect-typeorm', 'connect-typeorm'],
    ['floor', 'floor'],
  ];
  const ratioRows = [['scenario', 'ours (req/s ratio)', ...anchors.map(([, name]) => `/ ${name}`)]];
  for (const scenario of ['read', 'write', 'login']) {
    for (const ours of ['ours', 'ours-store']) {
      if (!find(scenario, ours)) continue;
      ratioRows.push([scenario, stores[ours].label, ...anchors.map(([a]) => `${fmt(ratio(scenario, ours, a), 2)}x`)]);
    }
  }
  if (ratioRows.length > 1) {
    out();
    for (const line of table(ratioRows, 'llrrrrr')) out(line);
  }
  for (const [store, why] of leftOut) out(`(${stores[store].label} left out: ${why})`);
  const other = [];
  // Where an SQL store stands against the one many would pick instead (not a target of issue 7).
  for (const s of ['read', 'write', 'login']) {
    const value = ratio(s, 'ours', 'redis');
    if (Number.isFinite(value)) other.push([s, 'sessionStore() / connect-redis (Redis), ± round-to-round SE', `${fmt(value, 2)}x ±${fmt(ratioError(s, 'ours', 'redis'), 2)}`]);
  }
  if (find('db', 'ours')) {
    other.push(['db', 'req.db / hand-written QueryRunner transaction', `${fmt(ratio('db', 'ours', 'handwritten-qr'), 2)}x`]);
    other.push(['db', 'req.db / dataSource.query() (no transaction)', `${fmt(ratio('db', 'ours', 'datasource-query'), 2)}x`]);
  }
  if (find('nodb', 'ours')) {
    other.push(['nodb', 'sessionStore() / no session middleware', `${fmt(ratio('nodb', 'ours', 'none'), 2)}x`]);
    other.push(['nodb', 'the same app again / no session middleware (two identical apps)', `${fmt(ratio('nodb', 'none-again', 'none'), 2)}x`]);
    other.push(['nodb', 'an empty middleware / no session middleware', `${fmt(ratio('nodb', 'empty-middleware', 'none'), 2)}x`]);
    other.push(['nodb', 'sessionStore() / an empty middleware', `${fmt(ratio('nodb', 'ours', 'empty-middleware'), 2)}x`]);
    // Where the no-database route's cost comes from: the async context alone, and ours without it.
    other.push(['nodb', 'an AsyncLocalStorage.run() middleware / no session middleware', `${fmt(ratio('nodb', 'async-context', 'none'), 2)}x`]);
    other.push(['nodb', 'sessionStore({ transaction: false }) / no session middleware', `${fmt(ratio('nodb', 'ours-no-transaction', 'none'), 2)}x`]);
    other.push(['nodb', 'express-session + MemoryStore / no session middleware', `${fmt(ratio('nodb', 'memory', 'none'), 2)}x`]);
    other.push(['nodb', 'sessionStore() / express-session + TypeormSessionStore', `${fmt(ratio('nodb', 'ours', 'ours-store'), 2)}x`]);
  }
  if (results.prune) {
    const p = results.prune;
    other.push(['prune', 'p99 during prune / p99 without', `${fmt(p.p99Ratio, 2)}x`]);
  }
  if (other.length) {
    out();
    for (const line of table([['scenario', 'comparison', 'ratio'], ...other], 'llr')) out(line);
  }
  if (results.prune) {
    const p = results.prune;
    out();
    out(`prune: ${fmt(p.expiredRows)} expired rows; pruner: ${p.mode}`);
    out(
      `  reads without prune ${fmt(p.quiet.rps)} req/s p99 ${fmt(p.quiet.p99, 2)} ms; during prune ${fmt(p.during.rps)} req/s ` +
        `p99 ${fmt(p.during.p99, 2)} ms (window ${fmt(p.windowMs / 1000, 1)} s, ${fmt(p.deletedInWindow)} rows deleted in it, ` +
        `${fmt(p.rowsPerSecond)} rows/s)`,
    );
  }
  if (results.memory) {
    const m = results.memory;
    const mb = (b) => `${(b / 1048576).toFixed(1)} MB`;
    out();
    out(
      `memory (sessionStore(), after ${fmt(m.warmup)} requests of warm-up, then ${fmt(m.requests)} mixed requests, ` +
        `sampled after GC every ${fmt(m.requests / (m.rss.length - 1))}):`,
    );
    out(`  RSS  ${m.rss.map(mb).join(' -> ')} (growth ${mb(m.rssAfter - m.rssBefore)}; over the second half ${mb(m.rssSecondHalf)})`);
    out(`  heap ${m.heap.map(mb).join(' -> ')} (growth ${mb(m.heapAfter - m.heapBefore)}; over the second half ${mb(m.heapSecondHalf)})`);
    out(`  external (Buffers) ${m.external.map(mb).join(' -> ')}`);
    out(
      `  trend over the samples (least squares, first to last): RSS ${mb(m.rssTrend.growth)} ± ${mb(m.rssTrend.error)}; ` +
        `heap ${mb(m.heapTrend.growth)} ± ${mb(m.heapTrend.error)}`,
    );
  }

  const targets = [];
  const target = (name, value, goal, higherIsBetter = true, shown = (v) => `${fmt(v, 2)}x`, error = NaN) => {
    if (!Number.isFinite(value)) return;
    const met = higherIsBetter ? value >= goal : value <= goal;
    targets.push({ name, value, goal, met, shown: shown(value), error: Number.isFinite(error) ? `±${fmt(error, 2)}` : '' });
  };
  const versus = (name, scenario, ours, anchor, goal) => target(name, ratio(scenario, ours, anchor), goal, true, undefined, ratioError(scenario, ours, anchor));
  versus('read: sessionStore() >= 1.6x connect-pg-simple', 'read', 'ours', 'pg-simple', 1.6);
  versus('read: sessionStore() >= 0.65x MemoryStore', 'read', 'ours', 'memory', 0.65);
  versus('write: sessionStore() >= 1.15x connect-pg-simple', 'write', 'ours', 'pg-simple', 1.15);
  versus('login: sessionStore() >= 1.15x connect-pg-simple', 'login', 'ours', 'pg-simple', 1.15);
  for (const s of ['read', 'write', 'login']) versus(`${s}: sessionStore() >= 2.5x connect-typeorm`, s, 'ours', 'connect-typeorm', 2.5);
  for (const s of ['read', 'write', 'login']) versus(`${s}: sessionStore() >= 0.9x the floor`, s, 'ours', 'floor', 0.9);
  versus('no-db route: sessionStore() >= 0.97x without middleware', 'nodb', 'ours', 'none', 0.97);
  versus('one query: req.db >= 0.9x hand-written QueryRunner transaction', 'db', 'ours', 'handwritten-qr', 0.9);
  if (results.prune) target('prune: p99 during prune <= 2x without', results.prune.p99Ratio, 2, false);
  // No growth beyond noise: the RSS trend through the samples is under 2% of RSS or under two standard errors
  // (indistinguishable from the allocator's wandering), and the heap after GC (where a leak of the library's
  // objects would show) trends by under 1 MB.
  if (results.memory) {
    const m = results.memory;
    const MB = 1048576;
    const rssLimit = Math.max(0.02 * m.rssTrend.mean, 2 * m.rssTrend.error);
    target(
      'memory: RSS trend <= max(2% of RSS, 2 SE)',
      m.rssTrend.growth / MB,
      rssLimit / MB,
      false,
      (v) => `${fmt(v, 1)} MB (limit ${fmt(rssLimit / MB, 1)})`,
      m.rssTrend.error / MB,
    );
    target('memory: heap trend <= 1 MB', m.heapTrend.growth / MB, 1, false, (v) => `${fmt(v, 1)} MB`, m.heapTrend.error / MB);
  }
  results.targets = targets;
  if (targets.length) {
    out();
    const rowsT = [['target (issue 7)', 'measured', 'standard error', 'met']];
    for (const t of targets) rowsT.push([t.name, t.shown, t.error, t.met ? 'yes' : 'NO']);
    for (const line of table(rowsT, 'lrrl')) out(line);
    out(`${targets.filter((t) => t.met).length} of ${targets.length} targets met`);
  }
  const failed = results.runs.filter((r) => describe(r));
  if (failed.length) out(`\n!! runs with failed requests (their numbers are not comparable): ${failed.map((r) => `${r.scenario}/${r.store}`).join(', ')}`);
}

// ---- the library under test ----------------------------------------------------------------------------------

/**
 * Compiles src/ (ESM) into .bench-results/lib, or the src/ of BENCH_REF when set. A private build: dist/ and
 * sql/ are left alone, and nothing rebuilding dist/ during the run can change what is measured midway.
 */
function buildLibrary() {
  const lib = join(WORK, 'lib');
  rmSync(lib, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  let project = join(root, 'tsconfig.esm.json');
  let label;
  const ref = process.env.BENCH_REF;
  if (ref) {
    const commit = git(['rev-parse', '--short', `${ref}^{commit}`]);
    if (!commit) throw new Error(`BENCH_REF=${ref} is not a commit`);
    const tree = join(WORK, 'ref');
    rmSync(tree, { recursive: true, force: true });
    mkdirSync(tree, { recursive: true });
    const tar = execFileSync('git', ['archive', '--format=tar', commit, 'src', 'tsconfig.json', 'tsconfig.esm.json'], { cwd: root });
    execFileSync('tar', ['-x', '-C', tree], { input: tar });
    project = join(tree, 'tsconfig.esm.json');
    label = `commit ${commit} (BENCH_REF=${ref})`;
  } else {
    const dirty = git(['status', '--porcelain', '--', 'src']) !== '';
    label = `working tree at ${git(['rev-parse', '--short', 'HEAD']) || '?'}${dirty ? ' + uncommitted src/ changes' : ''}`;
  }
  log(`compiling the library (${label}) into ${WORK.slice(root.length + 1)}/lib ...`);
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', project, '--outDir', lib, '--declaration', 'false', '--sourceMap', 'false'], {
      cwd: root,
      stdio: 'inherit',
    });
  } catch (err) {
    // tsc still emits on type errors; a half-edited src/ that emitted is measured, with a warning.
    if (!existsSync(join(lib, 'index.js'))) throw err;
    log('!! tsc reported errors (above); measuring what it emitted');
    label += ' (tsc reported errors)';
  }
  writeFileSync(join(lib, 'package.json'), '{ "type": "module" }\n');
  return { entry: join(lib, 'index.js'), label };
}

// ---- main ----------------------------------------------------------------------------------------------------

function git(args) {
  try {
    return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

async function main() {
  const t0 = Date.now();
  let database;
  let bench;
  try {
    const library = buildLibrary();
    log(process.env.DATABASE_URL ? 'database: DATABASE_URL' : 'database: starting an embedded PostgreSQL ...');
    database = await startDatabase();
    bench = await createBenchDatabase(database.url);
    const ctx = { url: bench.url, env: { DATABASE_URL: bench.url, BENCH_LIB: library.entry } };
    const postgres = await admin(bench.url, async (c) => (await c.query('SHOW server_version')).rows[0].server_version);
    const meta = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      memoryGB: Math.round(totalmem() / 2 ** 30),
      postgres,
      database: process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded, examples/database.mjs',
      library: library.label,
      duration: DURATION,
      warmup: WARMUP,
      connections: CONNECTIONS,
      command: `${process.env.BENCH_DURATION ? `BENCH_DURATION=${DURATION} ` : ''}npm run bench`,
    };
    results.meta = meta;
    log(`PostgreSQL ${postgres}; ${CONNECTIONS} connections, ${DURATION} s per run (+${WARMUP} s warm-up)`);
    if (!(await redisAnswers())) {
      leftOut.set('redis', `no Redis answered at ${redisUrl()} (set REDIS_URL)`);
      log(`the connect-redis anchor is left out: ${leftOut.get('redis')}`);
    }
    meta.leftOut = Object.fromEntries(leftOut);

    const plan = [
      ['read', sessionStores],
      ['write', sessionStores],
      ['login', sessionStores],
      ['db', ['ours', 'handwritten-qr', 'datasource-query']],
      ['nodb', ['none', 'none-again', 'empty-middleware', 'async-context', 'ours', 'ours-no-transaction', 'memory', 'ours-store']],
    ];
    for (const [scenario, list] of plan) {
      if (ONLY && !ONLY.has(scenario)) continue;
      const chosen = list.filter((store) => (!STORES || STORES.has(store)) && !leftOut.has(store));
      if (chosen.length) await measureScenario(ctx, scenario, chosen);
    }
    if (!ONLY || ONLY.has('prune')) await pruneScenario(ctx);
    if (!ONLY || ONLY.has('memory')) await memoryScenario(ctx);

    meta.totalSeconds = Math.round((Date.now() - t0) / 1000);
    printReport(meta);
    out(`\n(total ${meta.totalSeconds} s)`);
    const json = JSON.stringify(results, null, 2);
    writeFileSync(join(OUT, 'latest.json'), json);
    writeFileSync(join(OUT, `bench-${meta.date.replace(/[:.]/g, '-')}.json`), json);
    writeFileSync(join(OUT, 'latest.txt'), report.join('\n') + '\n');
    log(`results: .bench-results/latest.json, .bench-results/latest.txt`);
  } finally {
    await bench?.drop().catch(() => undefined);
    await database?.stop();
    rmSync(WORK, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
