import * as crypto from 'node:crypto';

/**
 * The key a session is stored under: the SHA-256 of its id, hex. A copy of the table therefore holds no
 * usable session id (the way Rails' activerecord-session_store keys rows). It is also the opaque "handle"
 * that all(), ids() and the per-user listing expose.
 */
export function digest(sessionId: string): string {
  return oneShot ? oneShot('sha256', sessionId, 'hex') : crypto.createHash('sha256').update(sessionId).digest('hex');
}

// crypto.hash() (Node 20.12+) hashes without making a Hash object: this runs on every request with a cookie.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

/** A short, non-reversible tag for log lines, so a log never carries a session id or even a full digest. */
export function logTag(handle: string): string {
  return handle.slice(0, 8);
}

export interface SessionLike {
  cookie?: { expires?: Date | string | null; maxAge?: number | null; originalMaxAge?: number | null } | null;
  [key: string]: unknown;
}

/** When a session expires, in epoch ms: the cookie's expiry, else its maxAge, else the store's ttl. */
export function expiryOf(session: SessionLike, now: number, ttlMs: number): number {
  const cookie = session?.cookie;
  if (cookie?.expires) {
    const at = new Date(cookie.expires).getTime();
    if (Number.isFinite(at)) return at;
  }
  const maxAge = cookie?.maxAge ?? cookie?.originalMaxAge;
  if (typeof maxAge === 'number' && Number.isFinite(maxAge)) return now + maxAge;
  return now + ttlMs;
}

/**
 * Why a decoded value cannot be a session, or undefined when it can. What the store writes is a plain object
 * whose `cookie`, when present, is an object with a parseable `expires` and numeric ages; anything else came
 * from damage or from another program. Such a value must not reach a session library: express-session's
 * Cookie constructor throws on a non-object, inside its load, where nothing answers the request.
 */
export function damageOf(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object') return `it decoded to ${value === null ? 'null' : typeof value}, not an object`;
  if (Array.isArray(value)) return 'it decoded to an array, not an object';
  const cookie = (value as { cookie?: unknown }).cookie;
  if (cookie === undefined || cookie === null) return undefined;
  if (typeof cookie !== 'object' || Array.isArray(cookie)) return 'its cookie is not an object';
  const { expires, maxAge, originalMaxAge } = cookie as Record<string, unknown>;
  if (expires !== undefined && expires !== null) {
    const usable = typeof expires === 'string' || typeof expires === 'number';
    if (!usable || !Number.isFinite(new Date(expires).getTime())) return 'its cookie.expires is not a date';
  }
  for (const [name, age] of [['maxAge', maxAge], ['originalMaxAge', originalMaxAge]] as const) {
    if (age !== undefined && age !== null && typeof age !== 'number') return `its cookie.${name} is not a number`;
  }
  return undefined;
}

/**
 * Makes a loaded session's cookie say the expiry the row has. A touch() (and the absolute timeout's cap)
 * moves only `expires_at`, not the cookie stored in `data`; MemoryStore rewrites the cookie on touch, so a
 * client reading the session back expects the expiry in force there (express-session's "should reset
 * session expiration"). A browser-session cookie (no `expires`) stays one.
 */
export function showExpiryInForce(session: SessionLike, expiresAt: number): void {
  const cookie = session.cookie;
  if (!cookie || !cookie.expires) return;
  const inForce = new Date(expiresAt);
  if (cookie.expires instanceof Date) {
    if (cookie.expires.getTime() !== expiresAt) cookie.expires = inForce;
    return;
  }
  const text = inForce.toISOString();
  if (cookie.expires !== text) cookie.expires = text;
}

/** The value at a dotted path, kept only when it is a usable id (string, number or bigint). */
export function userIdOf(session: SessionLike, path: readonly string[]): string | null {
  let value: unknown = session;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return null;
    value = (value as Record<string, unknown>)[key];
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') return String(value);
  return null;
}

/**
 * What the store knew about a session when it loaded it, attached to express-session's Session object in
 * createSession(). touch() uses it to skip the database entirely inside the throttle window.
 */
export interface LoadedState {
  expiresAt: number;
  /** The row's version when loaded; a save updates only this version (see store.save). */
  version: number;
}

export const LOADED = Symbol('typeorm-session.loaded');

/** On the plain object get() returns: what createSession() then records as LOADED on the session it makes. */
export const FETCHED = Symbol('typeorm-session.fetched');
