import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TypeormSessionStore } from '../store/store.js';
import type { LoadedState } from '../store/session-state.js';
import { RequestScope, type RequestScopeOptions } from '../unit-of-work/request-scope.js';
import { cookieHeader, cookieValue, generateId, signedValue, unsign } from '../session-cookie.js';
import { shouldSave, shouldSetCookie, shouldTouch, type SessionFacts, type SessionRules } from '../express/session/decisions.js';
import type { Verdict } from '../unit-of-work/verdict.js';
import { serializeCookie, type ResolvedCookieOptions } from './cookie-options.js';

/** The options of one fastifySessionStore registration, resolved once. */
export interface FastifySessionConfig extends SessionRules {
  store: TypeormSessionStore;
  name: string;
  secrets: readonly string[];
  cookie: ResolvedCookieOptions;
  now: () => number;
}

export type SessionData = Record<string, any>;

/** What the state reads and writes of Fastify's request and reply (kept structural: no runtime fastify import). */
export interface FastifyRequestLike {
  raw: IncomingMessage;
  protocol: string;
  session: SessionData | null;
  sessionId: string;
}
export interface FastifyReplyLike {
  raw: ServerResponse;
  statusCode: number;
}

const EMPTY_CONTENT = '{}';

/**
 * One Fastify request: its unit of work (the RequestScope every adapter shares) and its session, a plain
 * object of the session's data at `request.session`. The session follows express-session's rules (when to
 * save, touch and send the cookie: the same named decisions), is loaded with the version it had, so its save
 * cannot overwrite another request's save unseen or re-create a destroyed session, and is saved in onSend,
 * inside the request's transaction, before the verdict.
 */
export class FastifyRequestState extends RequestScope implements SessionFacts {
  cookieId: string | undefined = undefined;
  originalId: string | undefined = undefined;
  originalContent: string | undefined = undefined;
  savedContent: string | undefined = undefined;
  /** The session's id; undefined until the session is loaded or made (a failed load leaves it so). */
  sessionId: string | undefined = undefined;
  /** What getWithState() loaded, for the save (undefined for a new session: it is inserted). */
  private loaded: LoadedState | undefined = undefined;
  private loadedData: object | undefined = undefined;
  /** The content judged in onSend, so the cookie decision does not serialise again. */
  private endContent: string | undefined = undefined;

  constructor(
    options: RequestScopeOptions,
    readonly config: FastifySessionConfig,
    readonly request: FastifyRequestLike,
    readonly reply: FastifyReplyLike,
  ) {
    super(options, request.raw, reply.raw);
    this.subject = request;
  }

  override status(): number {
    return this.reply.statusCode;
  }

  /** Finds the session cookie and loads its session: a promise when there is one to load. */
  load(): Promise<void> | undefined {
    const config = this.config;
    const raw = cookieValue(cookieHeader(this.request.raw), config.name);
    const id = raw === undefined ? undefined : unsign(raw, config.secrets);
    if (id === undefined) {
      this.fresh();
      return undefined;
    }
    this.cookieId = id;
    return config.store.getWithState(id).then((found) => {
      if (found === null) {
        this.fresh();
        return;
      }
      this.sessionId = id;
      this.originalId = id;
      this.loaded = found.loaded;
      this.loadedData = found.data;
      this.originalContent = JSON.stringify(found.data);
      // Without resave, what was loaded counts as saved: an unchanged session is not written again.
      this.savedContent = this.originalContent;
      this.expose(found.data as SessionData, id);
    });
  }

  /** A new, empty session under a new id (nothing is stored until it is saved). */
  private fresh(): void {
    const id = generateId();
    this.sessionId = id;
    this.originalId ??= id;
    this.originalContent ??= EMPTY_CONTENT;
    this.noteUnsaved(id);
    this.expose({}, id);
  }

  private expose(session: SessionData, id: string): void {
    this.request.session = session;
    this.request.sessionId = id;
  }

  /**
   * A new session id for the request (at login: an id planted before it becomes worthless). The stored
   * session is destroyed in the request's transaction, so a login that then fails keeps it.
   */
  async regenerate(): Promise<void> {
    const old = this.sessionId;
    // The store skips an id made in this request and never saved: a login is one statement, not two.
    if (old !== undefined) await this.config.store.destroy(old);
    this.loaded = undefined;
    this.loadedData = undefined;
    this.savedContent = undefined;
    this.fresh();
  }

  /** Saves, touches or destroys the session as the request leaves it; the last session write (onSend). */
  sessionAtEnd(): Promise<void> | undefined {
    this.ending = true;
    // The client went away: nothing of this request may persist, its session included.
    if (this.reply.raw.destroyed) this.failed = true;
    const id = this.sessionId;
    if (id === undefined) return undefined;
    const { store } = this.config;
    const session = this.request.session;
    if (session === null || typeof session !== 'object') {
      if (this.isUnsaved(id)) return undefined;
      return this.keepSessionWrite() ? this.written(store.destroy(id)) : undefined;
    }
    const content = JSON.stringify(session);
    this.endContent = content;
    if (shouldSave(this, this.config, id, { id }, content)) {
      if (!this.keepSessionWrite()) return undefined;
      this.savedContent = content;
      return this.written(store.setWithExpiry(id, session, this.expiresAt(), this.loaded));
    }
    if (this.loadedData === undefined) return undefined;
    const touched = this.touchView();
    if (shouldTouch(this, id, store.touchIsDue(touched as never))) {
      return this.keepSessionWrite() ? this.written(store.touch(id, touched as never)) : undefined;
    }
    return undefined;
  }

  /** When a session saved now expires: the cookie's maxAge from now, else the store's ttl (undefined). */
  private expiresAt(): number | undefined {
    const { maxAge } = this.config.cookie;
    return maxAge === undefined ? undefined : this.config.now() + maxAge;
  }

  /**
   * What the store's touch() reads of a session: its lifetime (the cookie's maxAge, else the store's ttl)
   * and, carried over from the loaded data, the expiry stored, so a touch inside the throttle window is skipped.
   */
  private touchView(): object {
    const { maxAge } = this.config.cookie;
    const view = maxAge === undefined ? {} : { cookie: { maxAge } };
    this.config.store.adoptLoaded(this.loadedData!, view);
    return view;
  }

  private written(write: Promise<void>): Promise<void> {
    return write.then(undefined, (err: unknown) => {
      this.sessionFailure ??= err;
    });
  }

  /** The Set-Cookie header the response carries under this verdict, if any. */
  cookieToSet(verdict: Verdict & { ok: true }): string | undefined {
    const id = this.sessionId;
    if (verdict.dropCookie || id === undefined) return undefined;
    const config = this.config;
    const { cookie } = config;
    if (cookie.secure && this.request.protocol !== 'https') return undefined;
    const session = this.request.session;
    if (session === null || typeof session !== 'object') {
      // Signed out: the browser forgets the cookie it came with.
      return this.cookieId === undefined ? undefined : serializeCookie(config.name, '', cookie, 0);
    }
    const content = this.endContent ?? JSON.stringify(session);
    // For the rules, a cookie with an expiry is one with a maxAge (the new expiry must reach the browser).
    const facts = { id, cookie: { expires: cookie.maxAge === undefined ? null : cookie.maxAge } };
    if (!shouldSetCookie(this, config, id, facts, content)) return undefined;
    return serializeCookie(config.name, signedValue(id, config.secrets[0]!), cookie, this.expiresAt());
  }

  override transactionBegan(): void {
    // Only a request holding a transaction needs to hear of an abort at once; others check in onSend.
    const res = this.reply.raw;
    if (res.destroyed) queueMicrotask(() => this.clientGone());
    else res.once('close', () => this.responseClosed());
  }

  /**
   * The response's socket closed: an abort before the response was complete, or a reply that never went
   * through onSend (reply.hijack()). Either way the transaction has not been settled: roll it back.
   */
  private responseClosed(): void {
    if (!this.reply.raw.writableFinished || !this.ending) this.clientGone();
  }
}
