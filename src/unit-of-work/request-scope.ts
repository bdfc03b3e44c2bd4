import type { DataSource } from 'typeorm';
import type { DialectName, IsolationLevel } from '../store/sql.js';
import { currentFrame, runInFrame, type ScopeFrame } from './context.js';
import { UnitOfWork } from './unit-of-work.js';
import { NoRequestScopeError } from '../errors.js';
import type { EntityManager } from 'typeorm';

export interface RequestScopeOptions {
  dataSource: DataSource;
  dialect: DialectName;
  isolationLevel: IsolationLevel | undefined;
  acquireTimeoutMs: number;
  /** Whether the response's status means commit. */
  commitOn: (status: number) => boolean;
}

/**
 * Everything one request's unit of work knows, shared by the framework glue and the session store: the
 * transaction, and what happened to the session writes made inside it.
 */
export class RequestScope {
  readonly unitOfWork: UnitOfWork;
  readonly root: ScopeFrame;
  /** The response is being finished: session writes arriving now are the request's last ones. */
  ending = false;
  /** A session write failed; the response must not claim success. */
  sessionFailure: unknown;
  /** A session write was skipped or rolled back: the client must keep its previous cookie. */
  sessionDiscarded = false;
  /** A session write ran inside the transaction, so it shares the transaction's fate. */
  sessionJoined = false;
  /**
   * Session ids express-session generated in this request and nobody has saved yet: no row can exist for
   * them, so destroying one (regenerate() at login destroys the fresh id first) needs no round trip.
   */
  readonly unsavedIds = new Set<string>();

  constructor(
    options: RequestScopeOptions,
    /** Reads the status the response will have; set by the framework glue. */
    readonly status: () => number,
    private readonly commitOn: (status: number) => boolean = options.commitOn,
  ) {
    this.unitOfWork = new UnitOfWork(options.dataSource, options.dialect, {
      isolationLevel: options.isolationLevel,
      acquireTimeoutMs: options.acquireTimeoutMs,
    });
    this.root = { scope: this, queue: Promise.resolve() };
  }

  /** The request failed whatever its status will say: it threw, or the client went away before the end. */
  failed = false;

  /** What the request will do with its transaction, as things stand now. */
  willCommit(): boolean {
    return !this.failed && this.sessionFailure === undefined && this.commitOn(this.status());
  }

  run<T>(fn: () => T): T {
    return runInFrame(this.root, fn);
  }

  /** Commits now (before streaming a response); later queries are rejected. */
  async commit(): Promise<void> {
    await this.unitOfWork.finish(this.willCommit());
  }
}

/**
 * Gives the objects of a framework's requests (Express's app.request, Koa's app.context) `db` and `commit`
 * once, as accessors reading the request's scope. Defining them on each request object instead would push
 * every request into V8's slow dictionary mode.
 */
const equipped = new WeakSet<object>();
export function equipPrototype(proto: object, scopeOf: (self: any) => RequestScope | undefined): void {
  if (equipped.has(proto)) return;
  equipped.add(proto);
  Object.defineProperty(proto, 'db', {
    configurable: true,
    enumerable: false,
    get(this: unknown) {
      return scopeOf(this)?.unitOfWork.manager;
    },
  });
  Object.defineProperty(proto, 'commit', {
    configurable: true,
    enumerable: false,
    writable: true,
    value(this: unknown) {
      const scope = scopeOf(this);
      return scope ? scope.commit() : Promise.reject(new NoRequestScopeError('typeorm-session: commit() outside a request scope'));
    },
  });
}

/** The scope a store call belongs to: from the session's request when there is one, else the async context. */
export function scopeOf(session?: unknown): RequestScope | undefined {
  const req = (session as { req?: Record<symbol, unknown> } | null | undefined)?.req;
  const fromRequest = req?.[SCOPE] as RequestScope | undefined;
  return fromRequest ?? currentFrame()?.scope;
}

export const SCOPE = Symbol('typeorm-session.scope');

/**
 * Runs `fn` in a savepoint of the current request's transaction, on the request's own connection. Calls
 * started side by side (Promise.all) inside one scope run one after the other; a call made inside `fn`
 * nests further. Throws NoRequestScopeError outside a request.
 */
export async function withTransaction<T>(fn: (manager: EntityManager) => Promise<T> | T): Promise<T> {
  const parent = currentFrame();
  if (!parent) {
    throw new NoRequestScopeError('typeorm-session: withTransaction() was called outside a request scope');
  }
  const { unitOfWork } = parent.scope;
  const previous = parent.queue;
  let done!: () => void;
  parent.queue = new Promise<void>((resolve) => (done = resolve));
  try {
    await previous;
    const child: ScopeFrame = { scope: parent.scope, queue: Promise.resolve() };
    return await unitOfWork.savepoint(() => runInFrame(child, async () => fn(unitOfWork.manager)));
  } finally {
    done();
  }
}
