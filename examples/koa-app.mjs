// The example on Koa: the same pages and actions as the Express app (shared/routes.mjs) behind
// koaSessionStore(). Koa answers after the middleware chain, so the commit always precedes the response.
import Koa from 'koa';
import { koaSessionStore, signIn, signOut, signOutEverywhere, signOutOtherSessions } from 'typeorm-session/koa';
import { readForm } from './shared/form.mjs';
import { securityHeaders } from './shared/headers.mjs';
import { stylesheet } from './shared/pages.mjs';
import { createRoutes, errorResponse, notFound } from './shared/routes.mjs';

export { entities } from './shared/entities.mjs';

const FRAMEWORK = 'Koa';

/** The same options as the Express app's createApp (see express-app.mjs). */
export function createApp(dataSource, { secret, trustProxy = false, loginLimits } = {}) {
  if (!secret) throw new TypeError('createApp: option "secret" is required');
  // With `proxy`, ctx.ip and ctx.secure come from X-Forwarded-For (one hop) and X-Forwarded-Proto, and
  // koa-session's cookie is `Secure` whenever the request was https.
  const app = new Koa({ proxy: trustProxy, maxIpsCount: trustProxy ? 1 : 0 });
  app.keys = [secret];
  const handle = createRoutes({ dataSource, framework: FRAMEWORK, loginLimits });
  const sessions = koaSessionStore(app, { dataSource, maxAge: 24 * 3600 * 1000, sameSite: 'lax', httpOnly: true });

  // Outermost, so it also answers for errors of the session middleware, with a page that shows no internals.
  app.use(async (ctx, next) => {
    ctx.set(securityHeaders);
    try {
      await next();
    } catch (err) {
      send(ctx, errorResponse(err, FRAMEWORK));
    }
  });
  app.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || ctx.path !== '/style.css') return next();
    ctx.set('Cache-Control', 'no-cache');
    ctx.type = 'css';
    ctx.body = stylesheet;
  });
  app.use(sessions);
  app.use(async (ctx) => {
    const form = ctx.method === 'POST' ? await readForm(ctx.req) : {};
    send(ctx, (await handle(webOf(ctx, form, sessions.store))) ?? notFound(FRAMEWORK));
  });
  return app;
}

function webOf(ctx, form, store) {
  return {
    method: ctx.method,
    path: ctx.path,
    form,
    get session() {
      return ctx.session ?? null;
    },
    get db() {
      return ctx.db;
    },
    store,
    ip: ctx.ip,
    userAgent: ctx.get('user-agent'),
    signIn: (userId, metadata) => signIn(ctx, userId, { metadata }),
    signOut: async () => signOut(ctx),
    signOutOtherSessions: () => signOutOtherSessions(ctx),
    signOutEverywhere: () => signOutEverywhere(ctx),
  };
}

function send(ctx, result) {
  if (result.redirect) {
    ctx.status = 303;
    ctx.redirect(result.redirect);
  } else if (result.json) {
    ctx.body = result.json;
  } else {
    ctx.status = result.status;
    ctx.type = 'html';
    ctx.body = result.html;
  }
}
