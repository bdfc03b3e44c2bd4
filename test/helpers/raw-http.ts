import http from 'node:http';

export interface RawResponse {
  res: http.IncomingMessage;
  /** Resolves with the next body chunk (the stream is paused again afterwards); null when the body ended. */
  nextChunk(): Promise<string | null>;
  /** Reads the rest of the body; `complete` is false when the connection broke before the end of the body. */
  rest(): Promise<{ body: string; complete: boolean; error?: Error }>;
}

/**
 * Sends a request with Node's http client and resolves as soon as the status line and headers arrive, without
 * reading the body, so the test can look at the database at that exact moment.
 */
export function rawRequest(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        res.pause();
        let error: Error | undefined;
        res.on('error', (err) => (error = err));
        const closed = new Promise<void>((r) => res.once('close', () => r()));
        let ended = false;
        res.once('end', () => (ended = true));
        resolve({
          res,
          nextChunk: () =>
            new Promise((resolveChunk) => {
              if (ended || res.destroyed) return resolveChunk(null);
              const onData = (chunk: Buffer) => {
                res.pause();
                cleanup();
                resolveChunk(chunk.toString());
              };
              const onEnd = () => {
                cleanup();
                resolveChunk(null);
              };
              const cleanup = () => {
                res.off('data', onData);
                res.off('end', onEnd);
                res.off('close', onEnd);
              };
              res.on('data', onData);
              res.once('end', onEnd);
              res.once('close', onEnd);
              res.resume();
            }),
          rest: async () => {
            let body = '';
            res.on('data', (chunk: Buffer) => (body += chunk.toString()));
            res.resume();
            await closed;
            return { body, complete: res.complete && ended, error };
          },
        });
      },
    );
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}
