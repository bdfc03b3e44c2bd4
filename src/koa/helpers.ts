import { NoRequestScopeError } from '../errors.js';
import { getPath, setPath } from '../session-fields.js';
import { signedInRecently, signInMetadata } from '../sign-in-record.js';
import type { TypeormSessionStore } from '../store/store.js';

/** What koaSessionStore leaves on each context for these helpers. */
export const KOA_CONTROL = Symbol('typeorm-session.koa-control');

export interface KoaSessionControl {
  store: TypeormSessionStore;
  /** The key of the session this request loaded, if any. */
  currentKey(): string | undefined;
}

type Ctx = { session?: any; get(field: string): string; ip?: string; [KOA_CONTROL]?: KoaSessionControl };

function control(ctx: Ctx): KoaSessionControl & { session: any } {
  const found = ctx[KOA_CONTROL];
  if (!found || !ctx.session) {
    throw new NoRequestScopeError('typeorm-session: sign-in helpers need a context that went through koaSessionStore()');
  }
  return { ...found, session: ctx.session };
}

/**
 * Signs a user in: koa-session's regenerate() (a new key; the old session is destroyed), the fields named
 * in `keep` carried over, the user id and the device metadata recorded.
 */
export async function signIn(
  ctx: Ctx,
  userId: string | number,
  options: { keep?: string[]; metadata?: Record<string, unknown> } = {},
): Promise<void> {
  const { store, session } = control(ctx);
  const kept = Object.fromEntries((options.keep ?? []).filter((k) => k in session).map((k) => [k, session[k]]));
  await session.regenerate();
  Object.assign(ctx.session, kept);
  const { userIdPath, metadataField } = store.sessionFields;
  setPath(ctx.session, userIdPath, userId);
  ctx.session[metadataField] = signInMetadata(
    options.metadata ?? { userAgent: ctx.get('user-agent') || null, ip: ctx.ip ?? null },
    store.currentTime(),
  );
}

/** Whether this context's session signed in (signIn()) within the last `ms` milliseconds. */
export function signedInWithin(ctx: Ctx, ms: number): boolean {
  const { store, session } = control(ctx);
  return signedInRecently(session, store.sessionFields.metadataField, store.currentTime(), ms);
}

/** Signs out: koa-session destroys the session and clears its cookie. */
export function signOut(ctx: Ctx): void {
  control(ctx);
  ctx.session = null;
}

/** Signs the current user out of every session, this one included. Returns how many were revoked. */
export async function signOutEverywhere(ctx: Ctx): Promise<number> {
  const { store, session } = control(ctx);
  const userId = getPath(session, store.sessionFields.userIdPath);
  if (userId === undefined || userId === null) return 0;
  const count = await store.destroyByUser(userId as string);
  ctx.session = null;
  return count;
}

/** Signs the current user out of all other sessions. Returns how many were revoked. */
export async function signOutOtherSessions(ctx: Ctx): Promise<number> {
  const { store, session, currentKey } = control(ctx);
  const userId = getPath(session, store.sessionFields.userIdPath);
  const key = currentKey();
  if (userId === undefined || userId === null || !key) return 0;
  return store.destroyByUser(userId as string, { except: key });
}
