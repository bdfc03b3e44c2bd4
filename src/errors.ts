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
