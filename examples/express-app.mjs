// A login flow on Express: register, log in (with session regeneration), see who you are, log out.
// The users table is the app's own; req.db writes to it inside the request's transaction, together with
// the session, so a failed request leaves neither a half-made user nor a half-made login.
import express from 'express';
import { EntitySchema } from 'typeorm';
import { scrypt, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { sessionStore } from 'typeorm-session';

const scryptAsync = promisify(scrypt);

export const User = new EntitySchema({
  name: 'ExampleUser',
  tableName: 'example_users',
  columns: {
    id: { type: Number, primary: true, generated: true },
    email: { type: String, unique: true },
    passwordHash: { type: String, name: 'password_hash' },
  },
});

async function hashPassword(password) {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, 32);
  return `${salt.toString('hex')}:${key.toString('hex')}`;
}

async function checkPassword(password, stored) {
  const [salt, key] = stored.split(':');
  const actual = await scryptAsync(password, Buffer.from(salt, 'hex'), 32);
  return timingSafeEqual(actual, Buffer.from(key, 'hex'));
}

const page = (body) => `<!doctype html><meta charset="utf-8"><title>typeorm-session example</title>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">${body}</body>`;

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function createApp(dataSource, { secret = 'change-me' } = {}) {
  const app = express();
  app.use(sessionStore({ dataSource, secret, cookie: { maxAge: 24 * 3600 * 1000, sameSite: 'lax' } }));
  app.use(express.urlencoded({ extended: false }));

  app.get('/', async (req, res) => {
    const user = req.session.userId ? await req.db.findOneBy(User, { id: req.session.userId }) : null;
    res.send(
      page(
        user
          ? `<p>Signed in as <b>${escape(user.email)}</b>.</p>
             <form method="post" action="/logout"><button>Log out</button></form>`
          : `<h2>Register</h2><form method="post" action="/register">
               <input name="email" placeholder="email"> <input name="password" type="password" placeholder="password">
               <button>Register</button></form>
             <h2>Log in</h2><form method="post" action="/login">
               <input name="email" placeholder="email"> <input name="password" type="password" placeholder="password">
               <button>Log in</button></form>`,
      ),
    );
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
    if (!user || !(await checkPassword(String(password ?? ''), user.passwordHash))) {
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
