// `npm start`: the Express example, or the Koa one with `npm start -- koa`, on an embedded PostgreSQL
// (or DATABASE_URL when set). PORT chooses the port (default 3000; 0 picks a free one).
import 'reflect-metadata';
import { createServer } from 'node:http';
import { DataSource } from 'typeorm';
import { startDatabase } from './database.mjs';

const which = process.argv[2] === 'koa' ? 'koa' : 'express';
const database = await startDatabase();
const { createApp, User } = await import(which === 'koa' ? './koa-app.mjs' : './express-app.mjs');
const dataSource = new DataSource({ type: 'postgres', url: database.url, entities: [User], synchronize: true });
await dataSource.initialize();

const app = createApp(dataSource);
const server = createServer(which === 'koa' ? app.callback() : app);
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`typeorm-session ${which} example: open http://127.0.0.1:${server.address().port}/`);
  console.log('Register, log in, log out. Ctrl-C stops the server and the database.');
});

async function shutdown() {
  server.close();
  await dataSource.destroy();
  await database.stop();
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
