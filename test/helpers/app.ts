import express from 'express';
import type { DataSource } from 'typeorm';
import { sessionStore, type SessionStoreOptions } from '../../src/index.js';

export { express };

/** An Express app with the middleware mounted; `routes` adds the test's own routes after it. */
export function makeApp(
  dataSource: DataSource,
  routes: (app: express.Express) => void,
  options: Partial<SessionStoreOptions> = {},
) {
  const app = express();
  const middleware = sessionStore({ dataSource, secret: 'test-secret', ...options });
  app.use(middleware);
  routes(app);
  return { app, middleware, store: middleware.store };
}
