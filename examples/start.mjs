// `npm start`: the Express example, or the Koa one with `npm start -- koa`, on an embedded PostgreSQL
// (or DATABASE_URL when set). Environment:
//   PORT            port on 127.0.0.1 (default 3000; 0 picks a free one)
//   SESSION_SECRET  signs session cookies; unset, a random one is made for this process, with a warning
//   TRUST_PROXY=1   behind one reverse proxy (X-Forwarded-For/-Proto): client addresses and https from it
import 'reflect-metadata';
import { createServer } from 'node:http';
import { DataSource } from 'typeorm';
import { startDatabase } from './database.mjs';
import { SqlOnlyLogger } from './shared/logging.mjs';
import { sessionSecret } from './shared/secret.mjs';

const which = process.argv[2] === 'koa' ? 'koa' : 'express';
const secret = sessionSecret();
const database = await startDatabase();
const { createApp, entities } = await import(which === 'koa' ? './koa-app.mjs' : './express-app.mjs');
const dataSource = new DataSource({
  type: 'postgres',
  url: database.url,
  entities,
  synchronize: true,
  // TypeORM's loggers print statements' parameters; this one never does (see shared/logging.mjs).
  logger: new SqlOnlyLogger(),
});
await dataSource.initialize();

const app = createApp(dataSource, { secret, trustProxy: process.env.TRUST_PROXY === '1' });
const server = createServer(which === 'koa' ? app.callback() : app);
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`typeorm-session ${which} example: open http://127.0.0.1:${server.address().port}/`);
  console.log('Create an account, sign in from a second browser, then see "Where you\'re signed in". Ctrl-C stops it.');
});

server.on('error', async (err) => {
  console.error(`${err.message}: set PORT to another port`);
  await shutdown(1);
});

async function shutdown(code = 0) {
  server.close();
  await dataSource.destroy();
  await database.stop();
  process.exit(code);
}
process.on('SIGINT', () => shutdown());
process.on('SIGTERM', () => shutdown());
