import type { DataSource, EntityManager } from 'typeorm';
import createDebug from 'debug';
import { driverDialect, type DialectName, type DriverDialect, type IsolationLevel } from '../dialects/index.js';
import type { ResolvedTransactionOptions } from '../transaction-options.js';
import type { StatementSite } from '../store/statement-site.js';
import type { QueryOutcome } from '../dialects/index.js';
import { currentFrame, runInFrame, type ScopeFrame } from './context.js';
import { UnitOfWork, type Outcome } from './unit-of-work.js';
import { NoRequestScopeError, SessionSaveError, type TypeormSessionError } from '../errors.js';
import { DROP_COOKIE, failureStatus, KEEP_COOKIE, type Verdict } from './verdict.js';
import { OutcomeHooks, type OutcomeHook } from './outcome-hooks.js';
import { isIsolationLevel, isolationLevelError } from '../transaction-options.js';

const debug = createDebug('typeorm-session:request');

export interface RequestScopeOptions {
  dataSource: DataSource;
  dialect: DriverDialect;
  /** False when the middleware runs with `transaction: false`: sessions only, no unit of work. */
  transactional: boolean;
  isolationLevel: ResolvedTransactionOptions['isolationLevel'];
  onBegin: ResolvedTransactionOptions['onBegin'];
  acquireTimeoutMs: number;
  /** Which requests run their transaction READ ONLY on a replica (`transaction.readOnly`). */
  readOnly: ((request: unknown) => boolean) | undefined;
  /** Whether the response's status means commit. */
  commitOn: (status: number) => boolean;
  /** Hears failures that the response can no longer carry (the user's onError). */
  report: (error: TypeormSessionError) => void;
}

/**
 * The options an adapter's requests share, from its store and its resolved `transaction` option (undefined:
 * `transaction: false`, sessions only; the session's writes are then kept whatever the status).
 */
export function requestScopeOptions(
  store: { readonly dataSource: DataSource; readonly dialect: DialectName },
  transaction: ResolvedTransactionOptions | undefined,
  report: (error: TypeormSessionError) => void,
): RequestScopeOptions {
  return {
    dataSource: store.dataSource,
    dialect: driverDialect(store.dialect),
    transactional: transaction !== undefined,
    isolationLevel: transaction?.isolationLevel,
    onBegin: transaction?.onBegin,
    acquireTimeoutMs: transaction?.acquireTimeoutMs ?? Infinity,
    readOnly: transaction?.readOnly,
    commitOn: transaction?.commitOn ?? alwaysCommit,
    report,
  };
}

const alwaysCommit = () => true;

/**
 * Everything one request's unit of work knows, shared by the framework glue and the session store: the
 * transaction (made on first use), and what happened to the session writes made inside it. One per request,
 * so it holds no closures: the options object is the app's, shared by all its requests.
 */
export class RequestScope implements ScopeFrame, StatementSite {
  /** The response is being finished: session writes arriving now are the request's last ones. */
  ending = false;
  /** A session write failed; the response must not claim success. */
  sessionFailure: unknown = undefined;
  /** A session write was skipped or rolled back: the client must keep its previous cookie. */
  sessionDiscarded = false;
  /** A session write ran inside the transaction, so it shares the transaction's fate. */
  sessionJoined = false;
  /** The request failed whatever its status will say: it threw, or the client went away before the end. */
  failed = false;
  /** rollbackOnly() was called: roll back, and keep no session change, whatever the status. */
  rollbackOnly = false;
  /** What the app's per-request functions receive: Express's req, Koa's ctx, Fastify's request. */
  subject: unknown;
  /** afterCommit()/afterRollback() hooks, made on first registration. */
  private hooks: OutcomeHooks | undefined = undefined;
  private work: UnitOfWork | undefined = undefined;
  /** The request ended without a transaction: one asked for later is born closed. */
  private workOver = false;
  private unsaved: Set<string> | undefined = undefined;
  /** As the request's root frame (the scope is its own frame, one object fewer per request). */
  queue: Promise<void> | undefined = undefined;

  constructor(
    readonly options: RequestScopeOptions,
    /** The request object (Express's req, Koa's ctx.req). */
    readonly req: object,
    /** Its response object. */
    readonly res: object,
    /** Reads the status the response will have; Koa passes one, Express overrides status(). */
    private readonly statusOf?: () => number,
  ) {
    this.subject = req;
  }

  /** The frame the request's code runs in (nested scopes get frames of their own). */
  get root(): ScopeFrame {
    return this;
  }

  get scope(): RequestScope {
    return this;
  }

  /** Whether the response has been sent (the adapters know; by default: once the scope is ending). */
  answered(): boolean {
    return this.ending;
  }

  /** The status the response will have. */
  status(): number {
    return this.statusOf ? this.statusOf() : 200;
  }

  /** The request's transaction, made (not begun: no connection is taken) on first call. */
  get unitOfWork(): UnitOfWork {
    if (this.work) return this.work;
    const o = this.options;
    const readOnly = this.readOnly();
    this.work = new UnitOfWork(o.dataSource, o.dialect, { acquireTimeoutMs: o.acquireTimeoutMs, readOnly }, this);
    if (this.workOver) this.work.finishIfUnused();
    return this.work;
  }

  /**
   * Whether this request's transaction runs READ ONLY on a replica: asked once, when the transaction is made
   * (so the app's router has matched by then). Only a DataSource with `replication` has replicas. Without
   * one the transaction stays the ordinary one on the primary: a read-only transaction there would hold a
   * connection of the very pool its session writes, which cannot join it, must wait for.
   */
  private readOnly(): boolean {
    const decide = this.options.readOnly;
    if (decide === undefined || !this.options.dataSource.driver.isReplicated) return false;
    const answer: unknown = decide(this.subject);
    if (typeof answer !== 'boolean') {
      throw new TypeError(`typeorm-session: option "transaction.readOnly" must return a boolean, got ${typeof answer}`);
    }
    return answer;
  }

  /**
   * True while nothing has happened that the end of the request must settle: no transaction asked for, no
   * session write failed. Marks the unit of work as over, so a later `req.db` finds it closed.
   */
  closeIfIdle(): boolean {
    if (this.work !== undefined || this.sessionFailure !== undefined) return false;
    this.workOver = true;
    return true;
  }

  /** Called by the unit of work when its transaction begins (its first statement); adapters hook in here. */
  transactionBegan(): void {}

  /**
   * The isolation level to BEGIN with: `transaction.isolationLevel` (or what its function answers for this
   * request), else the DataSource's own `isolationLevel` (TypeORM 1.x), else the database's default.
   */
  isolationLevel(): IsolationLevel | undefined {
    const chosen = this.options.isolationLevel;
    const level = typeof chosen === 'function' ? chosen(this.subject) : chosen;
    if (level !== undefined && !isIsolationLevel(level)) throw isolationLevelError(level);
    if (level !== undefined) return level;
    const fromDataSource = (this.options.dataSource.options as { isolationLevel?: unknown }).isolationLevel;
    return isIsolationLevel(fromDataSource) ? fromDataSource : undefined;
  }

  /** `transaction.onBegin`, on the transaction just begun; undefined when there is none. */
  afterBegin(manager: () => EntityManager): unknown {
    const onBegin = this.options.onBegin;
    return onBegin === undefined ? undefined : onBegin(manager(), this.subject);
  }

  /** Registers a hook run once the request's transaction has ended that way (see outcome-hooks.ts). */
  addOutcomeHook(on: 'commit' | 'rollback', hook: OutcomeHook): void {
    (this.hooks ??= new OutcomeHooks()).add(on, hook);
  }

  /**
   * True when a statement of the store can join this request's open transaction on `dataSource`. Never a
   * read-only one: it is on a replica, where a session read could miss a login the primary has (replication
   * lag) and a session write is refused; the store's own statements go to the primary instead.
   */
  joins(dataSource: DataSource): boolean {
    const work = this.work;
    return work !== undefined && work.isOpen && work.dataSource === dataSource && !work.readOnly;
  }

  /**
   * Where a store statement of this request runs: in the open transaction (the session then shares its
   * fate), nowhere (a session write at the end of a request that rolls back), or on the store's own pool.
   */
  routeOf(dataSource: DataSource, write: boolean): 'join' | 'skip' | 'own' {
    if (this.joins(dataSource)) {
      this.sessionJoined = true;
      return 'join';
    }
    if (write && this.ending && !this.keepSessionWrite()) return 'skip';
    return 'own';
  }

  runJoined(sql: string, parameters: unknown[]): Promise<QueryOutcome> {
    return this.unitOfWork.query(sql, parameters);
  }

  writeFailed(error: unknown): void {
    this.sessionFailure ??= error;
  }

  /** The original error behind a failed statement of this request. */
  causeOf(err: unknown): unknown {
    return this.work ? this.work.causeOf(err) : err;
  }

  /**
   * Ends the unit of work: undefined when it was never used (nothing to wait for; later use finds it closed),
   * else the promise of its outcome.
   */
  finishUnitOfWork(commit: boolean): Promise<Outcome> | undefined {
    const work = this.work;
    if (work === undefined || work.finishIfUnused()) {
      this.workOver = true;
      // Nothing was sent: nothing to wait for, and the hooks follow the decision.
      this.hooks?.settle(commit ? 'committed' : 'rolled back', this.options.report);
      return undefined;
    }
    const finishing = work.finish(commit);
    if (this.hooks !== undefined) {
      const hooks = this.hooks;
      const report = this.options.report;
      finishing.then(
        (outcome) => hooks.settle(outcome === 'none' ? (commit ? 'committed' : 'rolled back') : outcome, report),
        // A COMMIT whose connection died may or may not have committed: neither kind of hook may run.
        (error: { outcomeUnknown?: boolean }) => hooks.settle(error?.outcomeUnknown ? 'unknown' : 'rolled back', report),
      );
    }
    return finishing;
  }

  /** What the request will do with its transaction, as things stand now. */
  willCommit(): boolean {
    return !this.failed && !this.rollbackOnly && this.sessionFailure === undefined && this.options.commitOn(this.status());
  }

  /**
   * Session ids made in this request that nobody has saved yet: no row can exist for them, so destroying one
   * (regenerate() at login destroys the fresh id first) needs no round trip.
   */
  noteUnsaved(id: string): void {
    (this.unsaved ??= new Set()).add(id);
  }

  isUnsaved(id: string): boolean {
    return this.unsaved !== undefined && this.unsaved.has(id);
  }

  noteSaved(id: string): void {
    this.unsaved?.delete(id);
  }

  run<T>(fn: () => T): T {
    return runInFrame(this.root, fn);
  }

  // ---- the end of the request: every decision about COMMIT, ROLLBACK, the session write and the cookie ----

  /**
   * Ends the unit of work as the request stands and says what the response must be. `streaming`: bytes are
   * about to leave before the session's last write, which then can no longer change the answer.
   */
  settle(streaming: boolean): Verdict | Promise<Verdict> {
    if (!this.options.transactional) return this.verdict(true, 'none', streaming);
    const commit = this.willCommit();
    const finishing = this.finishUnitOfWork(commit);
    if (finishing === undefined) return this.verdict(commit, 'none', streaming);
    return finishing.then(
      (outcome) => this.verdict(commit, outcome, streaming),
      (error: TypeormSessionError) => {
        this.options.report(error);
        // A commit that lost to a concurrent transaction kept nothing: the client may send it again (503).
        return { ok: false as const, status: failureStatus(error) };
      },
    );
  }

  /** The request threw (or its framework reported an error): roll back, and say whether to drop the cookie. */
  async settleAfterFailure(): Promise<Verdict> {
    this.failed = true;
    await this.finishUnitOfWork(false)?.catch((error: TypeormSessionError) => this.options.report(error));
    return this.sessionDiscarded || this.sessionJoined ? DROP_COOKIE : KEEP_COOKIE;
  }

  /**
   * The client went away before the response was complete: roll back at once, which also fences the
   * handler's remaining queries (Node keeps running a handler after an abort). Nothing of the request may
   * persist, the session it may still save on its way out included.
   */
  clientGone(): void {
    this.failed = true;
    this.finishUnitOfWork(false)?.catch((error: TypeormSessionError) => this.options.report(error));
  }

  /**
   * Whether a session write at the end of the request is kept: not when the request rolls back (the client
   * keeps its cookie). Without a unit of work (`transaction: false`) nothing rolls back, and the session is
   * saved as express-session and koa-session save it, whatever the request's fate.
   */
  keepSessionWrite(): boolean {
    if (!this.options.transactional || this.willCommit()) return true;
    this.sessionDiscarded = true;
    debug('session write skipped: the request is rolling back');
    return false;
  }

  /**
   * The verdict once the transaction has ended: a failed session write answers 500 (409 for a conflict)
   * unless bytes have left; a session change that was rolled back or skipped drops the cookie.
   */
  private verdict(committed: boolean, outcome: Outcome | 'none', streaming: boolean): Verdict {
    const failure = this.sessionFailure;
    if (failure !== undefined && !streaming) {
      this.options.report(new SessionSaveError('typeorm-session: the session could not be saved; answered 500', { cause: failure }));
      return { ok: false, status: failureStatus(failure) };
    }
    return this.shouldDropCookie(committed, outcome) ? DROP_COOKIE : KEEP_COOKIE;
  }

  /** The session cookie must not leave when it names a session change that was not kept. */
  private shouldDropCookie(committed: boolean, outcome: Outcome | 'none'): boolean {
    return this.sessionDiscarded || (!committed && outcome === 'rolled back' && this.sessionJoined);
  }

  /** Commits now (before streaming a response); later queries are rejected. */
  async commit(): Promise<void> {
    await this.finishUnitOfWork(this.willCommit());
  }
}

/**
 * Gives the objects of a framework's requests (Express's request, Koa's app.context) `db` and `commit` once,
 * as accessors reading the request's scope. Defining them on each request object instead would cost an
 * allocation and a shape change per request.
 */
const equipped = new WeakSet<object>();
export function equipPrototype(proto: object, scopeOf: (self: any) => RequestScope | undefined): void {
  if (equipped.has(proto)) return;
  equipped.add(proto);
  Object.defineProperty(proto, 'db', {
    configurable: true,
    enumerable: false,
    get(this: unknown) {
      const scope = scopeOf(this);
      return scope !== undefined && scope.options.transactional ? scope.unitOfWork.manager : undefined;
    },
  });
  Object.defineProperty(proto, 'commit', {
    configurable: true,
    enumerable: false,
    writable: true,
    value(this: unknown) {
      const scope = scopeOf(this);
      return scope?.options.transactional
        ? scope.commit()
        : Promise.reject(new NoRequestScopeError('typeorm-session: commit() outside a request scope'));
    },
  });
}

/**
 * Finding a request's scope from the request object. Not a property of the request: Express gives every
 * request a new prototype and then adds properties to it, so each request ends up with a hidden class of its
 * own; V8 then adds any further property on its slowest path (about 4 µs here), and a WeakMap keyed by
 * short-lived requests costs as much again in garbage collection. The request's socket lives as long as its
 * connection and keeps one shape, so it carries the scopes of its latest two requests (two: a late use of
 * `req` while the next request on a keep-alive connection is served still finds its own). Anything else
 * (no socket, a pipelined request still running when pushed out) goes to a WeakMap.
 */
const SLOTS = Symbol('typeorm-session.requests');

/**
 * What a socket carries for the registry. One object of a fixed shape behind one symbol: each symbol added
 * to a socket gives it another hidden class, and a read site that has seen several becomes a slow
 * (megamorphic) one, while this object's fields are read at a fixed offset.
 */
export class SocketSlots {
  latest: RequestScope | undefined = undefined;
  before: RequestScope | undefined = undefined;
  /** A request whose `req.session` another session middleware set (prototypes.ts). */
  foreignSession: object | undefined = undefined;
}

export type RequestSocket = { [SLOTS]?: SocketSlots };
const elsewhere = new WeakMap<object, RequestScope>();
// Until something goes to the WeakMap, a request not on its socket has no scope: a WeakMap lookup of a new
// request (every request, for the middleware's mounted-twice check) costs more than the socket's slots.
let elsewhereUsed = false;

/** The socket a request arrived on, as the registry uses it (undefined without one). */
export function socketOf(req: object): RequestSocket | undefined {
  const socket = (req as { socket?: RequestSocket | null }).socket;
  return typeof socket === 'object' && socket !== null ? socket : undefined;
}

/** The registry's slots on a socket, made on first use. */
export function slotsOf(socket: RequestSocket): SocketSlots {
  return (socket[SLOTS] ??= new SocketSlots());
}

export function attachScope(req: object, scope: RequestScope, socket: RequestSocket | undefined = socketOf(req)): void {
  if (socket === undefined) {
    elsewhereUsed = true;
    elsewhere.set(req, scope);
    return;
  }
  const slots = slotsOf(socket);
  const pushedOut = slots.before;
  if (pushedOut !== undefined && !pushedOut.answered()) {
    elsewhereUsed = true;
    elsewhere.set(pushedOut.req, pushedOut);
  }
  slots.before = slots.latest;
  slots.latest = scope;
}

/** The scope of a request (Express's req, Koa's ctx.req), if a middleware of ours is serving it. */
export function requestScope(req: unknown, socket?: RequestSocket): RequestScope | undefined {
  if (typeof req !== 'object' || req === null) return undefined;
  const slots = (socket ?? socketOf(req))?.[SLOTS];
  if (slots !== undefined) {
    const latest = slots.latest;
    if (latest !== undefined && latest.req === req) return latest;
    const before = slots.before;
    if (before !== undefined && before.req === req) return before;
  }
  return elsewhereUsed ? elsewhere.get(req) : undefined;
}

/**
 * The scope serving a response, found through the response's socket (one property read on the response;
 * each read on Express's per-request hidden classes is a slow lookup). A response waiting behind a pipelined
 * one has no socket yet: then through its request.
 */
export function responseScope(res: { socket?: unknown; req?: unknown }): RequestScope | undefined {
  const socket = res.socket as RequestSocket | null | undefined;
  const slots = typeof socket === 'object' && socket !== null ? socket[SLOTS] : undefined;
  if (slots !== undefined) {
    const latest = slots.latest;
    if (latest !== undefined && latest.res === res) return latest;
    const before = slots.before;
    if (before !== undefined && before.res === res) return before;
  }
  return requestScope(res.req);
}

/** A frame of this module's making: every frame in the async context is a RequestScope's or a child of one. */
type RequestFrame = ScopeFrame & { readonly scope: RequestScope };
export const requestFrame = () => currentFrame() as RequestFrame | undefined;

/** The scope a store call belongs to: the request's when the call names one, else the async context's. */
export function scopeOf(req: unknown): RequestScope | undefined {
  return (req === undefined ? undefined : requestScope(req)) ?? requestFrame()?.scope;
}

/**
 * Runs `fn` in a savepoint of the current request's transaction, on the request's own connection. Calls
 * started side by side (Promise.all) inside one scope run one after the other; a call made inside `fn`
 * nests further. Throws NoRequestScopeError outside a request.
 */
export async function withTransaction<T>(fn: (manager: EntityManager) => Promise<T> | T): Promise<T> {
  const parent = requestFrame();
  if (!parent || !parent.scope.options.transactional) {
    throw new NoRequestScopeError('typeorm-session: withTransaction() was called outside a request scope');
  }
  const { unitOfWork } = parent.scope;
  const previous = parent.queue;
  let done!: () => void;
  parent.queue = new Promise<void>((resolve) => (done = resolve));
  try {
    await previous;
    const child: RequestFrame = { scope: parent.scope, queue: undefined };
    return await unitOfWork.savepoint(() => runInFrame(child, async () => fn(unitOfWork.manager)));
  } finally {
    done();
  }
}
