import type { IncomingMessage, ServerResponse } from 'node:http';
import { MiddlewareOrderError, type TypeormSessionError } from '../errors.js';
import type { TypeormSessionStore } from '../store/store.js';
import { RequestScope, responseScope, type RequestScopeOptions } from '../unit-of-work/request-scope.js';
import { runInFrame } from '../unit-of-work/context.js';
import { contentOf, EMPTY_CONTENT, newCookie, RequestSession, sessionFrom, type SessionObject, type SessionOwner } from './session/session.js';
import { cookieHeader, cookieValue, isSecure, signedValue, unsign } from '../session-cookie.js';
import { shouldDestroy, shouldSave, shouldSetCookie, shouldTouch, type SessionFacts } from './session/decisions.js';
import { DONE, FLOWING, type HoldOwner } from './response-hold.js';
import { KEEP_COOKIE, type Verdict } from '../unit-of-work/verdict.js';

/** The express-session options of one sessionStore(), resolved once. */
export interface SessionConfig {
  store: TypeormSessionStore;
  name: string;
  secrets: readonly string[];
  cookie: CookieOptions | ((req: IncomingMessage) => CookieOptions);
  genid: (req: IncomingMessage) => string;
  /** The application's genid: it may read the request, so it runs where express-session runs it. */
  customGenid: boolean;
  proxy: boolean | undefined;
  resave: boolean;
  rolling: boolean;
  saveUninitialized: boolean;
  unsetDestroy: boolean;
  /** False when every path has sessions (cookie path `/`, not a function): the check is then skipped. */
  checkPath: boolean;
  report: (error: TypeormSessionError) => void;
}

type CookieOptions = { path?: string; secure?: boolean | 'auto'; sameSite?: unknown; [key: string]: unknown };

type Req = IncomingMessage & { originalUrl?: string };

// Where the request's session is: not for this path, not made yet (made on first use), being loaded, made.
const OFF = 0;
const LAZY = 1;
const LOADING = 2;
const MADE = 3;


/**
 * One Express request: its unit of work (RequestScope), its session, and the holding of its response.
 *
 * The session follows express-session's rules (when to save, touch, set the cookie; the same cookie format
 * and Session class), with three differences that make it cheap: a request without a session cookie gets
 * its session only when something reads `req.session` (express-session makes, hashes and discards one for
 * every request); "modified" compares the session's JSON text instead of SHA-1 hashes of it; and nothing is
 * wrapped per request (see response-hold.ts and prototypes.ts).
 */
export class ExpressRequestState extends RequestScope implements SessionOwner, HoldOwner, SessionFacts {
  // ---- the response (response-hold.ts drives these) ----
  holdPhase = 0;
  held: unknown[] | undefined = undefined;
  flushRequested = false;
  /** The session's last write has been decided (it is done at end(), once). */
  sessionSettled = false;

  // ---- the session: what req.session, req.sessionID and req.sessionStore show (prototypes.ts) ----
  /** `req.session`: undefined until made, and after destroy(). */
  session: SessionObject | null | undefined = undefined;
  /** `req.sessionID`. */
  sessionId: string | undefined = undefined;
  /** Something other than this middleware assigned `req.sessionStore`. */
  foreignStore: unknown = undefined;
  private sessionPhase = LAZY;
  /** The id the cookie carried, when its signature was valid. */
  cookieId: string | undefined = undefined;
  /** The cookie options of a `cookie` function, resolved at the start, as express-session does. */
  private resolvedCookie: CookieOptions | undefined = undefined;
  /** The id an application's genid gave at the start, for the session made later on first use. */
  private firstId: string | undefined = undefined;
  originalId: string | undefined = undefined;
  originalContent: string | undefined = undefined;
  savedContent: string | undefined = undefined;
  private touched = false;
  /** The content as judged at end(), so the cookie decision does not serialise again. */
  private endContent: string | undefined = undefined;

  constructor(
    options: RequestScopeOptions,
    readonly config: SessionConfig,
    override readonly req: Req,
    override readonly res: ServerResponse,
  ) {
    super(options, req, res);
  }

  override answered(): boolean {
    return this.holdPhase >= DONE;
  }

  override status(): number {
    return this.res.statusCode;
  }

  /** Starts the request: finds its session cookie, loads the session if there is one, then calls `next`. */
  start(next: (err?: unknown) => void): void {
    const config = this.config;
    // express-session calls these once, at its start: by first use, a router may have rewritten req.url.
    if (typeof config.cookie === 'function') this.resolvedCookie = config.cookie(this.req);
    if (config.checkPath && !this.pathHasSessions()) {
      this.sessionPhase = OFF;
      this.continue(next);
      return;
    }
    const raw = cookieValue(cookieHeader(this.req), config.name);
    const id = raw === undefined ? undefined : unsign(raw, config.secrets);
    if (id !== undefined) {
      this.cookieId = id;
      this.sessionPhase = LOADING;
      if (this.options.transactional) runInFrame(this.root, () => this.load(id, next));
      else this.load(id, next);
      return;
    }
    this.noSession();
    this.continue(next);
  }

  private continue(next: (err?: unknown) => void): void {
    if (this.options.transactional) runInFrame(this.root, next);
    else next();
  }

  private load(id: string, next: (err?: unknown) => void): void {
    this.config.store.get(id).then(
      (data) => {
        this.sessionPhase = LAZY;
        try {
          if (data) this.adopt(id, data as unknown as Record<string, unknown>);
          else this.noSession();
        } catch (err) {
          // Inside this callback a throw would be an unhandled rejection and the request would never be
          // answered: the error goes to Express like a failed load.
          next(err);
          return;
        }
        next();
      },
      (err: unknown) => {
        this.sessionPhase = LAZY;
        next(err);
      },
    );
  }

  /** No session came with the request: one is made now or on first use. */
  private noSession(): void {
    const config = this.config;
    // express-session saves uninitialized sessions with this option, so every request needs one now.
    if (config.saveUninitialized) this.makeFirst();
    else if (config.customGenid) this.firstId = config.genid(this.req);
  }

  private pathHasSessions(): boolean {
    const path = pathname(this.req.originalUrl ?? this.req.url ?? '/');
    return path.startsWith(this.cookieOptions().path ?? '/');
  }

  private cookieOptions(): CookieOptions {
    return this.resolvedCookie ?? (this.config.cookie as CookieOptions);
  }

  // ---- req.session, req.sessionID (prototypes.ts) ----------------------------------------------------------

  /** `req.session`. A request without a session cookie gets its session here, on first read. */
  currentSession(): SessionObject | null | undefined {
    if (this.sessionPhase === LAZY) this.makeFirst();
    return this.session;
  }

  /** `req.sessionID`; reading it makes the session, as express-session always has one. */
  currentSessionId(): string | undefined {
    if (this.sessionPhase === LAZY) this.makeFirst();
    return this.sessionId;
  }

  /** `req.session = value` (a session of the application's making, or null to drop it). */
  assignSession(value: SessionObject | null | undefined): void {
    // express-session had made the session (and its id) before the application could replace it.
    if (this.sessionPhase === LAZY) this.makeFirst();
    else if (this.sessionPhase === LOADING) this.sessionPhase = MADE;
    this.session = value;
  }

  /** Session.destroy() (or `req.session = null`): the request has no session any more. */
  dropSession(): void {
    this.session = undefined;
  }

  private makeFirst(): void {
    const id = this.firstId;
    this.firstId = undefined;
    this.generate(id);
    this.originalId = this.sessionId;
    this.originalContent = EMPTY_CONTENT;
  }

  /** A new session under a new id (also the store's generate(), which regenerate() calls). */
  generate(given?: string): void {
    const req = this.req;
    const config = this.config;
    const id = given ?? config.genid(req);
    // Before the Session: its constructor reads req.sessionID, which must not make another one.
    this.sessionPhase = MADE;
    this.sessionId = id;
    const session = new RequestSession(req);
    const options = this.cookieOptions();
    const cookie = newCookie(options);
    if (options.secure === 'auto' || options.sameSite === 'auto') {
      const secure = isSecure(req, config.proxy);
      if (options.secure === 'auto') cookie.secure = secure;
      if (options.sameSite === 'auto') cookie.sameSite = secure ? 'none' : 'lax';
    }
    session.cookie = cookie;
    this.session = session;
    // No row exists for this id until it is saved: destroying it (regenerate() at login) needs no statement.
    this.noteUnsaved(id);
  }

  private adopt(id: string, data: Record<string, unknown>): void {
    this.sessionPhase = MADE;
    this.sessionId = id;
    const session = sessionFrom(this.req, data);
    this.config.store.adoptLoaded(data, session);
    this.session = session;
    this.originalId = id;
    this.originalContent = contentOf(session);
    if (!this.config.resave) this.savedContent = this.originalContent;
  }

  savedByApplication(content: string): void {
    this.savedContent = content;
  }

  reloaded(data: object): void {
    const session = sessionFrom(this.req, data as Record<string, unknown>);
    this.config.store.adoptLoaded(data, session);
    this.session = session;
  }

  // ---- the end of the request (response-hold.ts calls these) ----------------------------------------------

  /** end() before any byte left: the session's last write (joining the transaction), then COMMIT or ROLLBACK. */
  settleAtEnd(): Verdict | Promise<Verdict> {
    // The common case of a route that used neither: nothing to save, commit or decide.
    if (this.sessionPhase !== MADE && this.closeIfIdle() && this.foreignStore === undefined) {
      this.ending = true;
      this.sessionSettled = true;
      return KEEP_COOKIE;
    }
    const write = this.sessionAtEnd();
    if (write === undefined) return this.settle(false);
    return write.then(() => this.settle(false));
  }

  /** The first byte of a streamed response: the transaction ends now; the session is saved at end(). */
  settleAtFirstByte(): Verdict | Promise<Verdict> {
    return this.settle(true);
  }

  /** end() of a streamed response: the session's last write, outside the (finished) transaction. */
  sessionAtStreamEnd(): Promise<void> | undefined {
    return this.sessionAtEnd();
  }

  lateFailure(): unknown {
    return this.sessionFailure;
  }

  /** What express-session does to the session at end(): destroy, save or touch it, or nothing. */
  private sessionAtEnd(): Promise<void> | undefined {
    this.ending = true;
    this.sessionSettled = true;
    // The client went away: nothing of this request may persist, its session included (after an abort 'finish' never fires, and the handler keeps running).
    if (this.res.destroyed) this.failed = true;
    if (this.foreignStore !== undefined && this.foreignStore !== this.config.store) {
      this.sessionFailure ??= new MiddlewareOrderError(
        'typeorm-session: another session middleware replaced req.session after sessionStore(); remove it',
      );
    }
    if (this.sessionPhase !== MADE) return undefined;
    const { store } = this.config;
    const session = this.session;
    const id = this.sessionId;
    if (typeof id !== 'string') return undefined;
    if (session == null) {
      if (!shouldDestroy(this.config)) return undefined;
      return this.keepSessionWrite() ? this.written(store.destroy(id)) : undefined;
    }
    if (!this.touched) {
      session.touch();
      this.touched = true;
    }
    const content = contentOf(session);
    this.endContent = content;
    if (shouldSave(this, this.config, id, session, content)) {
      if (!this.keepSessionWrite()) return undefined;
      this.savedContent = content;
      return this.written(store.set(id, session as never));
    }
    if (shouldTouch(this, id, store.touchIsDue(session as never))) {
      return this.keepSessionWrite() ? this.written(store.touch(id, session as never)) : undefined;
    }
    return undefined;
  }

  private written(write: Promise<void>): Promise<void> {
    return write.then(undefined, (err: unknown) => {
      this.sessionFailure ??= err;
    });
  }

  /** Adds the session cookie when express-session would send one. Called just before the headers leave. */
  applyCookie(verdict: Verdict & { ok: true }): void {
    if (verdict.dropCookie || this.sessionPhase !== MADE) return;
    const req = this.req;
    const session = this.session;
    const id = this.sessionId;
    if (session == null || typeof id !== 'string') return;
    const config = this.config;
    const content = this.endContent ?? contentOf(session);
    if (!shouldSetCookie(this, config, id, session, content)) return;
    if (session.cookie.secure && !isSecure(req, config.proxy)) return;
    if (!this.touched) {
      session.touch();
      this.touched = true;
    }
    const header = session.cookie.serialize(config.name, signedValue(id, config.secrets[0]!));
    const res = this.res;
    const previous = res.getHeader('Set-Cookie');
    res.setHeader('Set-Cookie', previous === undefined ? header : Array.isArray(previous) ? [...previous, header] : [String(previous), header]);
  }

  // ---- client abort -----------------------------------------------------------------------------------------

  override transactionBegan(): void {
    // Only a request holding a transaction needs to hear of an abort at once; others check at end().
    if (this.res.destroyed) queueMicrotask(() => rollBackAfterAbort.call(this.res));
    else this.res.once('close', rollBackAfterAbort);
  }
}

/** The path of a request target, as parseurl.original() gives it (absolute form included: `GET http://host/a`). */
function pathname(url: string): string {
  if (url.charCodeAt(0) !== 47 /* / */) {
    try {
      return new URL(url).pathname;
    } catch {
      // Not absolute ('*', or malformed): compared as sent.
    }
  }
  const query = url.indexOf('?');
  return (query === -1 ? url : url.slice(0, query)) || '/';
}

/**
 * A client that disconnects before the response is complete: roll back at once, which also fences the
 * handler's remaining queries (the handler keeps running after an abort; Node does not stop it). 'close' fires in
 * every case, 'finish' only on success, so `writableFinished` tells them apart. Shared by all requests.
 */
function rollBackAfterAbort(this: ServerResponse): void {
  const state = responseScope(this) as ExpressRequestState | undefined;
  if (state === undefined || this.writableFinished || state.holdPhase >= FLOWING) return;
  state.clientGone();
}
