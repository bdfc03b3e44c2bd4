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

/** Connections of one database as PostgreSQL sees them, excluding the asking one. */
export async function connectionStates(dataSource: DataSource): Promise<Array<{ state: string }>> {
  return dataSource.query(
    `SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
  );
}

/** The pg pool behind a TypeORM postgres DataSource. */
export function pool(dataSource: DataSource): { totalCount: number; idleCount: number; waitingCount: number } {
  return (dataSource.driver as unknown as { master: any }).master;
}
