// The example's users table and password hashing (node:crypto scrypt, so no native package is needed).
import { EntitySchema } from 'typeorm';
import { scrypt, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const scryptAsync = promisify(scrypt);

export const User = new EntitySchema({
  name: 'ExampleUser',
  tableName: 'example_users',
  columns: {
    id: { type: Number, primary: true, generated: true },
    email: { type: String, length: 254, unique: true },
    passwordHash: { type: String, name: 'password_hash' },
  },
});

// scrypt's cost parameters are stored with each hash, so raising them later still verifies old hashes.
// N = 2^15, r = 8: 32 MiB and about 100 ms of one core per hash. OWASP's password storage cheat sheet asks
// for N = 2^17 (128 MiB) or an equal trade such as N = 2^15 with p = 3; raise p here on a server that can
// afford three times the CPU per login.
const COST = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;

export async function hashPassword(password) {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, KEY_LENGTH, COST);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

export async function verifyPassword(password, stored) {
  const [scheme, N, r, p, salt, key] = String(stored).split('$');
  if (scheme !== 'scrypt' || !salt || !key) return false;
  const expected = Buffer.from(key, 'base64url');
  const cost = { N: Number(N), r: Number(r), p: Number(p), maxmem: COST.maxmem };
  const actual = await scryptAsync(String(password), Buffer.from(salt, 'base64url'), expected.length, cost);
  return timingSafeEqual(actual, expected);
}

let dummy;
/**
 * A hash of a random password, verified when the e-mail is unknown: an unknown account then costs the same
 * scrypt work as a known one, so the answer's timing does not tell which e-mails are registered.
 */
export function dummyPasswordHash() {
  dummy ??= hashPassword(randomBytes(16).toString('hex'));
  return dummy;
}

/** E-mail addresses compare case-insensitively and without surrounding spaces. */
export const normalizeEmail = (email) => email.trim().toLowerCase();
