import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import createDebug from 'debug';
import { MiddlewareOrderError } from '../errors.js';
import { rejectUnknown, storeOptionNames, type StoreOptions } from '../options.js';
import { TypeormSessionStore } from '../store/store.js';
import { resolveTransactionOptions, type TransactionOptions } from '../transaction-options.js';
import { attachScope, equipPrototype, requestScope, requestScopeOptions, scopeOf } from '../unit-of-work/request-scope.js';
import { bindEmitter } from '../unit-of-work/context.js';
import { failureBody, type Verdict } from '../unit-of-work/verdict.js';
import { reporter } from '../reporter.js';
import { resolveCookieOptions, type FastifySessionCookieOptions } from './cookie-options.js';
import { FastifyRequestState, type FastifySessionConfig } from './request-state.js';

const debug = createDebug('typeorm-session:fastify');

export interface FastifySessionStoreOptions extends StoreOptions {
  /** Secret(s) signing the session cookie, as in express-session: the first signs, all verify. Required. */
  secret: string | string[];
  /** Cookie name. Default `'sessionId'` (@fastify/session's). */
  name?: string;
  cookie?: FastifySessionCookieOptions;
  /** Send the cookie (and extend the stored expiry, throttled by `touchAfter`) on every response. Default `false`. */
  rolling?: boolean;
  /** Store a new session even when the request left it empty. Default `false`. */
  saveUninitialized?: boolean;
  /** The request's transaction; `false` turns it off (request.db is then absent). */
  transaction?: TransactionOptions<FastifyRequest> | false;
}

const ownOptionNames = ['secret', 'name', 'cookie', 'rolling', 'saveUninitialized', 'transaction'];
// What Fastify's register() itself reads from the same object (it passes the object on as it is).
const registerOptionNames = ['prefix', 'logLevel', 'logSerializers'];
const cookieNamePattern = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function resolveConfig(options: FastifySessionStoreOptions): Omit<FastifySessionConfig, 'store'> {
  const { secret } = options;
  const validSecret =
    typeof secret === 'string' ? secret.length > 0 : Array.isArray(secret) && secret.length > 0 && secret.every((s) => typeof s === 'string' && s);
  if (!validSecret) throw new TypeError('typeorm-session: option "secret" must be a non-empty string or array of strings');
  for (const name of ['rolling', 'saveUninitialized'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'boolean') throw new TypeError(`typeorm-session: option "${name}" must be a boolean`);
  }
  const name = options.name ?? 'sessionId';
  if (typeof name !== 'string' || !cookieNamePattern.test(name)) {
    throw new TypeError('typeorm-session: option "name" must be a cookie name (an HTTP token)');
  }
  return {
    name,
    secrets: typeof secret === 'string' ? [secret] : [...secret],
    cookie: resolveCookieOptions(options.cookie),
    rolling: options.rolling ?? false,
    saveUninitialized: options.saveUninitialized ?? false,
    // `request.session = null` always destroys the stored session (koa-session's and @fastify/session's way).
    unsetDestroy: true,
    now: options.now ?? Date.now,
  };
}

/**
 * The Fastify plugin: `request.session` (a plain object of the session's data, on the TypeORM store),
 * `request.sessionId`, and `request.db`, the EntityManager of the request's transaction. The transaction
 * ends in onSend, which Fastify awaits before it writes anything (streams included): COMMIT happens before
 * the response's first byte. Registered for the whole app (not encapsulated), like fastify-plugin's plugins.
 */
function fastifySessionStore(app: FastifyInstance, options: FastifySessionStoreOptions, done: (err?: Error) => void): void {
  // A plugin that throws takes the process down (avvio runs it outside any promise): bad options go to done(),
  // and so to app.ready() / await app.register().
  try {
    install(app, options);
  } catch (err) {
    done(err as Error);
    return;
  }
  done();
}

function install(app: FastifyInstance, options: FastifySessionStoreOptions): void {
  if (!options || typeof options !== 'object') throw new TypeError('typeorm-session: fastifySessionStore needs an options object');
  rejectUnknown(options, [...storeOptionNames, ...ownOptionNames, ...registerOptionNames], 'fastifySessionStore');
  const transaction = resolveTransactionOptions(options.transaction);
  const storeOptions: Record<string, unknown> = {};
  for (const name of storeOptionNames) if (options[name] !== undefined) storeOptions[name] = options[name];
  // Everything checked before the store exists: a store made for a rejected configuration would prune in the background.
  const rules = resolveConfig(options);
  if (app.hasRequestDecorator('session')) {
    throw new MiddlewareOrderError(
      'typeorm-session: request.session is already defined: fastifySessionStore is registered twice, or another session plugin (@fastify/session?) is registered',
    );
  }
  const store = new TypeormSessionStore(storeOptions as unknown as StoreOptions);
  // The store's statements find their request's scope (its transaction) through this.
  store.findSitesWith(scopeOf);
  const config: FastifySessionConfig = { ...rules, store };
  const scopeOptions = requestScopeOptions(store, transaction, reporter(options.onError, debug));
  const stateOf = (request: FastifyRequest) => requestScope(request.raw) as FastifyRequestState | undefined;

  app.decorate('sessionStore', store);
  // Fastify keeps the shape of its request objects fixed when every field is declared up front.
  app.decorateRequest('session', null as never);
  app.decorateRequest('sessionId', '');
  if (transaction) {
    // The same `db` and `commit` the Express and Koa adapters define, handed to Fastify as decorators.
    const accessors = {};
    equipPrototype(accessors, stateOf);
    app.decorateRequest('db', { getter: Object.getOwnPropertyDescriptor(accessors, 'db')!.get! });
    app.decorateRequest('commit', (accessors as { commit: () => Promise<void> }).commit);
  }

  function start(request: FastifyRequest, reply: FastifyReply, next: (err?: Error) => void): void {
    const state = new FastifyRequestState(scopeOptions, config, request as never, reply);
    attachScope(request.raw, state);
    // Fastify 5 carries the async context across its own body parsing (the loss of fastify #3570), but
    // 'data'/'end' listeners a content-type parser adds to the request stream run in the socket's context:
    // bound to the request's frame, currentManager() works inside them too.
    if (transaction) bindEmitter(request.raw, state.root);
    const loading = state.load();
    // The rest of the request (parsing, hooks, handler) continues from inside the frame.
    const proceed = transaction ? () => state.run(() => next()) : () => next();
    if (loading === undefined) proceed();
    else loading.then(proceed, next);
  }

  app.addHook('onRequest', (request, reply, next) => {
    // The table check and creation run before the request's transaction can exist: on SQLite they would
    // otherwise wait for the single connection that transaction holds.
    if (store.isReady) start(request, reply, next);
    else store.ready().then(() => start(request, reply, next), next);
  });

  // A thrown error rolls back whatever status the error handler then chooses. Fastify runs onError before the
  // error handler, and so before onSend.
  app.addHook('onError', (request, _reply, _error, next) => {
    const state = stateOf(request);
    if (state !== undefined) state.failed = true;
    next();
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const state = stateOf(request);
    // A second onSend (Fastify sends an error raised by onSend itself) finds the request settled already.
    if (state === undefined || state.ending) return payload;
    const write = state.run(() => state.sessionAtEnd());
    if (write !== undefined) await write;
    return applyVerdict(state, reply, payload, await state.settle(false));
  });

  app.addHook('onClose', async () => {
    await store.close();
  });
}

/** Sends what the request's verdict says: the payload, with the session cookie when due, or a bare failure. */
function applyVerdict(state: FastifyRequestState, reply: FastifyReply, payload: unknown, verdict: Verdict): unknown {
  if (verdict.ok) {
    const cookie = state.cookieToSet(verdict);
    if (cookie !== undefined) reply.header('set-cookie', cookie);
    return payload;
  }
  // Nothing the handler prepared may suggest success: its headers (Set-Cookie included) and its body go.
  for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name);
  for (const name of reply.raw.getHeaderNames()) reply.raw.removeHeader(name);
  const stream = payload as { destroy?: () => void; pipe?: unknown } | null;
  if (stream !== null && typeof stream === 'object' && typeof stream.pipe === 'function' && typeof stream.destroy === 'function') stream.destroy();
  reply.code(verdict.status);
  reply.header('content-type', 'text/plain; charset=utf-8');
  if (verdict.status === 503) reply.header('retry-after', '1');
  return failureBody(verdict.status);
}

// fastify-plugin's marks, set by hand: no encapsulation (the hooks and decorators apply to the whole app),
// and a readable name in Fastify's errors and plugin tree.
Object.assign(fastifySessionStore, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'typeorm-session',
});

export { fastifySessionStore };
