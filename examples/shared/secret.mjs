// The secret that signs session cookies: SESSION_SECRET, or a random one for this process only (sessions
// then end at every restart), with a warning so nobody ships that by accident.
import { randomBytes } from 'node:crypto';

export function sessionSecret(env = process.env, warn = (line) => console.warn(line)) {
  if (env.SESSION_SECRET) return env.SESSION_SECRET;
  warn('SESSION_SECRET is not set: using a random development secret (sessions end when the process stops).');
  return randomBytes(32).toString('base64url');
}
