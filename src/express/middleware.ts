import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SessionOptions } from 'express-session';
import type { Request } from 'express';
import createDebug from 'debug';
import { MiddlewareOrderError } from '../errors.js';
import { rejectUnknown, storeOptionNames, type StoreOptions } from '../options.js';
import { TypeormSessionStore } from '../store/store.js';
import { resolveTransactionOptions, type TransactionOptions } from '../transaction-options.js';
import { attachScope, requestScope, socketOf, requestScopeOptions, scopeOf } from '../unit-of-work/request-scope.js';
import { reporter } from '../reporter.js';
import { forwardAsyncErrors } from './async-errors.js';
import { equip, hasForeignSession } from './prototypes.js';
import { ExpressRequestState, type SessionConfig } from './request-state.js';
import { generateId } from '../session-cookie.js';

const debug = createDebug('typeorm-session:express');

/** express-session's own options that pass straight through (`store` is ours). */
const sessionOptionNames = ['cookie', 'genid', 'name', 'proxy', 'resave', 'rolling', 'saveUninitialized', 'secret', 'unset'] as const;

export interface SessionStoreOptions
  extends StoreOptions,
    Pick<SessionOptions, 'cookie' | 'genid' | 'name' | 'proxy' | 'resave' | 'rolling' | 'saveUninitialized' | 'unset'> {
  /** Secret(s) signing the session cookie, as in express-session: the first signs, all verify. Required. */
  secret: string | string[];
  /** The request's transaction; `false` turns it off (req.db is then absent). */
  transaction?: TransactionOptions<Request> | false;
}

export type SessionStoreMiddleware = ((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void) & {
  /** The session store, for listing, revoking, pruning. */
  readonly store: TypeormSessionStore;
  /** Stops the store's background work. */
  close(): Promise<void>;
};


function optional(options: SessionStoreOptions, name: keyof SessionStoreOptions, type: string): void {
  const value = options[name];
  if (value !== undefined && typeof value !== type) {
    throw new TypeError(`typeorm-session: option "${name}" must be a ${type}, got ${JSON.stringify(value) ?? typeof value}`);
  }
}

/**
 * One Express middleware giving each request its session (express-session's semantics, cookie and Session
 * class, with the TypeORM store) and its unit of work (`req.db`). See README, "The request's transaction".
 */
export function sessionStore(options: SessionStoreOptions): SessionStoreMiddleware {
  if (!options || typeof options !== 'object') throw new TypeError('typeorm-session: sessionStore(options) needs an options object');
  rejectUnknown(options, [...storeOptionNames, ...sessionOptionNames, 'transaction'], 'sessionStore');
  const { secret } = options;
  const validSecret = typeof secret === 'string' ? secret.length > 0 : Array.isArray(secret) && secret.length > 0 && secret.every((s) => typeof s === 'string' && s);
  if (!validSecret) throw new TypeError('typeorm-session: option "secret" must be a non-empty string or array of strings');
  for (const name of ['resave', 'rolling', 'saveUninitialized', 'proxy'] as const) optional(options, name, 'boolean');
  optional(options, 'genid', 'function');
  optional(options, 'name', 'string');
  if (options.name === '') throw new TypeError('typeorm-session: option "name" must be a non-empty string');
  if (options.unset !== undefined && options.unset !== 'destroy' && options.unset !== 'keep') {
    throw new TypeError(`typeorm-session: option "unset" must be 'destroy' or 'keep', got ${JSON.stringify(options.unset)}`);
  }
  const cookie = options.cookie ?? {};
  if (typeof cookie !== 'object' && typeof cookie !== 'function') {
    throw new TypeError('typeorm-session: option "cookie" must be an object of cookie options or a function (req) => options');
  }
  const transaction = resolveTransactionOptions(options.transaction);

  const storeOptions: Record<string, unknown> = {};
  for (const name of storeOptionNames) if (options[name] !== undefined) storeOptions[name] = options[name];
  const store = new TypeormSessionStore(storeOptions as unknown as StoreOptions);
  // The store's statements find their request's scope (its transaction) through this.
  store.findSitesWith(scopeOf);

  const config: SessionConfig = {
    store,
    name: options.name ?? 'connect.sid',
    secrets: typeof secret === 'string' ? [secret] : [...secret],
    cookie: cookie as SessionConfig['cookie'],
    genid: (options.genid as SessionConfig['genid'] | undefined) ?? generateId,
    customGenid: options.genid !== undefined,
    proxy: options.proxy,
    resave: options.resave ?? false,
    rolling: options.rolling ?? false,
    saveUninitialized: options.saveUninitialized ?? false,
    unsetDestroy: options.unset === 'destroy',
    checkPath: typeof cookie === 'function' || ((cookie as { path?: string }).path ?? '/') !== '/',
    report: reporter(options.onError, debug),
  };
  const scopeOptions = requestScopeOptions(store, transaction, config.report);
  // express-session's regenerate() asks the store for a new session through store.generate(req).
  (store as unknown as { generate: (req: IncomingMessage) => void }).generate = (req) => {
    const state = requestScope(req);
    if (state instanceof ExpressRequestState) state.generate();
    else throw new MiddlewareOrderError('typeorm-session: this store makes sessions only for requests that went through its sessionStore()');
  };

  const middleware = function typeormSession(req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) {
    // Each read of `req` is a slow lookup on Express's per-request hidden classes: the socket is read once.
    const socket = socketOf(req);
    if (requestScope(req, socket) !== undefined) {
      next(new MiddlewareOrderError('typeorm-session: the sessionStore middleware is mounted twice on this path'));
      return;
    }
    if (!store.isReady) {
      // The table check and creation run before the request's transaction can exist: on SQLite they would
      // otherwise wait for the single connection that transaction holds.
      store.ready().then(() => middleware(req, res, next), next);
      return;
    }
    const equipped = equip(req, res);
    if (equipped === undefined || hasForeignSession(req, socket)) {
      next(
        new MiddlewareOrderError(
          'typeorm-session: req.session was already set by another session middleware mounted before sessionStore(); ' +
            'remove it (sessionStore() includes express-session)',
        ),
      );
      return;
    }
    const state = new ExpressRequestState(scopeOptions, config, req, res);
    attachScope(req, state, socket);
    if (equipped.express4 && transaction) forwardAsyncErrors(req as never);
    state.start(next);
  } as SessionStoreMiddleware;

  Object.defineProperty(middleware, 'store', { value: store, enumerable: true });
  Object.defineProperty(middleware, 'close', { value: () => store.close() });
  return middleware;
}
