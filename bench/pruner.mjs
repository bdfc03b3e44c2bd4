// Prunes expired sessions from our table in its own process and on its own connections, while bench/run.mjs
// measures reads against the server. Uses the library's store.pruneExpired() when the built library has it;
// otherwise a loop of bounded batched DELETEs on one pg connection. Reports over IPC:
//   { type: 'started', mode } · { type: 'progress', deleted } · { type: 'done', deleted, ms }
import { pathToFileURL } from 'node:url';
import pg from 'pg';

const BATCH = 5000;
// Tagged so bench/run.mjs can end this process's statements when it stops it after the measured window.
export const APPLICATION_NAME = 'tsess-bench-pruner';
const url = withApplicationName(process.env.DATABASE_URL);
function withApplicationName(value) {
  if (!value) return value;
  const u = new URL(value);
  u.searchParams.set('application_name', APPLICATION_NAME);
  return u.toString();
}
const table = process.env.BENCH_TABLE ?? 'sessions';
const send = (msg) => process.send?.(msg);
process.on('disconnect', () => process.exit(0));

async function withLibrary() {
  const lib = await import(process.env.BENCH_LIB ? pathToFileURL(process.env.BENCH_LIB).href : 'typeorm-session');
  const { DataSource } = await import('typeorm');
  const dataSource = new DataSource({ type: 'postgres', url, poolSize: 2, applicationName: APPLICATION_NAME });
  await dataSource.initialize();
  let store;
  try {
    store = new lib.TypeormSessionStore({ dataSource, tableName: table, pruneInterval: false });
  } catch {
    store = new lib.TypeormSessionStore({ dataSource, tableName: table });
  }
  if (typeof store.pruneExpired !== 'function') {
    await dataSource.destroy();
    return false;
  }
  await store.ready?.();
  const started = Date.now();
  send({ type: 'started', mode: "store.pruneExpired() (the library's batched pruner, its default batch size)" });
  let deleted = 0;
  for (;;) {
    const before = deleted;
    const result = await store.pruneExpired({ onProgress: (n) => send({ type: 'progress', deleted: before + n }) });
    if (typeof result !== 'number' || result <= 0) break;
    deleted += result;
    send({ type: 'progress', deleted });
  }
  send({ type: 'done', deleted, ms: Date.now() - started });
  await store.close?.();
  await dataSource.destroy();
  return true;
}

async function withDelete() {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const sql = `DELETE FROM "${table}" WHERE id IN (SELECT id FROM "${table}" WHERE expires_at < $1 LIMIT ${BATCH})`;
  const started = Date.now();
  send({ type: 'started', mode: `batched DELETE (store.pruneExpired() not in the built library): ${sql}` });
  const now = Date.now();
  let deleted = 0;
  for (;;) {
    const { rowCount } = await client.query(sql, [now]);
    deleted += rowCount;
    send({ type: 'progress', deleted });
    if (rowCount < BATCH) break;
  }
  send({ type: 'done', deleted, ms: Date.now() - started });
  await client.end();
}

// BENCH_PRUNE=delete forces the plain batched DELETE even when the library has a pruner.
const forceDelete = process.env.BENCH_PRUNE === 'delete';
(async () => {
  if (forceDelete || !(await withLibrary())) await withDelete();
  process.disconnect?.();
})().catch((err) => {
  send({ type: 'error', message: String(err?.stack ?? err) });
  process.exitCode = 1;
  process.disconnect?.();
});
