// The same login flow on Koa: ctx.db is the request's transaction, ctx.session is koa-session on the
// TypeORM store. Koa answers after the middleware chain, so the commit always precedes the response.
import Koa from 'koa';
import { koaSessionStore } from 'typeorm-session/koa';
import { User, hashPassword, checkPassword, page, homePage } from './users.mjs';

export { User };

// A small form parser, so the example needs no body-parser package.
async function formBody(ctx) {
  let text = '';
  for await (const chunk of ctx.req) text += chunk;
  return Object.fromEntries(new URLSearchParams(text));
}

export function createApp(dataSource, { keys = ['change-me'] } = {}) {
  const app = new Koa();
  app.keys = keys;
  app.use(koaSessionStore(app, { dataSource, maxAge: 24 * 3600 * 1000, sameSite: 'lax' }));

  const routes = {
    'GET /': async (ctx) => {
      const user = ctx.session.userId ? await ctx.db.findOneBy(User, { id: ctx.session.userId }) : null;
      ctx.body = homePage(user);
    },
    'GET /me': async (ctx) => {
      ctx.body = { userId: ctx.session.userId ?? null };
    },
    'POST /register': async (ctx) => {
      const { email, password } = await formBody(ctx);
      if (!email || !password) {
        ctx.status = 400;
        ctx.body = page('<p>Email and password are required. <a href="/">Back</a></p>');
        return;
      }
      if (await ctx.db.findOneBy(User, { email })) {
        ctx.status = 409;
        ctx.body = page('<p>That email is taken. <a href="/">Back</a></p>');
        return;
      }
      const user = await ctx.db.save(User, { email, passwordHash: await hashPassword(password) });
      await logIn(ctx, user.id);
      ctx.status = 303;
      ctx.redirect('/');
    },
    'POST /login': async (ctx) => {
      const { email, password } = await formBody(ctx);
      const user = email ? await ctx.db.findOneBy(User, { email }) : null;
      if (!user || !(await checkPassword(password ?? '', user.passwordHash))) {
        ctx.status = 401;
        ctx.body = page('<p>Wrong email or password. <a href="/">Back</a></p>');
        return;
      }
      await logIn(ctx, user.id);
      ctx.status = 303;
      ctx.redirect('/');
    },
    'POST /logout': async (ctx) => {
      ctx.session = null;
      ctx.status = 303;
      ctx.redirect('/');
    },
  };

  app.use(async (ctx) => {
    const route = routes[`${ctx.method} ${ctx.path}`];
    if (!route) ctx.throw(404);
    await route(ctx);
  });
  return app;
}

// A new session id at login (session fixation): koa-session's regenerate destroys the old one.
async function logIn(ctx, userId) {
  await ctx.session.regenerate();
  ctx.session.userId = userId;
}
