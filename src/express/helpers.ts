import type { IncomingMessage, ServerResponse } from 'node:http';
import { NoRequestScopeError } from '../errors.js';
import { getPath, setPath } from '../session-fields.js';
import { signedInRecently, signInMetadata } from '../sign-in-record.js';
import type { TypeormSessionStore } from '../store/store.js';
import { requestScope } from '../unit-of-work/request-scope.js';
import { ExpressRequestState } from './request-state.js';

type Req = IncomingMessage & {
  session?: any;
  sessionID?: string;
  headers: IncomingMessage['headers'];
  ip?: string;
};
type Res = ServerResponse & { clearCookie?: (name: string, options?: object) => unknown };

function control(req: Req): { store: TypeormSessionStore; cookieName: string; session: any } {
  const state = requestScope(req);
  const session = state instanceof ExpressRequestState ? req.session : undefined;
  if (!(state instanceof ExpressRequestState) || !session) {
    throw new NoRequestScopeError('typeorm-session: sign-in helpers need a request that went through sessionStore()');
  }
  return { store: state.config.store, cookieName: state.config.name, session };
}

const promisify = (fn: (cb: (err?: unknown) => void) => void) =>
  new Promise<void>((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));

export interface SignInOptions {
  /** Session fields carried over into the new session (everything else is dropped). Default none. */
  keep?: string[];
  /**
   * Stored in the session's metadata field, shown by listByUser(). Default `{ userAgent, ip }`; `signedInAt`
   * (the store's clock, ISO 8601) is added either way, for signedInWithin().
   */
  metadata?: Record<string, unknown>;
}

/**
 * Signs a user in: a new session id (so an id planted before login is worthless: session fixation), the
 * fields named in `keep` carried over, the user id and the device metadata recorded.
 */
export async function signIn(req: Req, userId: string | number, options: SignInOptions = {}): Promise<void> {
  const { store, session } = control(req);
  const kept = Object.fromEntries((options.keep ?? []).filter((k) => k in session).map((k) => [k, session[k]]));
  await promisify((cb) => session.regenerate(cb));
  Object.assign(req.session, kept);
  const { userIdPath, metadataField } = store.sessionFields;
  setPath(req.session, userIdPath, userId);
  req.session[metadataField] = signInMetadata(
    options.metadata ?? { userAgent: req.headers['user-agent'] ?? null, ip: req.ip ?? req.socket?.remoteAddress ?? null },
    store.currentTime(),
  );
}

/**
 * Whether this request's session signed in (signIn()) within the last `ms` milliseconds: for actions that
 * want a recent sign-in (changing the password or e-mail). False for a session that never signed in.
 */
export function signedInWithin(req: Req, ms: number): boolean {
  const { store, session } = control(req);
  return signedInRecently(session, store.sessionFields.metadataField, store.currentTime(), ms);
}

function clearCookie(req: Req, res: Res, cookieName: string): void {
  const cookie = req.session?.cookie ?? {};
  const options = { path: cookie.path ?? '/', domain: cookie.domain, secure: cookie.secure, sameSite: cookie.sameSite };
  if (typeof res.clearCookie === 'function') res.clearCookie(cookieName, options);
}

/** Signs out: destroys the session and clears its cookie (express-session leaves the cookie behind). */
export async function signOut(req: Req, res: Res): Promise<void> {
  const { cookieName, session } = control(req);
  clearCookie(req, res, cookieName);
  await promisify((cb) => session.destroy(cb));
}

/** Signs the current user out of every session, this one included. Returns how many were revoked. */
export async function signOutEverywhere(req: Req, res: Res): Promise<number> {
  const { store, session } = control(req);
  const userId = getPath(session, store.sessionFields.userIdPath);
  if (userId === undefined || userId === null) return 0;
  const count = await store.destroyByUser(userId as string);
  await signOut(req, res);
  return count;
}

/** Signs the current user out of all other sessions ("sign out other devices"). Returns how many. */
export async function signOutOtherSessions(req: Req): Promise<number> {
  const { store, session } = control(req);
  const userId = getPath(session, store.sessionFields.userIdPath);
  if (userId === undefined || userId === null) return 0;
  return store.destroyByUser(userId as string, { except: req.sessionID });
}
