import type { EntityManager } from 'typeorm';
import type {} from 'koa';

declare module 'koa' {
  interface DefaultContext {
    /**
     * typeorm-session: the EntityManager of this request's transaction. Taken lazily: a request that never
     * reads it takes no connection. Absent when the middleware runs with `transaction: false`.
     */
    db: EntityManager;
  }
}
