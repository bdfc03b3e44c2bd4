// CSRF protection for every form that changes something: a random token kept in the session and put in
// each form; a POST is accepted only when it sends back the token of the session its cookie names. A page
// on another origin can make the browser send the cookie but cannot read the token (same-origin policy).
//
// Written here rather than taken from a package: it is a dozen lines over the session the app already
// has, it must work the same on Express and Koa (csrf-sync and its kin are Express middleware), and an
// example people copy is clearer when the whole mechanism is on one screen.
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const CSRF_FIELD = 'csrf';

/** The session's token, made on first use. Rendering a form on a fresh visit therefore starts a session. */
export function csrfToken(session) {
  if (typeof session.csrfToken !== 'string') session.csrfToken = randomBytes(32).toString('base64url');
  return session.csrfToken;
}

/** Whether a submitted form carries this session's token. Constant time in the token's content. */
export function csrfTokenMatches(session, form) {
  const expected = session?.csrfToken;
  const submitted = form?.[CSRF_FIELD];
  if (typeof expected !== 'string' || typeof submitted !== 'string') return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(submitted);
  // The length is not secret (every token has the same one); timingSafeEqual throws on different lengths.
  return a.length === b.length && timingSafeEqual(a, b);
}
