/**
 * Every error this library creates is a TypeormSessionError with a stable `code` (for programs) and, when
 * it wraps a database or driver failure, that original failure as `cause` (for people reading a trace).
 */
export class TypeormSessionError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The sessions table does not exist and the store was told not to create it (`createTable: false`). */
export class TableMissingError extends TypeormSessionError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_TABLE_MISSING', message, options);
  }
}

/** The sessions table was missing and creating it failed (for example: permission denied). */
export class TableCreateError extends TypeormSessionError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_TABLE_CREATE', message, options);
  }
}

/** A stored session row could not be decoded. Reported through `onError`; the request sees no session. */
export class SessionDecodeError extends TypeormSessionError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_DECODE', message, options);
  }
}

/** A store operation failed in the database; `cause` is the driver's error. */
export class StoreQueryError extends TypeormSessionError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_QUERY', message, options);
  }
}

/** The DataSource given to the store was not initialized when the store first needed it. */
export class DataSourceNotInitializedError extends TypeormSessionError {
  constructor(message: string) {
    super('ERR_DATASOURCE_NOT_INITIALIZED', message);
  }
}

/** The store was used after close(). */
export class StoreClosedError extends TypeormSessionError {
  constructor() {
    super('ERR_SESSION_STORE_CLOSED', 'The session store is closed');
  }
}

/** currentManager() or withTransaction() was called outside a request's unit of work, or after it ended. */
export class NoRequestScopeError extends TypeormSessionError {
  constructor(message: string) {
    super('ERR_NO_REQUEST_SCOPE', message);
  }
}

/**
 * A query reached the request's transaction after its COMMIT or ROLLBACK had begun (a query not awaited
 * before responding, a timer, a client abort). It is rejected so that it never runs in autocommit.
 */
export class TransactionClosedError extends TypeormSessionError {
  constructor(message: string) {
    super('ERR_TRANSACTION_CLOSED', message);
  }
}

/** No database connection became free within `transaction.acquireTimeout`. Answered with 503. */
export class AcquireTimeoutError extends TypeormSessionError {
  readonly status = 503;
  readonly statusCode = 503;
  readonly expose = true;
  constructor(message: string) {
    super('ERR_CONNECTION_ACQUIRE_TIMEOUT', message);
  }
}

/** The request's transaction could not be committed; the client was answered with a 5xx. */
export class CommitError extends TypeormSessionError {
  readonly status: number;
  readonly statusCode: number;
  /**
   * True when the commit lost to a concurrent transaction (serialization failure, deadlock): nothing was
   * kept, so the same request can safely be sent again. The client is then answered 503 with Retry-After.
   */
  readonly retryable: boolean;
  /**
   * True when the connection was lost while COMMIT was under way (the server ended it, the network broke):
   * the server may have committed before the answer was lost, and no one can ask it any more. The client
   * is answered 500 all the same; an application that must know checks its own data.
   */
  readonly outcomeUnknown: boolean;
  constructor(message: string, options?: { cause?: unknown; retryable?: boolean; outcomeUnknown?: boolean }) {
    super('ERR_TRANSACTION_COMMIT', message, options);
    this.retryable = options?.retryable ?? false;
    this.outcomeUnknown = options?.outcomeUnknown ?? false;
    this.status = this.statusCode = this.retryable ? 503 : 500;
  }
}

/** The session could not be saved at the end of the request; the client was answered with a 5xx. */
export class SessionSaveError extends TypeormSessionError {
  readonly status = 500;
  readonly statusCode = 500;
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_SAVE', message, options);
  }
}

/** Middleware mounted in a way that cannot work (a second session middleware, ours mounted twice, ...). */
export class MiddlewareOrderError extends TypeormSessionError {
  constructor(message: string) {
    super('ERR_MIDDLEWARE_ORDER', message);
  }
}

/**
 * A session save was based on a version another request has saved since (two requests changed one session
 * at once). Reported through onError; with `onConflict: 'reject'` the later save fails with it (409).
 */
export class SessionConflictError extends TypeormSessionError {
  readonly status = 409;
  readonly statusCode = 409;
  constructor(message: string) {
    super('ERR_SESSION_CONFLICT', message);
  }
}

/**
 * A hook of the request's transaction failed: `transaction.onBegin` (the request then fails, and its
 * transaction is rolled back), or an afterCommit()/afterRollback() hook (reported through onError; the
 * response and the other hooks are not affected).
 */
export class TransactionHookError extends TypeormSessionError {
  readonly hook: 'onBegin' | 'afterCommit' | 'afterRollback';
  constructor(hook: 'onBegin' | 'afterCommit' | 'afterRollback', message: string, options?: { cause?: unknown }) {
    super('ERR_TRANSACTION_HOOK', message, options);
    this.hook = hook;
  }
}
