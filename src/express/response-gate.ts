import type { ServerResponse } from 'node:http';

/** What to do with a held response once the unit of work has finished. */
export type Verdict = { ok: true; dropCookie: boolean } | { ok: false; status: number };

/**
 * Holds a response's status line, headers and body inside the process until `settle` decides, so nothing
 * reaches the client before the request's transaction has committed (FIELD-NOTES 4, express-session #309).
 *
 * Installed below express-session, so express-session's own end wrapper (which writes all but the last byte
 * before saving the session) writes into the hold too. `settle(true)` runs at the first write while the
 * handler is still working (a stream): the transaction commits before the first byte and the rest flows
 * through. `settle(false)` runs at end(). A settle that fails sends a bare 5xx instead; if bytes have
 * already left, the connection is destroyed so the client sees a broken response, not a clean one.
 */
export class ResponseGate {
  /** Set by the outer end wrapper: writes from now on belong to end(), not to a stream. */
  ending = false;
  private mode: 'holding' | 'settling' | 'open' = 'holding';
  private readonly held: Array<{ kind: 'write' | 'end'; args: unknown[] }> = [];
  private flushRequested = false;
  private readonly realWriteHead: ServerResponse['writeHead'];
  private readonly realWrite: ServerResponse['write'];
  private readonly realEnd: ServerResponse['end'];
  private readonly realFlushHeaders: ServerResponse['flushHeaders'];

  constructor(
    private readonly res: ServerResponse,
    private readonly settle: (streaming: boolean) => Verdict | Promise<Verdict>,
    /** Called when a stream has to be broken after its first bytes left. */
    private readonly lateFailure: () => unknown,
  ) {
    this.realWriteHead = res.writeHead;
    this.realWrite = res.write;
    this.realEnd = res.end;
    this.realFlushHeaders = res.flushHeaders;
    const gate = this;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      return gate.writeHead(args);
    } as ServerResponse['writeHead'];
    res.write = function (this: ServerResponse, ...args: unknown[]) {
      return gate.write(args);
    } as ServerResponse['write'];
    res.end = function (this: ServerResponse, ...args: unknown[]) {
      return gate.end(args);
    } as ServerResponse['end'];
    res.flushHeaders = function (this: ServerResponse) {
      if (gate.mode === 'open') return gate.realFlushHeaders.call(res);
      gate.flushRequested = true;
      gate.start(true);
    };
  }

  get isOpen(): boolean {
    return this.mode === 'open';
  }

  private writeHead(args: unknown[]): ServerResponse {
    if (this.mode === 'open') return this.realWriteHead.apply(this.res, args as Parameters<ServerResponse['writeHead']>);
    // Record the status and headers now (later code reads res.statusCode); send them when the gate opens.
    const [status, reasonOrHeaders, maybeHeaders] = args;
    if (typeof status === 'number') this.res.statusCode = status;
    const headers = typeof reasonOrHeaders === 'string' ? maybeHeaders : reasonOrHeaders;
    if (typeof reasonOrHeaders === 'string') this.res.statusMessage = reasonOrHeaders;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.res.setHeader(String(headers[i]), headers[i + 1]);
    } else if (headers && typeof headers === 'object') {
      for (const [name, value] of Object.entries(headers)) {
        if (value !== undefined) this.res.setHeader(name, value as string);
      }
    }
    return this.res;
  }

  private write(args: unknown[]): boolean {
    if (this.mode === 'open') {
      if (this.lateFailure()) return this.breakResponse();
      return this.realWrite.apply(this.res, args as Parameters<ServerResponse['write']>);
    }
    this.held.push({ kind: 'write', args });
    if (!this.ending) this.start(true);
    return true;
  }

  private end(args: unknown[]): ServerResponse {
    if (this.mode === 'open') {
      if (this.lateFailure()) {
        this.breakResponse();
        return this.res;
      }
      return this.realEnd.apply(this.res, args as Parameters<ServerResponse['end']>);
    }
    this.held.push({ kind: 'end', args });
    this.start(false);
    return this.res;
  }

  private start(streaming: boolean): void {
    if (this.mode !== 'holding') return;
    this.mode = 'settling';
    let verdict: Verdict | Promise<Verdict>;
    try {
      verdict = this.settle(streaming);
    } catch (err) {
      verdict = { ok: false, status: 500 };
    }
    if (verdict instanceof Promise) {
      verdict.then(
        (v) => this.release(v),
        () => this.release({ ok: false, status: 500 }),
      );
    } else {
      this.release(verdict);
    }
  }

  private release(verdict: Verdict): void {
    this.mode = 'open';
    const held = this.held.splice(0);
    if (!verdict.ok) {
      this.sendFailure(verdict.status);
      return;
    }
    if (verdict.dropCookie) this.res.removeHeader('Set-Cookie');
    if (this.flushRequested) this.realFlushHeaders.call(this.res);
    for (const { kind, args } of held) {
      if (kind === 'write') this.realWrite.apply(this.res, args as Parameters<ServerResponse['write']>);
      else this.realEnd.apply(this.res, args as Parameters<ServerResponse['end']>);
    }
  }

  private sendFailure(status: number): void {
    const res = this.res;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // Nothing the handler set may suggest success: no Set-Cookie, no Location, no cache headers.
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    const body = status === 503 ? 'Service Unavailable' : status === 409 ? 'Conflict' : 'Internal Server Error';
    res.statusCode = status;
    this.realWriteHead.call(res, status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Cache-Control': 'no-store',
      ...(status === 503 ? { 'Retry-After': '1' } : {}),
    });
    (this.realEnd as (chunk: string) => ServerResponse).call(res, body);
  }

  private breakResponse(): false {
    this.res.destroy();
    return false;
  }
}
