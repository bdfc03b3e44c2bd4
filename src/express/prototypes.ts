import { IncomingMessage, ServerResponse } from 'node:http';
import type { EventEmitter } from 'node:events';
import { bindListeners } from '../unit-of-work/context.js';
import { equipPrototype, requestScope, slotsOf, socketOf, type RequestSocket } from '../unit-of-work/request-scope.js';
import { ExpressRequestState } from './request-state.js';
import { installHold } from './response-hold.js';

/**
 * What the middleware adds to requests and responses, defined once on Express's own request and response
 * objects (below every app's `app.request`/`app.response`, so sub-apps, which swap those, keep them):
 *
 * - `req.session`, `req.sessionID`, `req.sessionStore`: accessors that make the session on first read;
 * - `req.db`, `req.commit()`;
 * - `req.emit`: runs the request's listeners (body parsers) inside its async context;
 * - `res.writeHead/write/end/flushHeaders`: the hold (response-hold.ts).
 *
 * Each reads the request's state through one symbol and does nothing else for requests of other apps or
 * other middleware. Defining these on each request instead would cost closures and shape changes on every
 * request, which is most of what a route that never touches the database pays.
 */

type Self = Record<string, unknown>;

function stateOf(self: unknown): ExpressRequestState | undefined {
  const state = requestScope(self);
  return state instanceof ExpressRequestState ? state : undefined;
}

/** An own data property, for requests this middleware does not serve (another session middleware's req.session). */
function setOwn(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * True when another session middleware gave `req` its session before ours ran. Its assignment went through
 * our accessor's setter, which noted it on the socket (reading the socket is cheap; asking the request for an
 * own property is a slow lookup on every request).
 */
export function hasForeignSession(req: IncomingMessage, socket: RequestSocket | undefined): boolean {
  return socket !== undefined && slotsOf(socket).foreignSession === req;
}

function equipRequest(proto: object): void {
  Object.defineProperty(proto, 'session', {
    configurable: true,
    enumerable: false,
    get(this: Self) {
      return stateOf(this)?.currentSession();
    },
    set(this: Self, value: unknown) {
      const state = stateOf(this);
      if (state) return state.assignSession(value as never);
      setOwn(this, 'session', value);
      const socket = socketOf(this);
      if (socket) slotsOf(socket).foreignSession = this;
    },
  });
  Object.defineProperty(proto, 'sessionID', {
    configurable: true,
    enumerable: false,
    get(this: Self) {
      return stateOf(this)?.currentSessionId();
    },
    set(this: Self, value: unknown) {
      const state = stateOf(this);
      if (state) state.sessionId = value as string;
      else setOwn(this, 'sessionID', value);
    },
  });
  Object.defineProperty(proto, 'sessionStore', {
    configurable: true,
    enumerable: false,
    get(this: Self) {
      const state = stateOf(this);
      return state === undefined ? undefined : (state.foreignStore ?? state.config.store);
    },
    set(this: Self, value: unknown) {
      const state = stateOf(this);
      if (state) state.foreignStore = value;
      else setOwn(this, 'sessionStore', value);
    },
  });
  equipPrototype(proto, requestScope);
  // Once the response is complete, listeners (Node's own, added as it finishes) need no frame; nor do those
  // of a request without a transaction (`transaction: false`), which runs in none: a frame there would only
  // switch on AsyncLocalStorage, and with it async_hooks for the whole process, for nothing.
  bindListeners(proto as EventEmitter, (self: unknown) => {
    const scope = requestScope(self);
    return scope === undefined || !scope.options.transactional || scope.answered() ? undefined : scope.root;
  });
}

/** Express's own request (or response) object: the last prototype before Node's. */
function expressBase(self: object, node: object): object | undefined {
  let proto = Object.getPrototypeOf(self) as object | null;
  if (proto === node) return undefined;
  while (proto !== null) {
    const next = Object.getPrototypeOf(proto) as object | null;
    if (next === node) return proto;
    proto = next;
  }
  return undefined;
}

export interface Equipped {
  /** Express 4 (its request still has the param() that Express 5 removed): async handlers need forwarding. */
  express4: boolean;
}

// Per prototype seen (an app's app.request, or Express's own request object): what was done for it.
const seen = new WeakMap<object, Equipped>();
const PLAIN: Equipped = { express4: false };

// Requests served without Express (a plain http server calling the middleware) get prototypes of ours.
let plainRequest: object | undefined;
let plainResponse: object | undefined;

function equipBase(req: IncomingMessage, res: ServerResponse): Equipped {
  const requestBase = expressBase(req, IncomingMessage.prototype);
  const responseBase = expressBase(res, ServerResponse.prototype);
  if (requestBase === undefined || responseBase === undefined) return PLAIN;
  let equipped = seen.get(requestBase);
  if (!equipped) {
    equipRequest(requestBase);
    installHold(responseBase as Record<string, unknown>, Object.getPrototypeOf(responseBase) as ServerResponse);
    equipped = { express4: typeof (requestBase as { param?: unknown }).param === 'function' };
    seen.set(requestBase, equipped);
  }
  return equipped;
}

/**
 * Gives `req` and `res` what the middleware needs. Returns what is known of the app (undefined when `req`
 * already had a session from a middleware mounted before ours). Cheap after the first request of an app:
 * one WeakMap lookup.
 */
export function equip(req: IncomingMessage, res: ServerResponse): Equipped | undefined {
  const appRequest = Object.getPrototypeOf(req) as object;
  let equipped = seen.get(appRequest);
  if (equipped === undefined) {
    // Before the accessors exist, another session middleware's req.session is a plain own property.
    if (Object.prototype.hasOwnProperty.call(req, 'session')) return undefined;
    equipped = equipBase(req, res);
    if (equipped !== PLAIN) seen.set(appRequest, equipped);
  }
  if (equipped === PLAIN) {
    if (plainRequest === undefined) {
      plainRequest = Object.create(IncomingMessage.prototype) as object;
      equipRequest(plainRequest);
      plainResponse = Object.create(ServerResponse.prototype) as object;
      installHold(plainResponse as Record<string, unknown>, ServerResponse.prototype);
    }
    Object.setPrototypeOf(req, plainRequest);
    Object.setPrototypeOf(res, plainResponse!);
  }
  return equipped;
}

