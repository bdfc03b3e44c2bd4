// The example apps' own table and password handling, shared by the Express and Koa versions.
import { EntitySchema } from 'typeorm';
import { scrypt, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

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

export async function hashPassword(password) {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, 32);
  return `${salt.toString('hex')}:${key.toString('hex')}`;
}

export async function checkPassword(password, stored) {
  const [salt, key] = stored.split(':');
  const actual = await scryptAsync(String(password), Buffer.from(salt, 'hex'), 32);
  return timingSafeEqual(actual, Buffer.from(key, 'hex'));
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export const page = (body) => `<!doctype html><meta charset="utf-8"><title>typeorm-session example</title>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">${body}</body>`;

export function homePage(user) {
  return page(
    user
      ? `<p>Signed in as <b>${escape(user.email)}</b>.</p>
         <form method="post" action="/logout"><button>Log out</button></form>`
      : `<h2>Register</h2><form method="post" action="/register">
           <input name="email" placeholder="email"> <input name="password" type="password" placeholder="password">
           <button>Register</button></form>
         <h2>Log in</h2><form method="post" action="/login">
           <input name="email" placeholder="email"> <input name="password" type="password" placeholder="password">
           <button>Log in</button></form>`,
  );
}
