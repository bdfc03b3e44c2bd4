import type { ServerResponse } from 'node:http';
import type { TypeormSessionError } from '../errors.js';
import type { RequestScope } from './request-scope.js';

/** What the Express and Koa adapters both do around a request's unit of work. */

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

/**
 * A client that disconnects before the response is complete: roll back at once, which also fences the
 * handler's remaining queries (the handler keeps running after an abort; Node does not stop it). 'close' fires in
 * every case, 'finish' only on success, so `writableFinished` tells them apart.
 */
export function rollBackOnClientAbort(
  res: ServerResponse,
  scope: RequestScope,
  responseUnderWay: () => boolean,
  debug: (...args: unknown[]) => void,
): void {
  res.once('close', () => {
    if (res.writableFinished || responseUnderWay()) return;
    // Nothing of this request may persist, the session it may still save on its way out included.
    scope.failed = true;
    scope.unitOfWork.finish(false).catch((err) => debug('rollback after client abort failed: %O', err));
  });
}
