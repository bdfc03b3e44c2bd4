import { AsyncLocalStorage } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';
import type { EntityManager } from 'typeorm';
import { NoRequestScopeError } from '../errors.js';

/**
 * What code far from the request needs of the request's scope (request-scope.ts makes every frame; this
 * module only stores them, so it does not import that one).
 */
export interface FrameScope {
  readonly options: { readonly transactional: boolean };
  readonly unitOfWork: { readonly closed: boolean; readonly manager: EntityManager };
}

/**
 * The request scope visible to code far from the request object. Each request (and each nested scope) runs
 * with its own store object, never a shared mutable stack, so concurrent branches of one request cannot see
 * each other's state (typeorm-transactional's shared stack let Promise.all siblings run queries on each other's connections).
 */
export interface ScopeFrame {
  readonly scope: FrameScope;
  /** Nested scopes opened inside this frame run one at a time, in call order (unset until the first). */
  queue: Promise<void> | undefined;
}

const storage = new AsyncLocalStorage<ScopeFrame>();

export function runInFrame<T>(frame: ScopeFrame, fn: () => T): T {
  return storage.run(frame, fn);
}

/** Runs `fn` outside every request's frame (currentManager() then finds none). */
export function outsideFrames<T>(fn: () => T): T {
  return storage.exit(fn);
}

export function currentFrame(): ScopeFrame | undefined {
  return storage.getStore();
}

/** The EntityManager of the current request's transaction. Throws outside a request, or after it finished. */
export function currentManager(): EntityManager {
  const frame = storage.getStore();
  if (!frame || !frame.scope.options.transactional) {
    throw new NoRequestScopeError(
      'typeorm-session: currentManager() was called outside a request scope (is the sessionStore middleware mounted, ' +
        'and is this code running inside a request?)',
    );
  }
  if (frame.scope.unitOfWork.closed) {
    throw new NoRequestScopeError(
      'typeorm-session: currentManager() was called after the request that started this code had finished ' +
        '(from a timer or a promise left running?)',
    );
  }
  return frame.scope.unitOfWork.manager;
}

/**
 * Runs listeners added to a request inside its frame. Body parsers read the request through 'data' and 'end'
 * listeners, which Node runs in the socket's async context; without this, code after a body parser would
 * lose the request scope. Defined on a prototype (Express's request) or one emitter (Koa's ctx.req).
 *
 * Only on() and its aliases: once() goes through on() with Node's own wrapper, which is left as it is, so
 * removeListener() still finds it (a second wrapper would hide it).
 */
export function bindListeners(target: EventEmitter, frameOf: (emitter: any) => ScopeFrame | undefined): void {
  for (const method of ['on', 'addListener', 'prependListener'] as const) {
    const original = target[method];
    target[method] = function (this: EventEmitter, event: string | symbol, listener: (...args: any[]) => void) {
      const frame = typeof listener === 'function' && !('listener' in listener) ? frameOf(this) : undefined;
      if (frame === undefined) return original.call(this, event, listener);
      const bound = function (this: unknown, ...args: unknown[]) {
        return storage.run(frame, () => listener.apply(this, args));
      };
      // removeListener(listener) matches wrappers through their `listener` property, as it does for once().
      (bound as { listener?: unknown }).listener = listener;
      return original.call(this, event, bound);
    } as EventEmitter['on'];
  }
}

/** Makes one emitter (Koa's ctx.req) run its listeners inside `frame`. */
export function bindEmitter(emitter: EventEmitter, frame: ScopeFrame): void {
  bindListeners(emitter, () => frame);
}
