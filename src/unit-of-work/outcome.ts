import { NoRequestScopeError } from '../errors.js';
import type { OutcomeHook } from './outcome-hooks.js';
import { requestFrame, type RequestScope } from './request-scope.js';

/** What code running inside a request (a handler, a service it calls) says about the request's outcome. */

function transactionalScope(caller: string): RequestScope {
  const scope = requestFrame()?.scope;
  if (scope === undefined || !scope.options.transactional) {
    throw new NoRequestScopeError(
      `typeorm-session: ${caller} was called outside a request scope (is the middleware mounted with a transaction, ` +
        'and is this code running inside a request?)',
    );
  }
  if (scope.unitOfWork.closed) {
    throw new NoRequestScopeError(`typeorm-session: ${caller} was called after the request's transaction had ended`);
  }
  return scope;
}

/**
 * Runs `hook` once the request's transaction has committed: never if it rolls back or its COMMIT fails. A
 * request that did not use the database counts as committed when it would have committed. Hooks run in
 * registration order, outside the transaction, and the response does not wait for them; a failing hook is
 * reported through `onError` and changes neither the response nor the other hooks.
 */
export function afterCommit(hook: OutcomeHook): void {
  if (typeof hook !== 'function') throw new TypeError('typeorm-session: afterCommit() takes a function');
  transactionalScope('afterCommit()').addOutcomeHook('commit', hook);
}

/** Runs `hook` once the request's transaction has rolled back (or the request ended without committing). */
export function afterRollback(hook: OutcomeHook): void {
  if (typeof hook !== 'function') throw new TypeError('typeorm-session: afterRollback() takes a function');
  transactionalScope('afterRollback()').addOutcomeHook('rollback', hook);
}

/**
 * Marks the request's transaction rollback-only: it rolls back, and its session change is not saved,
 * whatever the response's status (a GraphQL error answered with 200, an error page rendered with 200).
 */
export function rollbackOnly(): void {
  transactionalScope('rollbackOnly()').rollbackOnly = true;
}
