/**
 * What an adapter does with a response once the request's unit of work has ended: send it (dropping the
 * session cookie when the session change it carries was not kept), or replace it with a bare failure.
 */
export type Verdict = { ok: true; dropCookie: boolean } | { ok: false; status: number };

export const KEEP_COOKIE: Verdict = Object.freeze({ ok: true, dropCookie: false });
export const DROP_COOKIE: Verdict = Object.freeze({ ok: true, dropCookie: true });
export const FAILED_500: Verdict = Object.freeze({ ok: false, status: 500 });

/** The status to answer for a failure: its own 409 (a session conflict) or 503 (retryable), else 500. */
export function failureStatus(error: unknown): number {
  const status = (error as { status?: unknown } | null | undefined)?.status;
  return status === 409 || status === 503 ? status : 500;
}

/** The body a bare failure is sent with. */
export function failureBody(status: number): string {
  return status === 503 ? 'Service Unavailable' : status === 409 ? 'Conflict' : 'Internal Server Error';
}
