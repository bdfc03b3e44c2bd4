// The example's pages and actions, written once for both frameworks. Each app turns a request into a
// `web` object (below) and sends what a handler returns: `{ status, html }`, `{ redirect }` or `{ json }`.
//
// web: { method, path, form, session, db, store, ip, userAgent,
//        signIn(userId, metadata), signOut(), signOutOtherSessions(), signOutEverywhere() }
// where `session` is the request's session object (or null once signed out), `db` the request's
// transaction, `store` the TypeormSessionStore, and the four functions the library's helpers.
import { randomBytes } from 'node:crypto';
import { csrfToken, csrfTokenMatches } from './csrf.mjs';
import { describeDevice } from './device.mjs';
import { credentialsFrom, INPUT_LIMITS, InputError } from './input.mjs';
import { LoginLimiter } from './login-limits.mjs';
import { logError } from './logging.mjs';
import { homePage, messagePage, sessionsPage, signedOutPage } from './pages.mjs';
import { User, dummyPasswordHash, hashPassword, verifyPassword } from './users.mjs';

const USER_AGENT_KEPT = 512;

/** What signIn records about the device, shown on the sessions page. */
function deviceMetadata(web) {
  const userAgent = String(web.userAgent ?? '').slice(0, USER_AGENT_KEPT);
  return {
    // Marks "this device" in the list without the session id, which the Koa adapter does not expose.
    id: randomBytes(12).toString('base64url'),
    ...describeDevice(userAgent),
    userAgent,
    ip: web.ip ?? null,
    signedInAt: new Date().toISOString(),
  };
}

async function currentUser(web) {
  const userId = web.session?.userId;
  return userId === undefined || userId === null ? null : web.db.findOneBy(User, { id: userId });
}

/** Revokes one of `userId`'s sessions by its handle; a handle that is not one of theirs revokes nothing. */
async function revokeOwnSession(store, userId, handle) {
  const own = await store.listByUser(userId);
  if (typeof handle !== 'string' || !own.some((s) => s.handle === handle)) return false;
  return store.destroyByHandle(handle);
}

const minutes = (seconds) => Math.max(1, Math.ceil(seconds / 60));

export function createRoutes({ dataSource, framework, loginLimits }) {
  const limiter = new LoginLimiter(dataSource, loginLimits);

  const signedOut = (web, status, options = {}) => ({
    status,
    html: signedOutPage({ csrf: csrfToken(web.session), framework, ...options }),
  });
  const message = (status, title, text) => ({ status, html: messagePage({ title, text, framework }) });

  const pages = {
    'GET /': async (web) => {
      const user = await currentUser(web);
      if (!user) return signedOut(web, 200);
      return { status: 200, html: homePage({ user, csrf: csrfToken(web.session), framework }) };
    },

    'GET /sessions': async (web) => {
      const user = await currentUser(web);
      if (!user) return { redirect: '/' };
      const here = web.session.device?.id;
      const sessions = (await web.store.listByUser(user.id)).map((s) => ({ ...s, current: s.metadata?.id === here }));
      const note = web.session.notice;
      delete web.session.notice;
      return { status: 200, html: sessionsPage({ user, csrf: csrfToken(web.session), framework, sessions, message: note }) };
    },

    // For scripts and tests: who this session belongs to.
    'GET /me': async (web) => ({ json: { userId: web.session?.userId ?? null } }),
  };

  // Every state change is a POST carrying the session's CSRF token (checked in handle() below).
  const actions = {
    'POST /register': async (web) => {
      const { email, password } = credentialsFrom(web.form, { registering: true });
      if (await web.db.findOneBy(User, { email })) {
        return signedOut(web, 409, { form: 'register', email, error: 'An account with that e-mail address already exists. Sign in instead.' });
      }
      const user = await web.db.save(User, { email, passwordHash: await hashPassword(password) });
      await web.signIn(user.id, deviceMetadata(web));
      return { redirect: '/' };
    },

    'POST /login': async (web) => {
      const { email, password } = credentialsFrom(web.form, { registering: false });
      const attempt = await limiter.attempt(email, web.ip);
      if (!attempt.allowed) {
        const wait = minutes(attempt.retryAfterSeconds);
        return signedOut(web, 429, {
          email,
          error: `Too many failed sign-in attempts for this account or from your network. Try again in ${wait} minute${wait === 1 ? '' : 's'}.`,
        });
      }
      const user = await web.db.findOneBy(User, { email });
      // The password is checked either way, against a dummy hash for an unknown e-mail (same time taken).
      const valid = await verifyPassword(password, user?.passwordHash ?? (await dummyPasswordHash()));
      if (!user || !valid) return signedOut(web, 401, { email, error: 'Wrong e-mail address or password.' });
      await limiter.succeeded(web.db, attempt);
      await web.signIn(user.id, deviceMetadata(web));
      return { redirect: '/' };
    },

    'POST /logout': async (web) => {
      await web.signOut();
      return { redirect: '/' };
    },

    'POST /sessions/revoke': async (web) => {
      const user = await currentUser(web);
      if (!user) return { redirect: '/' };
      if (!(await revokeOwnSession(web.store, user.id, web.form.handle))) {
        return message(404, 'No such session', 'That session has ended already, or is not one of yours.');
      }
      web.session.notice = 'Signed out that device. Its next request will find it signed out.';
      return { redirect: '/sessions' };
    },

    'POST /sessions/revoke-others': async (web) => {
      if (!(await currentUser(web))) return { redirect: '/' };
      const count = await web.signOutOtherSessions();
      web.session.notice = `Signed out ${count} other ${count === 1 ? 'device' : 'devices'}.`;
      return { redirect: '/sessions' };
    },

    'POST /sessions/revoke-all': async (web) => {
      await web.signOutEverywhere();
      return { redirect: '/' };
    },
  };

  /** The response for one request, or null when no route matches (the app answers 404). */
  return async function handle(web) {
    const key = `${web.method} ${web.path}`;
    const page = pages[key];
    if (page) return page(web);
    const action = actions[key];
    if (!action) return null;
    if (!csrfTokenMatches(web.session, web.form)) {
      return message(
        403,
        'This form has expired',
        'The form was sent from another site, or from a page that is too old. Go back to the start page and try again.',
      );
    }
    try {
      return await action(web);
    } catch (err) {
      if (!(err instanceof InputError) || err.status !== 400) throw err;
      const email = typeof web.form.email === 'string' && web.form.email.length <= INPUT_LIMITS.emailLength ? web.form.email : '';
      return signedOut(web, 400, { form: key === 'POST /register' ? 'register' : 'login', email, error: err.message });
    }
  };
}

export const notFound = (framework) => ({
  status: 404,
  html: messagePage({ title: 'Page not found', text: 'There is nothing at this address.', framework }),
});

/**
 * The page for an error that reached the app: an InputError says what to change; anything else is logged
 * (without its properties, see logging.mjs) and shown as a plain 500 without internals.
 */
export function errorResponse(err, framework) {
  if (err instanceof InputError) {
    return { status: err.status, html: messagePage({ title: 'That did not work', text: err.message, framework }) };
  }
  logError(err);
  return {
    status: 500,
    html: messagePage({ title: 'Something went wrong', text: 'The server could not complete that request. Please try again.', framework }),
  };
}
