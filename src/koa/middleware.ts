import type { IncomingMessage, ServerResponse } from 'node:http';
import koaSession from 'koa-session';
import type { ParameterizedContext } from 'koa';
import type { EntityManager } from 'typeorm';
import createDebug from 'debug';
import { MiddlewareOrderError } from '../errors.js';
import { rejectUnknown, storeOptionNames, type StoreOptions } from '../options.js';
import { TypeormSessionStore } from '../store/store.js';
import type { LoadedState } from '../store/session-state.js';
import { resolveTransactionOptions, type TransactionOptions } from '../transaction-options.js';
import { attachScope, equipPrototype, RequestScope, requestScope, requestScopeOptions, scopeOf } from '../unit-of-work/request-scope.js';
import { failureBody, type Verdict } from '../unit-of-work/verdict.js';
import { reporter } from '../reporter.js';
import { bindEmitter } from '../unit-of-work/context.js';
import { KOA_CONTROL } from './helpers.js';

const debug = createDebug('typeorm-session:koa');

/** koa-session's own options that pass straight through (`store` is ours; `encode`/`decode` do not apply). */
const sessionOptionNames = [
  'key', 'maxAge', 'autoCommit', 'overwrite', 'httpOnly', 'signed', 'rolling', 'renew', 'secure', 'sameSite',
  'domain', 'path', 'genid', 'prefix', 'valid', 'beforeSave', 'externalKey',
] as const;

export interface KoaSessionStoreOptions extends StoreOptions {
  /** Cookie name. Default `'koa.sess'`. */
  key?: string;
  /** Session lifetime in ms, or `'session'` for a browser-session cookie (the store's `ttl` applies). Default one day. */
  maxAge?: number | 'session';
  autoCommit?: boolean;
  overwrite?: boolean;
  httpOnly?: boolean;
  /** Sign the cookie with `app.keys`. Default `true`. */
  signed?: boolean;
  rolling?: boolean;
  renew?: boolean;
  secure?: boolean;
  sameSite?: string;
  domain?: string;
  path?: string;
  genid?: (ctx: any) => string;
  prefix?: string;
  valid?: (ctx: any, session: Record<string, unknown>) => boolean;
  beforeSave?: (ctx: any, session: any) => void;
  externalKey?: { get(ctx: any): string | undefined; set(ctx: any, value: string): void };
  /** The request's transaction; `false` turns it off (ctx.db is then absent). */
  transaction?: TransactionOptions<ParameterizedContext> | false;
}

interface KoaApp {
  keys?: unknown;
  context: object;
  use(fn: unknown): unknown;
}

interface KoaContext {
  req: IncomingMessage;
  res: ServerResponse;
  status: number;
  body: unknown;
  db?: EntityManager;
  remove(field: string): void;
  set(field: string, value: string): void;
}

export type KoaSessionStoreMiddleware = ((ctx: any, next: () => Promise<unknown>) => Promise<void>) & {
  readonly store: TypeormSessionStore;
  close(): Promise<void>;
};

/**
 * Koa middleware giving `ctx.session` (koa-session, with the TypeORM store as its external store) and
 * `ctx.db`, the EntityManager of the request's transaction. Koa answers after the middleware chain settles,
 * so the commit runs when `next()` returns: before the response's first byte, streams included.
 */
export function koaSessionStore(app: KoaApp, options: KoaSessionStoreOptions): KoaSessionStoreMiddleware {
  if (!app || typeof app.use !== 'function' || typeof app.context !== 'object') {
    throw new TypeError('typeorm-session: koaSessionStore(app, options) needs the Koa app as its first argument');
  }
  if (!options || typeof options !== 'object') throw new TypeError('typeorm-session: koaSessionStore(app, options) needs an options object');
  rejectUnknown(options, [...storeOptionNames, ...sessionOptionNames, 'transaction'], 'koaSessionStore');
  if (options.signed !== false && !app.keys) {
    throw new TypeError('typeorm-session: set app.keys before koaSessionStore() (koa-session signs its cookie), or pass signed: false');
  }
  if (Object.getOwnPropertyDescriptor(app.context, 'session')) {
    throw new MiddlewareOrderError(
      'typeorm-session: another session middleware (koa-session?) is already installed on this app; koaSessionStore() includes koa-session',
    );
  }
  const transaction = resolveTransactionOptions(options.transaction);
  if (transaction) equipPrototype(app.context, (ctx: KoaContext) => requestScope(ctx.req));

  const storeOptions: Record<string, unknown> = {};
  for (const name of storeOptionNames) if (options[name] !== undefined) storeOptions[name] = options[name];
  const store = new TypeormSessionStore(storeOptions as unknown as StoreOptions);
  // The store's statements find their request's scope (its transaction) through this.
  store.findSitesWith(scopeOf);
  const now = options.now ?? Date.now;
  const loadedBy = new WeakMap<object, { key: string; loaded: LoadedState }>();

  const sessionOptions: Record<string, unknown> = {};
  for (const name of sessionOptionNames) if (options[name] !== undefined) sessionOptions[name] = options[name];
  const session = koaSession(
    {
      ...sessionOptions,
      store: {
        // What each request loaded, so its save updates that version only and cannot re-create a session
        // destroyed meanwhile (koa-session hands the store a fresh object, unlike express-session).
        get: async (key: string, _maxAge: unknown, { ctx }: { ctx: object }) => {
          const found = await store.getWithState(key);
          if (!found) return null;
          loadedBy.set(ctx, { key, loaded: found.loaded });
          return found.data;
        },
        // koa-session passes 'session' (a browser-session cookie) or a lifetime in ms it has padded by 10 s.
        set: (key: string, data: object, maxAge: number | 'session', { ctx }: { ctx: object }) => {
          const loaded = loadedBy.get(ctx);
          const expiresAt = typeof maxAge === 'number' ? now() + maxAge : undefined;
          return store.setWithExpiry(key, data, expiresAt, loaded?.key === key ? loaded.loaded : undefined);
        },
        destroy: (key: string) => store.destroy(key),
      },
    } as any,
    app as any,
  ) as unknown as (ctx: unknown, next: () => Promise<unknown>) => Promise<void>;
  const scopeOptions = requestScopeOptions(store, transaction, reporter(options.onError, debug));

  const middleware = async function typeormKoaSession(ctx: KoaContext, next: () => Promise<unknown>) {
    if (requestScope(ctx.req)) throw new MiddlewareOrderError('typeorm-session: koaSessionStore is mounted twice');
    // Before the request's transaction can exist (see the Express adapter).
    if (!store.isReady) await store.ready();
    (ctx as unknown as Record<symbol, unknown>)[KOA_CONTROL] = { store, currentKey: () => loadedBy.get(ctx)?.key };

    // With `transaction: false` too: the scope then has no unit of work and keeps every session write.
    const scope = new RequestScope(scopeOptions, ctx.req, ctx.res, () => ctx.status);
    scope.subject = ctx;
    attachScope(ctx.req, scope);
    if (transaction) {
      // Koa writes the response only after the middleware chain has settled: any 'close' before that is an abort.
      ctx.res.once('close', () => {
        if (!ctx.res.writableFinished) scope.clientGone();
      });
      // Listeners a callback-style body parser adds to ctx.req run in the socket's async context, where
      // currentManager() would find no request; keep them in this request's scope, as the Express adapter does.
      bindEmitter(ctx.req, scope.root);
    }

    try {
      await scope.run(() =>
        session(ctx, async () => {
          try {
            await next();
          } catch (err) {
            // koa-session still saves the session on its way out (in a finally, errors included); a failed
            // request makes the store skip that save, so nothing of it lands outside the rolled-back transaction.
            scope.failed = true;
            throw err;
          } finally {
            // What koa-session saves now is the request's last session write.
            scope.ending = true;
          }
        }),
      );
    } catch (err) {
      // An upstream middleware may catch this and answer itself: the cookie koa-session set must not name a
      // session change that was rolled back or never saved.
      const verdict = await scope.settleAfterFailure();
      if (verdict.ok && verdict.dropCookie) ctx.remove('Set-Cookie');
      throw err;
    }
    applyVerdict(ctx, await scope.settle(false));
  } as KoaSessionStoreMiddleware;

  Object.defineProperty(middleware, 'store', { value: store, enumerable: true });
  Object.defineProperty(middleware, 'close', { value: () => store.close() });
  return middleware;
}

/** Sends what the request's verdict says: the response as prepared, without the cookie, or a bare failure. */
function applyVerdict(ctx: KoaContext, verdict: Verdict): void {
  if (verdict.ok) {
    if (verdict.dropCookie) ctx.remove('Set-Cookie');
    return;
  }
  // Nothing the handler prepared may suggest success.
  for (const name of ctx.res.getHeaderNames()) ctx.res.removeHeader(name);
  ctx.status = verdict.status;
  if (verdict.status === 503) ctx.set('Retry-After', '1');
  ctx.body = failureBody(verdict.status);
}

