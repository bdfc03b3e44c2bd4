import type { EntityManager } from 'typeorm';
import type { IsolationLevel } from './dialects/index.js';

/**
 * The request transaction's options: `transaction` in sessionStore(), koaSessionStore() and
 * fastifySessionStore(). `Req` is what the framework calls the request: Express's `req`, Koa's `ctx`,
 * Fastify's `request`.
 */
export interface TransactionOptions<Req = any> {
  /**
   * Isolation level of each request's transaction, or a function of the request choosing it (undefined:
   * the default). Default: the DataSource's `isolationLevel` (TypeORM 1.x), else the database's default.
   */
  isolationLevel?: IsolationLevel | ((request: Req) => IsolationLevel | undefined);
  /**
   * Runs right after BEGIN, on the request's transaction, before any query of the request (only for
   * requests that use the database): `SET LOCAL` for row-level security, tenants or statement_timeout. A
   * failure fails the request with it as the cause, and the transaction is rolled back.
   */
  onBegin?: (manager: EntityManager, request: Req) => unknown;
  /** Whether a response status commits. Default: `status < 400`. */
  commitOn?: (status: number) => boolean;
  /** Milliseconds a request waits for a pool connection before failing with 503. Default `10000`. */
  acquireTimeoutMs?: number;
  /**
   * Which requests run their transaction READ ONLY on a read replica (TypeORM's `replication.slaves`).
   * Called once per request, when its transaction is first used, with the request (Express's req, Koa's ctx,
   * Fastify's request); must return a boolean. The session itself is still read and written on the primary.
   * Not called on a DataSource without `replication` (SQLite has none). Default: no request. A method, so a
   * function declared for a framework's fuller request type (Express's `Request`) is accepted.
   */
  readOnly?(request: Req): boolean;
}

export interface ResolvedTransactionOptions {
  isolationLevel: IsolationLevel | ((request: any) => IsolationLevel | undefined) | undefined;
  onBegin: ((manager: EntityManager, request: any) => unknown) | undefined;
  commitOn: (status: number) => boolean;
  acquireTimeoutMs: number;
  readOnly: ((request: any) => boolean) | undefined;
}

const isolationLevels: readonly IsolationLevel[] = ['READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'];
const names = ['isolationLevel', 'onBegin', 'commitOn', 'acquireTimeoutMs', 'readOnly'];

export function isIsolationLevel(value: unknown): value is IsolationLevel {
  return isolationLevels.includes(value as IsolationLevel);
}

/** What a function given as `transaction.isolationLevel` may answer. */
export function isolationLevelError(value: unknown): TypeError {
  return new TypeError(
    `typeorm-session: option "transaction.isolationLevel" answered ${JSON.stringify(value)}; it must answer one of ${isolationLevels.join(', ')} or undefined`,
  );
}

export const commitBelow400 = (status: number) => status < 400;

/** Validates `transaction`; undefined when transactions are turned off (`transaction: false`). */
export function resolveTransactionOptions(value: unknown): ResolvedTransactionOptions | undefined {
  if (value === false) return undefined;
  const options = (value ?? {}) as TransactionOptions;
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError('typeorm-session: option "transaction" must be false or an object');
  }
  for (const key of Object.keys(options)) {
    if (!names.includes(key)) throw new TypeError(`typeorm-session: unknown option "transaction.${key}"`);
  }
  const { isolationLevel, onBegin, commitOn, acquireTimeoutMs, readOnly } = options;
  if (isolationLevel !== undefined && typeof isolationLevel !== 'function' && !isIsolationLevel(isolationLevel)) {
    throw new TypeError(
      `typeorm-session: option "transaction.isolationLevel" must be one of ${isolationLevels.join(', ')} or a function of the request, got ${JSON.stringify(isolationLevel)}`,
    );
  }
  if (onBegin !== undefined && typeof onBegin !== 'function') {
    throw new TypeError('typeorm-session: option "transaction.onBegin" must be a function (manager, request) => unknown');
  }
  if (commitOn !== undefined && typeof commitOn !== 'function') {
    throw new TypeError('typeorm-session: option "transaction.commitOn" must be a function (status) => boolean');
  }
  if (readOnly !== undefined && typeof readOnly !== 'function') {
    throw new TypeError(
      `typeorm-session: option "transaction.readOnly" must be a function (request) => boolean, got ${JSON.stringify(readOnly) ?? typeof readOnly}`,
    );
  }
  if (
    acquireTimeoutMs !== undefined &&
    (typeof acquireTimeoutMs !== 'number' || !(acquireTimeoutMs > 0) || Number.isNaN(acquireTimeoutMs))
  ) {
    throw new TypeError(
      `typeorm-session: option "transaction.acquireTimeoutMs" must be a number of milliseconds > 0 (or Infinity), got ${JSON.stringify(acquireTimeoutMs)}`,
    );
  }
  return {
    isolationLevel,
    onBegin,
    commitOn: commitOn ?? commitBelow400,
    acquireTimeoutMs: acquireTimeoutMs ?? 10_000,
    readOnly,
  };
}
