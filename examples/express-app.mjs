// The example on Express: the shared pages and actions (shared/routes.mjs) behind sessionStore(), with
// express.urlencoded for forms. See README "Try it" for what it shows.
import express from 'express';
import { sessionStore, signIn, signOut, signOutEverywhere, signOutOtherSessions } from 'typeorm-session';
import { securityHeaders } from './shared/headers.mjs';
import { INPUT_LIMITS, InputError, tooLargeBody } from './shared/input.mjs';
import { stylesheet } from './shared/pages.mjs';
import { createRoutes, errorResponse, notFound } from './shared/routes.mjs';

export { entities } from './shared/entities.mjs';

const FRAMEWORK = 'Express';

/**
 * Options: `secret` (required; signs the session cookie), `trustProxy` (default false: the app is behind
 * one reverse proxy that sets X-Forwarded-For and X-Forwarded-Proto, so client addresses and https are
 * read from them and cookies are `Secure` when the client used https), `loginLimits` (default LOGIN_LIMITS).
 */
export function createApp(dataSource, { secret, trustProxy = false, loginLimits } = {}) {
  if (!secret) throw new TypeError('createApp: option "secret" is required');
  const app = express();
  app.disable('x-powered-by');
  if (trustProxy) app.set('trust proxy', 1);
  const handle = createRoutes({ dataSource, framework: FRAMEWORK, loginLimits });

  app.use((req, res, next) => {
    res.set(securityHeaders);
    next();
  });
  app.get('/style.css', (req, res) => res.set('Cache-Control', 'no-cache').type('css').send(stylesheet));
  app.use(
    sessionStore({
      dataSource,
      secret,
      proxy: trustProxy,
      cookie: { maxAge: 24 * 3600 * 1000, sameSite: 'lax', httpOnly: true, secure: 'auto' },
    }),
  );
  app.use(express.urlencoded({ extended: false, limit: INPUT_LIMITS.formBytes, parameterLimit: 20 }));

  app.use(async (req, res, next) => {
    try {
      const result = await handle(webOf(req, res));
      if (result) send(res, result);
      else send(res, notFound(FRAMEWORK));
    } catch (err) {
      next(err);
    }
  });

  // Express's own handler would show the stack trace outside production; this one never does.
  app.use((err, req, res, next) => {
    if (res.headersSent) return next(err);
    send(res, errorResponse(bodyParserError(err), FRAMEWORK));
  });
  return app;
}

/** express.urlencoded's refusals as the messages the Koa app gives for the same input. */
function bodyParserError(err) {
  if (err?.type === 'entity.too.large' || err?.type === 'parameters.too.many') return tooLargeBody();
  if (typeof err?.type === 'string' && err.status >= 400 && err.status < 500) {
    return new InputError('The form could not be read. Reload the page and try again.', err.status);
  }
  return err;
}

function webOf(req, res) {
  return {
    method: req.method,
    path: req.path,
    form: req.body ?? {},
    get session() {
      return req.session ?? null;
    },
    get db() {
      return req.db;
    },
    store: req.sessionStore,
    ip: req.ip,
    userAgent: req.get('user-agent'),
    signIn: (userId, metadata) => signIn(req, userId, { metadata }),
    signOut: () => signOut(req, res),
    signOutOtherSessions: () => signOutOtherSessions(req),
    signOutEverywhere: () => signOutEverywhere(req, res),
  };
}

function send(res, result) {
  if (result.redirect) res.redirect(303, result.redirect);
  else if (result.json) res.json(result.json);
  else res.status(result.status).type('html').send(result.html);
}
