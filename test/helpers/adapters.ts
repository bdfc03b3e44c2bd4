/**
 * The same app on Express, Koa and Fastify, for suites about the framework-neutral core: routes are written
 * once as framework-free handlers, and each adapter's app translates them. A handler returns the response
 * (status and JSON body) or throws; the framework's own error handling then answers 500.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Koa from 'koa';
import Fastify, { type FastifyInstance } from 'fastify';
import type { DataSource, EntityManager } from 'typeorm';
import { sessionStore, type TransactionOptions, type TypeormSessionError, type TypeormSessionStore } from '../../src/index.js';
import { koaSessionStore } from '../../src/koa.js';
import { fastifySessionStore } from '../../src/fastify.js';

export const adapters = ['express', 'koa', 'fastify'] as const;
export type Adapter = (typeof adapters)[number];

export interface HandlerInput {
  db: EntityManager;
  session: Record<string, unknown>;
  /** The framework's request: Express's req, Koa's ctx, Fastify's request. */
  request: unknown;
}
export type Handler = (input: HandlerInput) => Promise<{ status?: number; body?: unknown } | void> | { status?: number; body?: unknown } | void;

export interface RunningApp {
  url: string;
  store: TypeormSessionStore;
  /** What the adapter reported through onError. */
  reported: TypeormSessionError[];
  close(): Promise<void>;
}

export interface AppOptions {
  transaction?: TransactionOptions | false;
}

export async function startApp(adapter: Adapter, dataSource: DataSource, routes: Record<string, Handler>, options: AppOptions = {}): Promise<RunningApp> {
  const reported: TypeormSessionError[] = [];
  const common = { dataSource, onError: (err: TypeormSessionError) => reported.push(err), ...options };
  if (adapter === 'fastify') return fastifyApp(common, routes, reported);
  if (adapter === 'koa') return koaApp(common, routes, reported);
  return expressApp(common, routes, reported);
}

const reply = (result: { status?: number; body?: unknown } | void) => ({ status: result?.status ?? 200, body: result?.body ?? {} });

async function expressApp(common: Record<string, unknown>, routes: Record<string, Handler>, reported: TypeormSessionError[]): Promise<RunningApp> {
  const app = express();
  const middleware = sessionStore({ secret: 'test-secret', ...(common as any) });
  app.use(middleware);
  for (const [path, handler] of Object.entries(routes)) {
    app.all(path, async (req, res, next) => {
      try {
        const { status, body } = reply(await handler({ db: req.db, session: req.session as unknown as Record<string, unknown>, request: req }));
        res.status(status).json(body);
      } catch (err) {
        next(err);
      }
    });
  }
  return listen(http.createServer(app), middleware.store, reported, () => middleware.close());
}

async function koaApp(common: Record<string, unknown>, routes: Record<string, Handler>, reported: TypeormSessionError[]): Promise<RunningApp> {
  const app = new Koa();
  app.keys = ['test-key'];
  // With a listener, Koa emits instead of printing.
  app.on('error', () => undefined);
  const middleware = koaSessionStore(app, common as any);
  app.use(middleware);
  app.use(async (ctx) => {
    const handler = routes[ctx.path];
    if (!handler) return;
    const { status, body } = reply(await handler({ db: ctx.db, session: ctx.session as unknown as Record<string, unknown>, request: ctx }));
    ctx.status = status;
    ctx.body = body;
  });
  return listen(http.createServer(app.callback()), middleware.store, reported, () => middleware.close());
}

async function fastifyApp(common: Record<string, unknown>, routes: Record<string, Handler>, reported: TypeormSessionError[]): Promise<RunningApp> {
  const app: FastifyInstance = Fastify();
  await app.register(fastifySessionStore, { secret: 'test-secret', ...(common as any) });
  for (const [path, handler] of Object.entries(routes)) {
    app.all(path, async (request, res) => {
      const { status, body } = reply(await handler({ db: request.db, session: request.session as unknown as Record<string, unknown>, request }));
      return res.code(status).send(body);
    });
  }
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    store: app.sessionStore,
    reported,
    close: async () => {
      app.server.closeAllConnections();
      await app.close();
    },
  };
}

function listen(server: http.Server, store: TypeormSessionStore, reported: TypeormSessionError[], closeStore: () => Promise<void>): Promise<RunningApp> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        store,
        reported,
        close: async () => {
          server.closeAllConnections();
          await new Promise<void>((done) => server.close(() => done()));
          await closeStore();
        },
      });
    });
  });
}
