/**
 * Express 4 ignores the promise an async handler returns: a rejection is dropped and the request hangs
 * (Express 4 drops the rejection of an async handler, and the request hangs). For the app our middleware is mounted on (never globally), this wraps each handler so a
 * rejection goes to next(err), as Express 5 does. Express 5 apps are left untouched.
 */
type Handler = ((...args: any[]) => unknown) & { __typeormSessionWrapped?: true };
interface Layer {
  handle: Handler & { stack?: Layer[] };
  route?: { stack: Layer[] };
}

const seen = new WeakMap<Layer[], number>();

function wrap(handle: Handler): Handler {
  if (handle.__typeormSessionWrapped || handle.length > 4) return handle;
  const isErrorHandler = handle.length === 4;
  const wrapped = function (this: unknown, ...args: unknown[]) {
    const result = handle.apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      const next = args[isErrorHandler ? 3 : 2] as (err?: unknown) => void;
      (result as Promise<unknown>).then(undefined, (err) => next(err ?? new Error('Rejected with no reason')));
    }
    return result;
  } as Handler;
  // Express tells error handlers from others by their declared arity.
  Object.defineProperty(wrapped, 'length', { value: handle.length });
  Object.defineProperty(wrapped, 'name', { value: handle.name });
  wrapped.__typeormSessionWrapped = true;
  return wrapped;
}

function patchStack(stack: Layer[] | undefined): void {
  if (!stack || seen.get(stack) === stack.length) return;
  for (const layer of stack) {
    if (layer.route) patchStack(layer.route.stack);
    else if (Array.isArray(layer.handle?.stack)) patchStack(layer.handle.stack);
    else if (typeof layer.handle === 'function') layer.handle = wrap(layer.handle);
  }
  seen.set(stack, stack.length);
}

/** Patches the Express 4 app serving `req`, once per change of its router's size. */
export function forwardAsyncErrors(req: { app?: { _router?: { stack?: Layer[] } } }): void {
  patchStack(req.app?._router?.stack);
}
