// `npm start`: the Express example (or the Koa one with `npm start -- koa`) on an embedded PostgreSQL.
import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { startDatabase } from './database.mjs';

const which = process.argv[2] === 'koa' ? 'koa' : 'express';
const database = await startDatabase();
const { createApp, User } = await import(which === 'koa' ? './koa-app.mjs' : './express-app.mjs');
const dataSource = new DataSource({ type: 'postgres', url: database.url, entities: [User], synchronize: true });
await dataSource.initialize();

const app = createApp(dataSource);
const server = (which === 'koa' ? app.callback ? (await import('node:http')).createServer(app.callback()) : app : app)
  .listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
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
