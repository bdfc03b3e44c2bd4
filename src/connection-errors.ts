import createDebug from 'debug';

const debug = createDebug('typeorm-session:connection');

/**
 * Every driver connection this library borrows from a pool keeps one listener for its 'error' event for the
 * rest of its life. A pool hands a returned connection to the next borrower without a listener of its own in
 * between (pg-pool removes its idle listener in the hand-off; TypeORM's PostgreSQL driver adds its own a
 * promise tick later), and a connection ended by the server (a failover, pg_terminate_backend, KILL) emits
 * 'error' whenever its socket says so. An 'error' event nobody listens to ends a Node process, so in that
 * window one killed connection could take the whole app down. The listener only records the error: the
 * pool and the statement that fails decide what happens next.
 */
const heard = new WeakMap<object, Error | null>();

interface ErrorEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

function record(this: object, err: Error): void {
  debug('connection error: %s', err?.message);
  if (!heard.get(this)) heard.set(this, err);
}

/** Makes sure `connection` has our 'error' listener (added once per connection). */
export function hearErrors(connection: unknown): void {
  if (typeof connection !== 'object' || connection === null || heard.has(connection)) return;
  if (typeof (connection as Partial<ErrorEmitter>).on !== 'function') return;
  heard.set(connection, null);
  (connection as ErrorEmitter).on('error', record);
}

interface DriverPool {
  on(event: string, listener: (connection: unknown) => void): unknown;
}
const guardedPools = new WeakSet<object>();

/**
 * Gives every connection of the DataSource's pools our listener from the moment the pool makes it, and the
 * connections it already has now. The pools announce a new connection synchronously before handing it to
 * its first borrower (pg-pool's 'connect', mysql2's 'connection'); TypeORM's own listener comes later, and a
 * server that ends the connection right after its startup (a kill during a failover) is heard in between.
 */
export function hearPoolErrors(driver: unknown): void {
  const d = driver as {
    master?: DriverPool & { _clients?: unknown[] };
    slaves?: Array<DriverPool & { _clients?: unknown[] }>;
    pool?: DriverPool & { _allConnections?: { toArray?: () => unknown[] } };
  };
  for (const pool of [d.master, ...(Array.isArray(d.slaves) ? d.slaves : [])]) guardPool(pool, 'connect', pool?._clients);
  guardPool(d.pool, 'connection', d.pool?._allConnections?.toArray?.());
}

function guardPool(pool: DriverPool | undefined, event: string, existing: unknown[] | undefined): void {
  if (typeof pool !== 'object' || pool === null || typeof pool.on !== 'function' || guardedPools.has(pool)) return;
  guardedPools.add(pool);
  pool.on(event, hearErrors);
  if (Array.isArray(existing)) for (const connection of existing) hearErrors(connection);
}

/** The first error `connection` emitted, if any: the real cause behind "not queryable" and its kind. */
export function errorHeardOn(connection: unknown): Error | undefined {
  if (typeof connection !== 'object' || connection === null) return undefined;
  return heard.get(connection) ?? undefined;
}

/**
 * Messages a driver gives for a statement sent to a connection that had already failed; the error the
 * connection emitted then says why (pg's "not queryable" hides "terminating connection due to
 * administrator command").
 */
export function isSymptomOfDeath(err: unknown): boolean {
  const { name, message } = (err ?? {}) as { name?: string; message?: string };
  const driverMessage = String((err as { driverError?: { message?: unknown } } | null)?.driverError?.message ?? '');
  return (
    name === 'QueryRunnerAlreadyReleasedError' ||
    /connection is in closed state|not queryable|Connection terminated|Can't add new command when connection is in closed state/i.test(
      `${message ?? ''} ${driverMessage}`,
    )
  );
}

// Errors that mean the connection itself is gone, not that the server refused a statement: PostgreSQL's
// admin shutdown family (57P01-57P03), mysql2's fatal errors, and the sockets' own.
const CONNECTION_LOST_CODES = new Set(['57P01', '57P02', '57P03', 'ECONNRESET', 'EPIPE', 'PROTOCOL_CONNECTION_LOST']);

/** Whether `err` (or the driver error inside TypeORM's) says the connection was lost. */
export function isConnectionLost(err: unknown): boolean {
  for (let e = err as { code?: unknown; fatal?: unknown; driverError?: unknown; message?: unknown } | null | undefined, depth = 0; e && depth < 3; depth++) {
    if (e.fatal === true || CONNECTION_LOST_CODES.has(String(e.code)) || /Connection terminated/i.test(String(e.message ?? ''))) return true;
    e = e.driverError as typeof e;
  }
  return isSymptomOfDeath(err);
}
