// The "floor": the least an express-session store on PostgreSQL can do for what typeorm-session does. Same
// table layout as ours (hashed ids, epoch-ms expiry, user_id column), one named prepared statement per store
// call straight on a pg Pool, and the same touch throttle (no query while the stored expiry is less than
// `touchAfter` behind). No TypeORM, no transaction, no readiness check, no error wrapping. The ratio
// ours / floor is what our plumbing costs.
import { createHash } from 'node:crypto';
import session from 'express-session';

const DAY_MS = 86_400_000;

export class FloorStore extends session.Store {
  constructor({ pool, table = 'session_floor', touchAfterMs = 60_000 }) {
    super();
    this.pool = pool;
    this.touchAfterMs = touchAfterMs;
    this.loaded = new WeakMap();
    const t = `"${table}"`;
    this.sql = {
      get: { name: `${table}_get`, text: `SELECT data, expires_at FROM ${t} WHERE id = $1 AND expires_at > $2` },
      set: {
        name: `${table}_set`,
        text:
          `INSERT INTO ${t} (id, data, expires_at, created_at, updated_at, user_id) VALUES ($1, $2, $3, $4, $4, $5) ` +
          'ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at, ' +
          'updated_at = EXCLUDED.updated_at, user_id = EXCLUDED.user_id',
      },
      touch: {
        name: `${table}_touch`,
        text: `UPDATE ${t} SET expires_at = $2, updated_at = $3 WHERE id = $1 AND expires_at > $3 AND expires_at < $4`,
      },
      destroy: { name: `${table}_destroy`, text: `DELETE FROM ${t} WHERE id = $1` },
    };
  }

  run(statement, values, callback, map = () => undefined) {
    this.pool.query({ ...statement, values }).then(
      (result) => callback?.(null, map(result)),
      (err) => callback?.(err),
    );
  }

  get(sid, callback) {
    this.run(this.sql.get, [digest(sid), Date.now()], callback, ({ rows }) => {
      if (!rows[0]) return null;
      const data = JSON.parse(rows[0].data);
      data[LOADED] = Number(rows[0].expires_at);
      return data;
    });
  }

  set(sid, sess, callback) {
    const now = Date.now();
    const userId = sess.userId === undefined ? null : String(sess.userId);
    this.run(this.sql.set, [digest(sid), JSON.stringify(sess), expiryOf(sess, now), now, userId], callback);
  }

  touch(sid, sess, callback) {
    const now = Date.now();
    const expires = expiryOf(sess, now);
    const window = Math.min(this.touchAfterMs, (expires - now) / 10);
    const loadedExpiry = this.loaded.get(sess);
    if (loadedExpiry !== undefined && expires - loadedExpiry < window) {
      callback?.(null);
      return;
    }
    this.run(this.sql.touch, [digest(sid), expires, now, expires - window], callback);
  }

  destroy(sid, callback) {
    this.run(this.sql.destroy, [digest(sid)], callback);
  }

  // express-session builds a new Session from what get() returned; remember the loaded expiry against it.
  createSession(req, sess) {
    const loadedExpiry = sess[LOADED];
    const created = super.createSession(req, sess);
    if (loadedExpiry !== undefined) this.loaded.set(created, loadedExpiry);
    return created;
  }
}

const LOADED = Symbol('floor.loadedExpiry');

function digest(sid) {
  return createHash('sha256').update(sid).digest('hex');
}

function expiryOf(sess, now) {
  const expires = sess?.cookie?.expires;
  if (expires) return new Date(expires).getTime();
  const maxAge = sess?.cookie?.maxAge;
  return typeof maxAge === 'number' ? now + maxAge : now + DAY_MS;
}
