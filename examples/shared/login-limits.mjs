// Limits on sign-in attempts, per account and per client address, counted in a table of the example's own
// so every process behind a load balancer shares the counts. A fixed window per key: the first attempt
// starts it, and it resets once it is `windowSeconds` old. Only failed attempts use up the limit (a
// successful sign-in gives its attempts back), so a busy office behind one address is rarely refused.
import { EntitySchema } from 'typeorm';
import { isIPv6 } from 'node:net';

export const LOGIN_LIMITS = {
  /** Failed attempts on one account per window; after that even the right password is refused. */
  perAccount: 5,
  /** Failed attempts from one address (one /64 for IPv6) per window, over all accounts. */
  perAddress: 20,
  windowSeconds: 15 * 60,
};

export const LoginAttempt = new EntitySchema({
  name: 'ExampleLoginAttempt',
  tableName: 'example_login_attempts',
  columns: {
    key: { type: String, length: 300, primary: true },
    attempts: { type: Number },
    windowStart: { type: 'timestamptz', name: 'window_start' },
  },
  indices: [{ name: 'example_login_attempts_window_start', columns: ['windowStart'] }],
});

/**
 * The counting key of a client address: IPv6 clients usually get a whole /64, so counting single IPv6
 * addresses would give each one 2^64 tries.
 */
export function addressKey(ip) {
  const address = String(ip ?? 'unknown').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
  if (!isIPv6(address)) return `ip:${address}`;
  const [head, tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') && tail ? tail.split(':') : [];
  const groups = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  return `ip:${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

// One statement per attempt, atomic per key: concurrent attempts each take their own count, so thirty
// requests at once cannot all pass a check made before any of them was counted.
const countAttempt = `
  INSERT INTO example_login_attempts AS t (key, attempts, window_start) VALUES ($1, 1, now()), ($2, 1, now())
  ON CONFLICT (key) DO UPDATE SET
    attempts = CASE WHEN t.window_start <= now() - make_interval(secs => $3) THEN 1 ELSE t.attempts + 1 END,
    window_start = CASE WHEN t.window_start <= now() - make_interval(secs => $3) THEN now() ELSE t.window_start END
  RETURNING key, attempts, CEIL(EXTRACT(EPOCH FROM t.window_start + make_interval(secs => $3) - now())) AS retry_after`;

// Keys of windows that ended are deleted a few at a time as attempts come in, so the table stays as
// large as the number of recently tried accounts and addresses.
const forgetOld = `
  DELETE FROM example_login_attempts WHERE key IN (
    SELECT key FROM example_login_attempts WHERE window_start <= now() - make_interval(secs => $1) LIMIT 20)`;

export class LoginLimiter {
  constructor(dataSource, limits = LOGIN_LIMITS) {
    this.dataSource = dataSource;
    this.limits = limits;
  }

  /**
   * Counts an attempt before the password is checked. Runs on the DataSource, not the request's
   * transaction: a failed sign-in answers 401, which rolls that transaction back, and the count must stay.
   * Returns `{ allowed, retryAfterSeconds, keys }`.
   */
  async attempt(email, ip) {
    const account = `account:${email}`;
    const address = addressKey(ip);
    const rows = await this.dataSource.query(countAttempt, [account, address, this.limits.windowSeconds]);
    await this.dataSource.query(forgetOld, [this.limits.windowSeconds]);
    const over = rows.filter(
      (row) => Number(row.attempts) > (row.key === account ? this.limits.perAccount : this.limits.perAddress),
    );
    const retryAfterSeconds = Math.max(1, ...over.map((row) => Number(row.retry_after)));
    return { allowed: over.length === 0, retryAfterSeconds, keys: { account, address } };
  }

  /**
   * After a successful sign-in: the account starts afresh and the address gets this attempt back. Runs in
   * the request's transaction (`db`), so it is kept only if the sign-in itself commits.
   */
  async succeeded(db, { keys }) {
    await db.query('DELETE FROM example_login_attempts WHERE key = $1', [keys.account]);
    await db.query('UPDATE example_login_attempts SET attempts = attempts - 1 WHERE key = $1 AND attempts > 0', [keys.address]);
  }
}
