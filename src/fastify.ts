// typeorm-session/fastify: the Fastify adapter, a separate entry so other apps never load its types.
import './fastify/augment.js';
export { fastifySessionStore, type FastifySessionStoreOptions } from './fastify/plugin.js';
export type { FastifySessionCookieOptions } from './fastify/cookie-options.js';
export { currentManager } from './unit-of-work/context.js';
export { withTransaction } from './unit-of-work/request-scope.js';
export { afterCommit, afterRollback, rollbackOnly } from './unit-of-work/outcome.js';
export { signIn, signOut, signOutEverywhere, signOutOtherSessions } from './fastify/helpers.js';
export type { SessionInfo, StoreStats } from './store/store.js';
