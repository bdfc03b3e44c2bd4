// typeorm-session/koa: the Koa adapter, a separate entry so Express apps never load koa-session.
export { koaSessionStore, type KoaSessionStoreOptions, type KoaSessionStoreMiddleware } from './koa/middleware.js';
export { currentManager } from './unit-of-work/context.js';
export { withTransaction } from './unit-of-work/request-scope.js';
import './koa/augment.js';
