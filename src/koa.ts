// typeorm-session/koa: the Koa adapter, a separate entry so Express apps never load koa-session.
export { koaSessionStore, type KoaSessionStoreOptions, type KoaSessionStoreMiddleware } from './koa/middleware.js';
export { currentManager } from './unit-of-work/context.js';
export { withTransaction } from './unit-of-work/request-scope.js';
export { afterCommit, afterRollback, rollbackOnly } from './unit-of-work/outcome.js';
export { signIn, signOut, signOutEverywhere, signOutOtherSessions, signedInWithin } from './koa/helpers.js';
export type { SessionInfo, StoreStats } from './store/store.js';
import './koa/augment.js';
