/**
 * What signIn() records about the sign-in, in the session's metadata field (listByUser() shows it), and the
 * question sensitive actions ask of it: did this session sign in within the last `ms`?
 */
export function signInMetadata(base: Record<string, unknown>, now: number): Record<string, unknown> {
  // Always the store's clock, also over metadata the app passed: signedInWithin() relies on it.
  return { ...base, signedInAt: new Date(now).toISOString() };
}

export function signedInRecently(session: unknown, metadataField: string, now: number, ms: number): boolean {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new TypeError(`typeorm-session: signedInWithin() takes a number of milliseconds >= 0, got ${String(ms)}`);
  }
  const metadata = (session as Record<string, unknown> | null | undefined)?.[metadataField];
  const at = (metadata as { signedInAt?: unknown } | null | undefined)?.signedInAt;
  if (typeof at !== 'string') return false;
  const time = Date.parse(at);
  // A time ahead of this clock (another server's, slightly fast) is a sign-in just now.
  return Number.isFinite(time) && now - time <= ms;
}
