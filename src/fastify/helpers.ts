import type { IncomingMessage } from 'node:http';
import { NoRequestScopeError } from '../errors.js';
import { getPath, setPath } from '../session-fields.js';
import { requestScope } from '../unit-of-work/request-scope.js';
import { FastifyRequestState, type SessionData } from './request-state.js';

type Request = { raw: IncomingMessage; session: SessionData | null; headers: IncomingMessage['headers']; ip?: string };

function control(request: Request): { state: FastifyRequestState; session: SessionData } {
  const state = request && typeof request === 'object' ? requestScope(request.raw) : undefined;
  const session = request?.session;
  if (!(state instanceof FastifyRequestState) || session == null) {
    throw new NoRequestScopeError('typeorm-session: sign-in helpers need a request that went through fastifySessionStore');
  }
  return { state, session };
}

/**
 * Signs a user in: a new session id (so an id planted before login is worthless: session fixation; the old
 * session is destroyed in the request's transaction), the fields named in `keep` carried over, the user id
 * and the device metadata recorded.
 */
export async function signIn(
  request: Request,
  userId: string | number,
  options: { keep?: string[]; metadata?: Record<string, unknown> } = {},
): Promise<void> {
  const { state, session } = control(request);
  const kept = Object.fromEntries((options.keep ?? []).filter((k) => k in session).map((k) => [k, session[k]]));
  await state.regenerate();
  const fresh = request.session!;
  Object.assign(fresh, kept);
  const { userIdPath, metadataField } = state.config.store.sessionFields;
  setPath(fresh, userIdPath, userId);
  fresh[metadataField] = options.metadata ?? {
    userAgent: request.headers['user-agent'] ?? null,
    ip: request.ip ?? null,
    signedInAt: new Date().toISOString(),
  };
}

/** Signs out: the session is destroyed and its cookie cleared when the request ends (and commits). */
export function signOut(request: Request): void {
  control(request);
  request.session = null;
}

/** Signs the current user out of every session, this one included. Returns how many were revoked. */
export async function signOutEverywhere(request: Request): Promise<number> {
  const { state, session } = control(request);
  const userId = getPath(session, state.config.store.sessionFields.userIdPath);
  if (userId === undefined || userId === null) return 0;
  const count = await state.config.store.destroyByUser(userId as string);
  request.session = null;
  return count;
}

/** Signs the current user out of all other sessions ("sign out other devices"). Returns how many. */
export async function signOutOtherSessions(request: Request): Promise<number> {
  const { state, session } = control(request);
  const userId = getPath(session, state.config.store.sessionFields.userIdPath);
  if (userId === undefined || userId === null || state.sessionId === undefined) return 0;
  return state.config.store.destroyByUser(userId as string, { except: state.sessionId });
}
