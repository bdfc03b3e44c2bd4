import type { EventEmitter } from 'node:events';
import { QueryFailedError, type DataSource, type EntityManager, type QueryRunner } from 'typeorm';
import createDebug from 'debug';
import { CommitError, TransactionClosedError, TransactionHookError } from '../errors.js';
import { traced, transactionChannel, type TransactionTrace } from '../tracing.js';
import type { DriverDialect, IsolationLevel } from '../dialects/index.js';
import { errorHeardOn, hearErrors, hearPoolErrors, isConnectionLost, isSymptomOfDeath } from '../connection-errors.js';

const debug = createDebug('typeorm-session:transaction');

export interface UnitOfWorkOptions {
  acquireTimeoutMs: number;
  /** READ ONLY, on one of the DataSource's replicas (TypeORM's slave query runner). */
  readOnly?: boolean;
}

/** The request the transaction belongs to, as the unit of work needs it. */
export interface UnitOfWorkOwner {
  /** The transaction begins, so the framework glue can start watching for a client abort. */
  transactionBegan(): void;
  /** The level to BEGIN with (undefined: the database's default). May throw for a bad answer of the app's. */
  isolationLevel(): IsolationLevel | undefined;
  /** The app's `transaction.onBegin` on the transaction just begun (undefined when there is none). */
  afterBegin(manager: () => EntityManager): unknown;
}

type QueryFn = (this: QueryRunner, sql: string, parameters?: unknown[], structured?: boolean) => Promise<any>;

/** idle: nothing taken yet · open: BEGIN sent (or on its way) · closing: COMMIT/ROLLBACK decided · done */
type State = 'idle' | 'open' | 'closing' | 'done';

export type Outcome = 'none' | 'committed' | 'rolled back';

const OWNER = Symbol('typeorm-session.unit-of-work');
type OwnedRunner = QueryRunner & { [OWNER]: UnitOfWork };
type OwnedManager = EntityManager & { queryRunner: OwnedRunner };

/**
 * One request's database transaction: taken lazily, fenced once it ends, always rolled back before release.
 *
 * The QueryRunner is created on first use of `manager` but takes no connection until its first query. It is
 * marked as already inside a transaction from the start, so TypeORM's own save()/transaction() nest inside
 * it instead of opening their own; the real BEGIN is sent just before the first query. TypeORM's release()
 * does not roll back, so the end always rolls back first; and a query sent after COMMIT/ROLLBACK would run
 * in autocommit, so it is fenced.
 * BEGIN, COMMIT and ROLLBACK go to the driver's connection directly (the DataSource's logger still sees
 * them): through the QueryRunner each would cost subscriber broadcasts and several awaits.
 */
export class UnitOfWork {
  private runner: OwnedRunner | undefined = undefined;
  private baseQuery: QueryFn | undefined = undefined;
  private begun: Promise<void> | undefined = undefined;
  private state: State = 'idle';
  /** Statements sent and not yet settled, and who waits for them to drain. */
  private pending = 0;
  private drained: (() => void) | undefined = undefined;
  private savepoints = 0;
  private connected = false;
  private connectionError: unknown = undefined;
  private ending: Promise<Outcome> | undefined = undefined;
  private detach: (() => void) | undefined = undefined;
  private brokenBy: unknown = undefined;
  /** BEGIN succeeded: from here on the end must roll back even if the rest of begin() failed. */
  private beginSent = false;

  constructor(
    readonly dataSource: DataSource,
    private readonly driver: DriverDialect,
    private readonly options: UnitOfWorkOptions,
    private readonly owner?: UnitOfWorkOwner,
  ) {}

  /** The EntityManager bound to this transaction. Getting it takes no connection. */
  get manager(): EntityManager {
    return this.queryRunner().manager;
  }

  /** True when the transaction is READ ONLY, on a replica. */
  get readOnly(): boolean {
    return this.options.readOnly === true;
  }

  /** True once a query has been sent (or is being sent) inside the transaction, until it ends. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** True once COMMIT or ROLLBACK has been decided: no more queries are accepted. */
  get closed(): boolean {
    return this.state === 'closing' || this.state === 'done';
  }

  /** Runs a statement inside the transaction (opening it if needed); returns the rows. */
  async query(sql: string, parameters: unknown[]): Promise<{ records: unknown[]; affected: number }> {
    const result = (await this.guardedQuery(sql, parameters, true)) as { records?: unknown[]; affected?: number };
    return { records: result.records ?? [], affected: result.affected ?? 0 };
  }

  private queryRunner(): OwnedRunner {
    if (this.runner) return this.runner;
    if (this.closed) {
      throw new TransactionClosedError('typeorm-session: the request transaction has already ended');
    }
    const runner = this.driver.ownRunner(this.dataSource, this.readOnly) as OwnedRunner;
    const internal = runner as unknown as { transactionDepth: number; isTransactionActive: boolean };
    internal.isTransactionActive = true;
    internal.transactionDepth = 1;
    this.baseQuery = runner.query as QueryFn;
    runner[OWNER] = this;
    runner.query = guardedRunnerQuery as QueryRunner['query'];
    // EntityManager.query() and .transaction() check runner.isReleased before reaching runner.query, so once
    // the runner is released they would fail with QueryRunnerProviderAlreadyReleasedError instead of the
    // fence's TransactionClosedError, or, after the backend died, instead of the connection's real error.
    const manager = runner.manager as unknown as Record<'query' | 'transaction', unknown>;
    manager.query = fencedManagerQuery;
    manager.transaction = fencedManagerTransaction;
    this.runner = runner;
    return runner;
  }

  /** Why a call reaching the manager cannot run, or undefined when it can. */
  refusal(what: string): Error | undefined {
    if (this.closed) return this.closedError(what);
    if (this.runner?.isReleased && this.connectionError !== undefined) return this.connectionError as Error;
    return undefined;
  }

  guardedQuery(sql: string, parameters?: unknown[], structured?: boolean): Promise<any> {
    if (this.closed) return Promise.reject(this.closedError(sql));
    // withTransaction() may be a request's first use of the database: its SAVEPOINT arrives here before
    // anything has read `manager`, so the runner begin() needs may not exist yet.
    const runner = this.queryRunner();
    if (this.state === 'idle') {
      this.state = 'open';
      this.owner?.transactionBegan();
    }
    return this.track(runner, sql, parameters, structured);
  }

  private async track(runner: OwnedRunner, sql: string, parameters?: unknown[], structured?: boolean): Promise<any> {
    this.pending++;
    try {
      await (this.begun ??= this.begin());
      return await this.baseQuery!.call(runner, sql, parameters, structured);
    } catch (err) {
      // After the backend died TypeORM answers "query runner already released": report the real cause.
      const cause = this.realCause(err);
      if (this.driver.isRetryable(cause) && cause && typeof cause === 'object') {
        // Lost to a concurrent transaction (40001, deadlock): nothing of the request will be kept, so the
        // client may send it again. Express's final handler and Koa answer with these.
        Object.assign(cause, { status: 503, statusCode: 503, expose: true, headers: { 'Retry-After': '1' } });
      }
      throw cause;
    } finally {
      if (--this.pending === 0 && this.drained) this.drained();
    }
  }

  private closedError(sql: string): TransactionClosedError {
    return new TransactionClosedError(
      `typeorm-session: a query was sent after the request transaction ended, and was not run ` +
        `(it would have run outside any transaction): ${sql.slice(0, 60)}`,
    );
  }

  private async begin(): Promise<void> {
    const runner = this.runner!;
    hearPoolErrors(this.dataSource.driver);
    const isolationLevel = this.owner?.isolationLevel();
    await traced(transactionChannel, () => this.trace('acquire'), () => this.driver.take(runner, this.dataSource, this.options.acquireTimeoutMs));
    this.connected = true;
    // Keep the connection's own error: after a backend is killed, TypeORM releases the runner and later
    // calls fail with "query runner already released", which hides the real cause.
    const connection = (runner as unknown as { databaseConnection?: { on?: Function } }).databaseConnection;
    hearErrors(connection);
    if (typeof connection?.on === 'function') {
      const onError = (err: unknown) => (this.connectionError ??= err);
      connection.on('error', onError);
      // The connection outlives this request in the pool: without this, every request would leave one more
      // listener (holding this whole unit of work) on it. A connection that failed keeps the listener, so a
      // later error event on the discarded client still has a listener and cannot crash the process.
      this.detach = () => {
        if (this.connectionError === undefined) (connection as unknown as EventEmitter).removeListener('error', onError);
      };
    }
    await traced(transactionChannel, () => this.trace('begin', isolationLevel), async () => {
      for (const statement of this.driver.beginStatements(isolationLevel, this.readOnly)) await this.control(statement);
    });
    this.beginSent = true;
    try {
      const hook = this.owner?.afterBegin(() => this.directManager());
      if (hook !== undefined) await hook;
    } catch (cause) {
      throw new TransactionHookError('onBegin', 'typeorm-session: transaction.onBegin failed; the request transaction was not used', { cause });
    }
  }

  private trace(phase: TransactionTrace['phase'], isolationLevel?: IsolationLevel): TransactionTrace {
    return { phase, database: this.driver.name, isolationLevel };
  }

  /**
   * A manager on this transaction's connection whose statements skip the wait for BEGIN (onBegin runs as
   * part of it: through the request's own manager its statements would wait for themselves).
   */
  private directManager(): EntityManager {
    const runner = this.runner!;
    const base = this.baseQuery!;
    const direct = Object.create(runner) as QueryRunner;
    direct.query = ((sql: string, parameters?: unknown[], structured?: boolean) => base.call(runner, sql, parameters, structured)) as QueryRunner['query'];
    // As DataSource.createQueryRunner() gives a runner its manager.
    Object.assign(direct, { manager: this.dataSource.createEntityManager(direct) });
    return direct.manager;
  }

  /**
   * BEGIN, COMMIT or ROLLBACK, straight on the connection when the driver allows (PostgreSQL, MySQL), else
   * through the runner. Logged like any statement; a failure is a QueryFailedError, as from the runner.
   */
  private control(sql: string): Promise<unknown> {
    const runner = this.runner!;
    const connection = (runner as unknown as { databaseConnection?: unknown }).databaseConnection;
    const sent = runner.isReleased ? undefined : this.driver.sendControl(connection, sql);
    if (sent === undefined) return this.baseQuery!.call(runner, sql);
    const logger = this.dataSource.logger;
    logger.logQuery(sql, undefined, runner);
    return sent.catch((err: Error) => {
      logger.logQueryError(err, sql, undefined, runner);
      throw new QueryFailedError(sql, undefined, err);
    });
  }

  /**
   * Runs `fn` inside a savepoint on this transaction's connection. Nested scopes started from the same
   * frame run one after another: TypeORM's savepoint depth counter is shared per runner (typeorm #10209),
   * so this keeps its own numbering and never runs two savepoints at once.
   */
  async savepoint<T>(fn: () => Promise<T>): Promise<T> {
    const name = `tsess_sp_${++this.savepoints}`;
    const sql = savepointStatements(name);
    await this.guardedQuery(sql.create);
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      try {
        await this.guardedQuery(sql.rollback);
        await this.guardedQuery(sql.release);
      } catch (rollbackError) {
        debug('rolling back savepoint failed: %O', rollbackError);
      }
      throw err;
    }
    await this.guardedQuery(sql.release);
    return result;
  }

  /**
   * Ends the unit of work once: fences new queries, lets queries already sent finish, then commits (when
   * `commit` is true) or rolls back, and always releases the connection. Rejects with CommitError when the
   * commit fails (the transaction is then rolled back).
   */
  finish(commit: boolean): Promise<Outcome> {
    return (this.ending ??= this.end(commit));
  }

  /** Ends synchronously when nothing was ever sent; false when finish() must be awaited. */
  finishIfUnused(): boolean {
    if (this.state !== 'idle') return this.state === 'done';
    this.state = 'done';
    this.ending = Promise.resolve('none');
    if (this.runner) void this.runner.release();
    return true;
  }

  private async end(commit: boolean): Promise<Outcome> {
    const wasOpen = this.state === 'open';
    this.state = 'closing';
    const runner = this.runner;
    try {
      if (!runner || !wasOpen) return 'none';
      if (this.pending > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      const began = await this.begun!.then(
        () => true,
        () => false,
      );
      if (!began) {
        // BEGIN went through and what followed it (onBegin) failed: the transaction is open on the connection.
        if (!this.beginSent) return 'none';
        await this.rollback();
        return 'rolled back';
      }
      if (commit) {
        try {
          await traced(transactionChannel, () => this.trace('commit'), () => this.control('COMMIT'), (c) => (c.outcome = 'committed'));
          return 'committed';
        } catch (err) {
          const cause = this.realCause(err);
          if (this.connectionError !== undefined || isConnectionLost(cause)) {
            // Nothing can be rolled back on a connection that is gone, and the server may have committed
            // just before it went: say so rather than claim a rollback.
            this.brokenBy = cause;
            throw new CommitError(
              'typeorm-session: the connection was lost while COMMIT was under way; the transaction may or may not have committed',
              { cause, outcomeUnknown: true },
            );
          }
          await this.rollback();
          throw new CommitError('typeorm-session: committing the request transaction failed; it was rolled back', {
            cause,
            retryable: this.driver.isRetryable(cause),
          });
        }
      }
      await this.rollback();
      return 'rolled back';
    } finally {
      if (runner) await this.release(runner);
      this.state = 'done';
    }
  }

  private async rollback(): Promise<void> {
    try {
      await traced(transactionChannel, () => this.trace('rollback'), () => this.control('ROLLBACK'), (c) => (c.outcome = 'rolled back'));
    } catch (err) {
      // The connection may still be inside the transaction: it must not go back to the pool as it is.
      this.brokenBy = this.realCause(err);
      debug('rollback failed, the connection will be discarded: %O', this.brokenBy);
    }
  }

  private realCause(err: unknown): unknown {
    // The connection failed (the server ended it): every later statement fails because of that, with
    // messages that hide it ("query runner already released", pg's "not queryable", mysql2's "connection is
    // in closed state"). The error event said why; it may have come before this request took the connection.
    const died =
      this.connectionError ?? errorHeardOn((this.runner as unknown as { databaseConnection?: unknown } | undefined)?.databaseConnection);
    if (died === undefined) return err;
    return isSymptomOfDeath(err) ? died : err;
  }

  private async release(runner: QueryRunner): Promise<void> {
    const internal = runner as unknown as { transactionDepth: number; isTransactionActive: boolean };
    internal.isTransactionActive = false;
    internal.transactionDepth = 0;
    this.detach?.();
    try {
      if (this.connected) await this.driver.giveBack(runner, this.dataSource, this.brokenBy);
      else await this.driver.releaseUnused(runner);
    } catch (err) {
      debug('release failed: %O', err);
    }
  }

  /** The original error behind a failed query, when the runner only reports that it was released. */
  causeOf(err: unknown): unknown {
    return this.realCause(err);
  }
}

// Installed on each request's runner and manager as shared functions (not closures): they find their unit
// of work through the runner.
function guardedRunnerQuery(this: OwnedRunner, sql: string, parameters?: unknown[], structured?: boolean) {
  return this[OWNER].guardedQuery(sql, parameters, structured);
}

function fencedManagerQuery(this: OwnedManager, ...args: unknown[]) {
  const refusal = this.queryRunner[OWNER].refusal(String(args[0]));
  if (refusal) return Promise.reject(refusal);
  return (Object.getPrototypeOf(this) as { query: Function }).query.apply(this, args);
}

function fencedManagerTransaction(this: OwnedManager, ...args: unknown[]) {
  const refusal = this.queryRunner[OWNER].refusal('transaction()');
  if (refusal) return Promise.reject(refusal);
  return (Object.getPrototypeOf(this) as { transaction: Function }).transaction.apply(this, args);
}

function savepointStatements(name: string) {
  return {
    create: `SAVEPOINT ${name}`,
    release: `RELEASE SAVEPOINT ${name}`,
    rollback: `ROLLBACK TO SAVEPOINT ${name}`,
  };
}
