import type { EntityManager } from 'typeorm';
import type {} from 'fastify';
import type { TypeormSessionStore } from '../store/store.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * typeorm-session: the session's data, a plain object, loaded before the hooks registered after the
     * plugin run. Assigning `null` signs out (the stored session is destroyed, the cookie cleared); it then
     * reads `null`, which the read type leaves out so that handlers need no check on every access.
     */
    get session(): Record<string, any>;
    set session(value: Record<string, any> | null);
    /** typeorm-session: the session's id (what the signed cookie carries). */
    sessionId: string;
    /**
     * typeorm-session: the EntityManager of this request's transaction. Taken lazily: a request that never
     * reads it takes no connection. Absent when the plugin runs with `transaction: false`.
     */
    db: EntityManager;
    /** typeorm-session: commits the request's transaction now; later queries are rejected. */
    commit(): Promise<void>;
  }
  interface FastifyInstance {
    /** typeorm-session: the session store, for listing, revoking, pruning. */
    sessionStore: TypeormSessionStore;
  }
}
