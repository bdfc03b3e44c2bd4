// What the example writes to its log. An error is logged by its name, message and stack (and those of its
// causes) and nothing else: TypeORM's QueryFailedError carries the statement's parameters as a property,
// and printing the object (console.error(err), util.inspect) would write a password hash to the log.
export function describeError(err, depth = 0) {
  if (!(err instanceof Error)) return `non-error thrown: ${typeof err}`;
  const own = err.stack ?? `${err.name}: ${err.message}`;
  return depth < 5 && err.cause !== undefined ? `${own}\ncaused by: ${describeError(err.cause, depth + 1)}` : own;
}

export function logError(err, log = (text) => console.error(text)) {
  log(describeError(err));
}

/**
 * A TypeORM logger that reports failed and slow statements by their SQL only. TypeORM's own loggers print
 * the parameters with them (the INSERT of a new user would log its password hash), and print slow queries
 * whatever `logging` says once `maxQueryExecutionTime` is set.
 */
export class SqlOnlyLogger {
  constructor(log = (text) => console.error(text)) {
    this.write = log;
  }
  logQuery() {}
  logQueryError(error, query) {
    this.write(`query failed: ${query}\n${describeError(error)}`);
  }
  logQuerySlow(time, query) {
    this.write(`slow query (${time} ms): ${query}`);
  }
  logSchemaBuild() {}
  logMigration(message) {
    this.write(`migration: ${message}`);
  }
  log(level, message) {
    if (level === 'warn') this.write(`typeorm: ${message}`);
  }
}
