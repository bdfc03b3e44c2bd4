import { IncomingMessage, type ServerResponse } from 'node:http';
import expressSession, { type SessionOptions } from 'express-session';
import type { EntityManager } from 'typeorm';
import createDebug from 'debug';
import { MiddlewareOrderError, SessionSaveError, type TypeormSessionError } from '../errors.js';
import { rejectUnknown, storeOptionNames, type StoreOptions } from '../options.js';
import { TypeormSessionStore } from '../store/store.js';
import { resolveTransactionOptions, type TransactionOptions } from '../transaction-options.js';
import { bindEmitter } from '../unit-of-work/context.js';
import { equipPrototype, RequestScope, SCOPE } from '../unit-of-work/request-scope.js';
import { forwardAsyncErrors } from './async-errors.js';
import { CONTROL, type SessionControl } from './helpers.js';
import { reporter, rollBackOnClientAbort } from '../unit-of-work/glue.js';
import { ResponseGate, type Verdict } from './response-gate.js';

const debug = createDebug('typeorm-session:express');

/** express-session's own options that pass straight through (`store` is ours). */
const sessionOptionNames = ['cookie', 'genid', 'name', 'proxy', 'resave', 'rolling', 'saveUninitialized', 'secret', 'unset'] as const;

export interface SessionStoreOptions
  extends StoreOptions,
    Pick<SessionOptions, 'cookie' | 'genid' | 'name' | 'proxy' | 'resave' | 'rolling' | 'saveUninitialized' | 'unset'> {
  /** Secret(s) signing the session cookie, as in express-session. Required. */
  secret: string | string[];
  /** The request's transaction; `false` turns it off (req.db is then absent). */
  transaction?: TransactionOptions | false;
}

export type SessionStoreMiddleware = ((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void) & {
  /** The session store, for listing, revoking, pruning. */
  readonly store: TypeormSessionStore;
  /** Stops the store's background work. */
  close(): Promise<void>;
};

type Request = IncomingMessage & {
  session?: unknown;
  sessionStore?: unknown;
  db?: EntityManager;
  commit?: () => Promise<void>;
  [SCOPE]?: RequestScope;
};

/**
 * One Express middleware giving each request its session (express-session with the TypeORM store) and its
 * unit of work (`req.db`). See README, "The request's transaction".
 */
export function sessionStore(options: SessionStoreOptions): SessionStoreMiddleware {
  if (!options || typeof options !== 'object') throw new TypeError('typeorm-session: sessionStore(options) needs an options object');
  rejectUnknown(options, [...storeOptionNames, ...sessionOptionNames, 'transaction'], 'sessionStore');
  const { secret } = options;
  const validSecret = typeof secret === 'string' ? secret.length > 0 : Array.isArray(secret) && secret.length > 0 && secret.every((s) => typeof s === 'string' && s);
  if (!validSecret) throw new TypeError('typeorm-session: option "secret" must be a non-empty string or array of strings');
  const transaction = resolveTransactionOptions(options.transaction);

  const storeOptions: Record<string, unknown> = {};
  for (const name of storeOptionNames) if (options[name] !== undefined) storeOptions[name] = options[name];
  const store = new TypeormSessionStore(storeOptions as unknown as StoreOptions);

  const sessionOptions: Record<string, unknown> = { resave: false, saveUninitialized: false };
  for (const name of sessionOptionNames) if (options[name] !== undefined) sessionOptions[name] = options[name];
  const session = expressSession({ ...(sessionOptions as unknown as SessionOptions), store });
  // express-session installs its id generator on the store; note each id it makes inside a request scope,
  // so the store knows no row exists for it yet (see RequestScope.unsavedIds).
  const generate = (store as unknown as { generate: (req: Request) => void }).generate;
  (store as unknown as { generate: (req: Request) => void }).generate = (req: Request) => {
    generate(req);
    const id = (req as { sessionID?: string }).sessionID;
    if (id) req[SCOPE]?.unsavedIds.add(id);
  };
  const report = reporter(options.onError, debug);

  const control: SessionControl = { store, cookieName: options.name ?? 'connect.sid' };

  const middleware = function typeormSession(req: Request, res: ServerResponse, next: (err?: unknown) => void) {
    if (req[SCOPE] || req.sessionStore === store) {
      next(new MiddlewareOrderError('typeorm-session: the sessionStore middleware is mounted twice on this path'));
      return;
    }
    if (req.session !== undefined) {
      next(
        new MiddlewareOrderError(
          'typeorm-session: req.session was already set by another session middleware mounted before sessionStore(); ' +
            'remove it (sessionStore() includes express-session)',
        ),
      );
      return;
    }
    if (!store.isReady) {
      // The table check and creation run before the request's transaction can exist: on SQLite they would
      // otherwise wait for the single connection that transaction holds.
      store.ready().then(() => middleware(req, res, next), next);
      return;
    }
    (req as { [CONTROL]?: SessionControl })[CONTROL] = control;
    if (!transaction) {
      session(req as any, res as any, next);
      return;
    }
    forwardAsyncErrors(req as any);

    const scope = new RequestScope(
      { dataSource: store.dataSource, dialect: store.dialect, ...transaction },
      () => res.statusCode,
    );
    req[SCOPE] = scope;
    const unitOfWork = scope.unitOfWork;
    equipPrototype(expressRequestBase(req), (self: Request) => self[SCOPE]);

    const settle = (streaming: boolean): Verdict | Promise<Verdict> => {
      const commit = scope.willCommit();
      if (unitOfWork.finishIfUnused()) return verdictAfter(commit, 'none');
      return unitOfWork.finish(commit).then(
        (outcome) => verdictAfter(commit, outcome),
        (error: TypeormSessionError) => {
          report(error);
          // A commit that lost to a concurrent transaction kept nothing: the client may send it again.
          return { ok: false as const, status: (error as { status?: number }).status === 503 ? 503 : 500 };
        },
      );
      function verdictAfter(committed: boolean, outcome: string): Verdict {
        if (scope.sessionFailure !== undefined && !streaming) {
          report(
            new SessionSaveError('typeorm-session: the session could not be saved; answered 500', {
              cause: scope.sessionFailure,
            }),
          );
          // A conflict says 409; anything else is the server's failure.
          const status = (scope.sessionFailure as { status?: unknown }).status;
          return { ok: false, status: typeof status === 'number' ? status : 500 };
        }
        const rolledBack = !committed && outcome === 'rolled back';
        return { ok: true, dropCookie: scope.sessionDiscarded || (rolledBack && scope.sessionJoined) };
      }
    };
    const gate = new ResponseGate(res, settle, () => scope.sessionFailure);

    rollBackOnClientAbort(res, scope, () => gate.isOpen, debug);

    bindEmitter(req, scope.root);
    let continued = false;
    scope.run(() =>
      session(req as any, res as any, (err?: unknown) => {
        if (!continued) {
          continued = true;
          wrapEnd();
        }
        if (err && scope.ending) {
          // express-session reports a failed save after the response began; the gate answers it.
          debug('session error after the response began: %O', err);
          return;
        }
        next(err);
      }),
    );

    // Above express-session's own end wrapper: marks that what follows is the end of the response, so the
    // session save happens before the gate decides.
    function wrapEnd() {
      const sessionEnd = res.end;
      res.end = function (this: ServerResponse, ...args: unknown[]) {
        scope.ending = true;
        gate.ending = true;
        if (req.sessionStore !== store) {
          scope.sessionFailure ??= new MiddlewareOrderError(
            'typeorm-session: another session middleware replaced req.session after sessionStore(); remove it',
          );
        }
        return sessionEnd.apply(this, args as Parameters<ServerResponse['end']>);
      } as ServerResponse['end'];
    }
  } as SessionStoreMiddleware;

  Object.defineProperty(middleware, 'store', { value: store, enumerable: true });
  Object.defineProperty(middleware, 'close', { value: () => store.close() });
  return middleware;
}

/**
 * Express's own request object, below each app's `app.request`: sub-apps give a request another
 * `app.request`, but all of them inherit from this one. Never http.IncomingMessage.prototype itself.
 */
function expressRequestBase(req: IncomingMessage): object {
  const appRequest = Object.getPrototypeOf(req) as object;
  const base = Object.getPrototypeOf(appRequest) as object | null;
  return base && base !== IncomingMessage.prototype ? base : appRequest;
}
