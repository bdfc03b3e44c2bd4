import expressSession from 'express-session';
import type { IncomingMessage } from 'node:http';
import { requestScope } from '../../unit-of-work/request-scope.js';

/**
 * `req.session`: express-session's own Session (so `instanceof`, `regenerate`, `destroy`, `touch`, `cookie`
 * and the rest behave as they always have), with save() and reload() reporting to the request's state
 * instead of being wrapped per request with closures, as express-session does.
 */

// express-session exports its Session and Cookie classes; the typings only declare them as types.
const { Session, Cookie } = expressSession as unknown as {
  Session: new (req: IncomingMessage, data?: object) => SessionObject;
  Cookie: new (options?: object) => CookieObject;
};

export interface CookieObject {
  expires: Date | null | undefined;
  maxAge: number | null | undefined;
  originalMaxAge: number | null | undefined;
  secure?: boolean | 'auto';
  sameSite?: boolean | 'lax' | 'strict' | 'none' | 'auto';
  serialize(name: string, value: string): string;
}

export interface SessionObject {
  readonly id: string;
  readonly req: IncomingMessage;
  cookie: CookieObject;
  touch(): this;
  save(callback?: (err?: unknown) => void): this;
  reload(callback: (err?: unknown) => void): this;
  destroy(callback?: (err?: unknown) => void): this;
  [key: string]: unknown;
}

/** What a RequestSession reports to: the request's state (found through the request's scope). */
export interface SessionOwner {
  /** save() was called by the application with this content. */
  savedByApplication(text: string): void;
  /** reload() found this data. */
  reloaded(data: object): void;
  /** destroy() was called: the request has no session any more. */
  dropSession(): void;
}

type Req = IncomingMessage & {
  session?: unknown;
  sessionStore?: {
    get(id: string, cb: (err: unknown, data?: object | null) => void): void;
    destroy(id: string, cb?: (err?: unknown) => void): void;
  };
};

function ownerOf(req: Req): SessionOwner | undefined {
  const owner = requestScope(req) as Partial<SessionOwner> | undefined;
  return owner && typeof owner.savedByApplication === 'function' ? (owner as SessionOwner) : undefined;
}

export class RequestSession extends Session {
  override save(callback?: (err?: unknown) => void): this {
    ownerOf(this.req)?.savedByApplication(contentOf(this));
    return super.save(callback);
  }

  /** As Session.destroy(), which removes the request's session with `delete req.session`. */
  override destroy(callback?: (err?: unknown) => void): this {
    const req = this.req as Req;
    const owner = ownerOf(req);
    if (!owner) return super.destroy(callback);
    owner.dropSession();
    req.sessionStore!.destroy(this.id, callback);
    return this;
  }

  override reload(callback: (err?: unknown) => void): this {
    const req = this.req as Req;
    const owner = ownerOf(req);
    if (!owner) return super.reload(callback);
    req.sessionStore!.get(this.id, (err, data) => {
      if (err) return callback(err);
      if (!data) return callback(new Error('failed to load session'));
      owner.reloaded(data);
      callback();
    });
    return this;
  }
}

/** A session built from stored data, as express-session's Store.createSession() builds it. */
export function sessionFrom(req: IncomingMessage, data: Record<string, any>): RequestSession {
  const stored = data.cookie ?? {};
  const { expires, originalMaxAge } = stored;
  data.cookie = new Cookie(stored);
  if (typeof expires === 'string') data.cookie.expires = new Date(expires);
  data.cookie.originalMaxAge = originalMaxAge;
  return new RequestSession(req, data);
}

export function newCookie(options: object): CookieObject {
  return new Cookie(options);
}

/**
 * The session's content without its cookie: what "modified" is judged on, as express-session judges it
 * (it hashes this same text with SHA-1; comparing the texts needs no hash). A shallow copy without `cookie`
 * serialises faster than JSON.stringify with a replacer, which calls back into JS for every value.
 */
export function contentOf(session: object): string {
  const { cookie: _cookie, ...content } = session as Record<string, unknown>;
  return JSON.stringify(content);
}

/** A fresh session's content: it has nothing but its cookie. */
export const EMPTY_CONTENT = '{}';
