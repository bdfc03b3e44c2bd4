// A login flow on Express: register, log in (with session regeneration), see who you are, log out.
// The users table is the app's own; req.db writes to it inside the request's transaction, together with
// the session, so a failed request leaves neither a half-made user nor a half-made login.
import express from 'express';
import { sessionStore } from 'typeorm-session';
import { User, hashPassword, checkPassword, page, homePage } from './users.mjs';

export { User };

export function createApp(dataSource, { secret = 'change-me' } = {}) {
  const app = express();
  app.use(sessionStore({ dataSource, secret, cookie: { maxAge: 24 * 3600 * 1000, sameSite: 'lax' } }));
  app.use(express.urlencoded({ extended: false }));

  app.get('/', async (req, res) => {
    const user = req.session.userId ? await req.db.findOneBy(User, { id: req.session.userId }) : null;
    res.send(homePage(user));
  });

  app.get('/me', (req, res) => {
    res.json({ userId: req.session.userId ?? null });
  });

  app.post('/register', async (req, res) => {
    const { email, password } = req.body;
    if (!email || !password) return res.status(400).send(page('<p>Email and password are required. <a href="/">Back</a></p>'));
    if (await req.db.findOneBy(User, { email })) {
      return res.status(409).send(page('<p>That email is taken. <a href="/">Back</a></p>'));
    }
    const user = await req.db.save(User, { email, passwordHash: await hashPassword(password) });
    await logIn(req, user.id);
    res.redirect(303, '/');
  });

  app.post('/login', async (req, res) => {
    const { email, password } = req.body;
    const user = email ? await req.db.findOneBy(User, { email }) : null;
    if (!user || !(await checkPassword(password ?? '', user.passwordHash))) {
      return res.status(401).send(page('<p>Wrong email or password. <a href="/">Back</a></p>'));
    }
    await logIn(req, user.id);
    res.redirect(303, '/');
  });

  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => {
      if (err) return next(err);
      res.clearCookie('connect.sid');
      res.redirect(303, '/');
    });
  });

  return app;
}

// A new session id at login, so an id planted before login is worthless after it (session fixation).
function logIn(req, userId) {
  return new Promise((resolve, reject) => {
    req.session.regenerate((err) => {
      if (err) return reject(err);
      req.session.userId = userId;
      resolve();
    });
  });
}
