import type { TypeormSessionError } from './errors.js';

/** Calls the user's onError once per failure; a throwing hook is logged, never rethrown into the request. */
export function reporter(onError: ((error: TypeormSessionError) => void) | undefined, debug: (...args: unknown[]) => void) {
  return (error: TypeormSessionError) => {
    debug('%s: %s', error.code, error.message);
    try {
      onError?.(error);
    } catch (err) {
      debug('onError threw: %O', err);
    }
  };
}
