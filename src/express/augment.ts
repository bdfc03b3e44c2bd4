import type { EntityManager } from 'typeorm';

declare module 'http' {
  interface IncomingMessage {
    /**
     * typeorm-session: the EntityManager of this request's transaction. Taken lazily: a request that never
     * reads it takes no connection. Absent when the middleware runs with `transaction: false`.
     */
    db: EntityManager;
    /** typeorm-session: commits the request's transaction now (before streaming a response). */
    commit(): Promise<void>;
  }
}
