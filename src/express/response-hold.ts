import type { ServerResponse } from 'node:http';
import { responseScope } from '../unit-of-work/request-scope.js';
import { FAILED_500, failureBody, type Verdict } from '../unit-of-work/verdict.js';

/**
 * Holds a response's status line, headers and body inside the process until the request's unit of work has
 * decided, so nothing reaches the client before the transaction has committed and the session is saved
 * (express-session saves inside res.end, after the headers and all but the last byte have left: express-session #309, #538). A failed decision sends a bare 5xx instead; if bytes have already
 * left (a stream), the connection is destroyed so the client sees a broken response, not a clean one.
 *
 * The hold is four methods on Express's response prototype, installed once (prototypes.ts), that look up the
 * response's owner: responses without one, and ours once released, go straight through. Nothing is wrapped
 * per request, and a response with nothing to wait for (no transaction, session unchanged) is sent at once,
 * in one piece.
 *
 * end() before anything left: the owner settles the session and the transaction, then the response leaves.
 * write() or flushHeaders() first (a stream): the transaction settles before the first byte; end() later
 * saves the session before the last one.
 */


export interface HoldOwner {
  holdPhase: number;
  /** Calls made while settling, as [kind, a, b, c] quadruples. */
  held: unknown[] | undefined;
  flushRequested: boolean;
  sessionSettled: boolean;
  settleAtEnd(): Verdict | Promise<Verdict>;
  settleAtFirstByte(): Verdict | Promise<Verdict>;
  sessionAtStreamEnd(): Promise<void> | undefined;
  lateFailure(): unknown;
  applyCookie(verdict: Verdict & { ok: true }): void;
}

/** Nothing has left; writeHead() is only recorded. */
export const HOLDING = 0;
/** Deciding; calls are queued. */
export const SETTLING = 1;
/** Headers (and maybe bytes) have left: calls pass through; end() still saves the session. */
export const FLOWING = 2;
/** Finished: everything passes through. */
export const DONE = 3;
/** Answered with a failure: the handler's own writes are dropped. */
export const FAILED = 4;

const WRITE = 0;
const END = 1;

type Res = ServerResponse;

/** The owner of a response: the state of its request (a Koa request's scope is not one). */
function ownerOf(res: Res): HoldOwner | undefined {
  // Node's end() calls writeHead() (and write() calls end's helpers) on the same response: while the hold
  // passes a call through, the nested ones need no lookup.
  if (passing === res) return undefined;
  const scope = responseScope(res) as Partial<HoldOwner> | undefined;
  return scope !== undefined && scope.holdPhase !== undefined ? (scope as HoldOwner) : undefined;
}

/** The response whose call the hold is passing to Node right now. */
let passing: Res | undefined;

function pass(res: Res, method: Function, a: unknown, b: unknown, c: unknown): unknown {
  const outer = passing;
  passing = res;
  try {
    return method.call(res, a, b, c);
  } finally {
    passing = outer;
  }
}
type Args = [unknown?, unknown?, unknown?];

/** Installs the hold on `proto` (a prototype of responses); `parent` has the real methods. */
export function installHold(proto: Record<string, unknown>, parent: ServerResponse): void {
  proto.writeHead = function writeHead(this: Res, a?: unknown, b?: unknown, c?: unknown) {
    const owner = ownerOf(this);
    if (owner === undefined || owner.holdPhase >= FLOWING) {
      if (owner?.holdPhase === FAILED) return this;
      return (parent.writeHead as Function).call(this, a, b, c);
    }
    recordHead(this, a, b, c);
    return this;
  };

  proto.write = function write(this: Res, a?: unknown, b?: unknown, c?: unknown) {
    const owner = ownerOf(this);
    if (owner === undefined || owner.holdPhase === FLOWING || owner.holdPhase === DONE) {
      return owner === undefined ? (parent.write as Function).call(this, a, b, c) : pass(this, parent.write, a, b, c);
    }
    if (owner.holdPhase === FAILED) return false;
    if (owner.holdPhase === SETTLING) {
      owner.held!.push(WRITE, a, b, c);
      return true;
    }
    return startStream(this, owner, parent, WRITE, [a, b, c]);
  };

  proto.end = function end(this: Res, a?: unknown, b?: unknown, c?: unknown) {
    const owner = ownerOf(this);
    if (owner === undefined) return (parent.end as Function).call(this, a, b, c);
    if (owner.holdPhase === DONE) return pass(this, parent.end, a, b, c);
    if (owner.holdPhase === FAILED) return this;
    if (owner.holdPhase === SETTLING) {
      owner.held!.push(END, a, b, c);
      return this;
    }
    if (owner.holdPhase === FLOWING) return endStream(this, owner, parent, a, b, c);
    const verdict = owner.settleAtEnd();
    if (!(verdict instanceof Promise)) {
      owner.holdPhase = DONE;
      if (apply(this, owner, parent, verdict)) pass(this, parent.end, a, b, c);
      return this;
    }
    owner.holdPhase = SETTLING;
    owner.held = [END, a, b, c];
    settleLater(this, owner, parent, verdict);
    return this;
  };

  proto.flushHeaders = function flushHeaders(this: Res) {
    const owner = ownerOf(this);
    if (owner === undefined) return parent.flushHeaders.call(this);
    if (owner.holdPhase === FLOWING || owner.holdPhase === DONE) return void pass(this, parent.flushHeaders, undefined, undefined, undefined);
    if (owner.holdPhase === FAILED) return;
    owner.flushRequested = true;
    if (owner.holdPhase === HOLDING) startStream(this, owner, parent, -1, undefined);
  };
}

/** The first write or flushHeaders() while holding: the transaction settles before the first byte. */
function startStream(res: Res, owner: HoldOwner, parent: ServerResponse, kind: number, args: Args | undefined): boolean {
  const verdict = owner.settleAtFirstByte();
  if (!(verdict instanceof Promise)) {
    owner.holdPhase = FLOWING;
    if (!apply(res, owner, parent, verdict)) return false;
    if (owner.flushRequested) pass(res, parent.flushHeaders, undefined, undefined, undefined);
    return kind === WRITE ? (pass(res, parent.write, args![0], args![1], args![2]) as boolean) : true;
  }
  owner.holdPhase = SETTLING;
  owner.held = kind === WRITE ? [WRITE, args![0], args![1], args![2]] : [];
  settleLater(res, owner, parent, verdict);
  return true;
}

/** end() after the first byte: the session's last write, then the last byte (or a broken response). */
function endStream(res: Res, owner: HoldOwner, parent: ServerResponse, a: unknown, b: unknown, c: unknown): Res {
  const write = owner.sessionAtStreamEnd();
  if (write === undefined) {
    owner.holdPhase = DONE;
    finishStream(res, owner, parent, a, b, c);
    return res;
  }
  owner.holdPhase = SETTLING;
  owner.held = [];
  write.then(() => {
    owner.holdPhase = DONE;
    finishStream(res, owner, parent, a, b, c);
  });
  return res;
}

function finishStream(res: Res, owner: HoldOwner, parent: ServerResponse, a: unknown, b: unknown, c: unknown): void {
  // Bytes have left: a failure can no longer be answered, so the client must see the response break.
  if (owner.lateFailure() !== undefined) res.destroy();
  else pass(res, parent.end, a, b, c);
}

function settleLater(res: Res, owner: HoldOwner, parent: ServerResponse, verdict: Promise<Verdict>): void {
  verdict.then(
    (v) => release(res, owner, parent, v),
    () => release(res, owner, parent, FAILED_500),
  );
}

/** The decision is in: send what was held, or the failure. */
function release(res: Res, owner: HoldOwner, parent: ServerResponse, verdict: Verdict): void {
  const held = owner.held ?? [];
  owner.held = undefined;
  owner.holdPhase = FLOWING;
  if (!apply(res, owner, parent, verdict)) return;
  if (owner.flushRequested) pass(res, parent.flushHeaders, undefined, undefined, undefined);
  for (let i = 0; i < held.length; i += 4) {
    const [kind, a, b, c] = [held[i], held[i + 1], held[i + 2], held[i + 3]];
    if (kind === WRITE) {
      pass(res, parent.write, a, b, c);
    } else if (owner.sessionSettled) {
      owner.holdPhase = DONE;
      pass(res, parent.end, a, b, c);
    } else {
      // A stream that ended while its first byte was being settled: the session is saved now.
      endStream(res, owner, parent, a, b, c);
    }
  }
}

/** Applies a verdict before the headers leave; false when a failure was sent instead. */
function apply(res: Res, owner: HoldOwner, parent: ServerResponse, verdict: Verdict): boolean {
  if (!verdict.ok) {
    owner.holdPhase = FAILED;
    sendFailure(res, parent, verdict.status);
    return false;
  }
  owner.applyCookie(verdict);
  return true;
}

/** Nothing the handler set may suggest success: no Set-Cookie, no Location, no cache headers. */
function sendFailure(res: Res, parent: ServerResponse, status: number): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  const body = failureBody(status);
  res.statusCode = status;
  (parent.writeHead as Function).call(res, status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    ...(status === 503 ? { 'Retry-After': '1' } : {}),
  });
  pass(res, parent.end, body, undefined, undefined);
}

/** writeHead() while holding: the status and headers are recorded now (later code reads them) and sent later. */
function recordHead(res: Res, status: unknown, reasonOrHeaders: unknown, maybeHeaders: unknown): void {
  if (typeof status === 'number') res.statusCode = status;
  const headers = typeof reasonOrHeaders === 'string' ? maybeHeaders : reasonOrHeaders;
  if (typeof reasonOrHeaders === 'string') res.statusMessage = reasonOrHeaders;
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(String(headers[i]), headers[i + 1]);
  } else if (headers && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers)) {
      if (value !== undefined) res.setHeader(name, value as string);
    }
  }
}
