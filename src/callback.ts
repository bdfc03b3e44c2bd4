/**
 * Express-session calls store methods with a callback; application code prefers promises. Each public store
 * method runs as a promise and goes through here: with a callback it is called exactly once, on a later tick,
 * so a callback that throws surfaces as an uncaught exception instead of being called a second time from
 * the promise's rejection path; without one the promise is returned.
 */
export type Callback<T> = (err: any, result?: T) => void;

export function settle<T>(work: Promise<T>, callback: Callback<T> | undefined): Promise<T> | undefined {
  if (typeof callback !== 'function') return work;
  work.then(
    (value) => process.nextTick(callback, null, value),
    (err) => process.nextTick(callback, err),
  );
  return undefined;
}
