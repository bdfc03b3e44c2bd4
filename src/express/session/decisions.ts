/**
 * express-session's rules for the end of a request, as named decisions (express-session's own index.js
 * names them the same way). Each reads what the request knows of its session; none has side effects.
 */

/** What a request knows of its session when it decides. */
export interface SessionFacts {
  /** The id the request's cookie carried with a valid signature, if any. */
  readonly cookieId: string | undefined;
  /** The id the session had when it was loaded or first made. */
  readonly originalId: string | undefined;
  /** Its content (JSON without the cookie) then. */
  readonly originalContent: string | undefined;
  /** The content saved during this request (or, without `resave`, the content loaded), if any. */
  readonly savedContent: string | undefined;
}

export interface SessionRules {
  readonly saveUninitialized: boolean;
  readonly rolling: boolean;
  readonly unsetDestroy: boolean;
}

/** The session differs from what the request started with (another id, or other content). */
export function isModified(facts: SessionFacts, session: { readonly id: string }, content: string): boolean {
  return facts.originalId !== session.id || facts.originalContent !== content;
}

/**
 * Whether the session is written at the end: a new session only once modified (unless saveUninitialized);
 * any other only when its content differs from what this request saved or loaded.
 */
export function shouldSave(facts: SessionFacts, rules: SessionRules, id: string, session: { readonly id: string }, content: string): boolean {
  if (!rules.saveUninitialized && facts.savedContent === undefined && facts.cookieId !== id) {
    return isModified(facts, session, content);
  }
  return !(facts.originalId === session.id && facts.savedContent === content);
}

/** Whether an unchanged session that came with the request has its expiry extended (the store throttles). */
export function shouldTouch(facts: SessionFacts, id: string, touchDue: boolean): boolean {
  return facts.cookieId === id && touchDue;
}

/** Whether `req.session = null` (or `delete`) removes the stored session: only with `unset: 'destroy'`. */
export function shouldDestroy(rules: SessionRules): boolean {
  return rules.unsetDestroy;
}

/**
 * Whether the response carries the session cookie (`id` is the request's session id): a new session when
 * it is saved; a known one when `rolling`, or when it has an expiry and changed (the new expiry must reach
 * the browser).
 */
export function shouldSetCookie(
  facts: SessionFacts,
  rules: SessionRules,
  id: string,
  session: { readonly id: string; readonly cookie: { readonly expires: unknown } },
  content: string,
): boolean {
  if (facts.cookieId !== id) return rules.saveUninitialized || isModified(facts, session, content);
  return rules.rolling || (session.cookie.expires != null && isModified(facts, session, content));
}
