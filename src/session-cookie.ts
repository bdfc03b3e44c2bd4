import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * The session cookie, as express-session writes and reads it, so cookies issued by one are accepted by the
 * other: `s:` + id + `.` + base64 HMAC-SHA256 of the id (padding stripped), URL-encoded in the header. Shared
 * by the Express and Fastify adapters, so a cookie of one is a cookie of the other.
 */

function mac(value: string, secret: string): string {
  return createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
}

/** The signed cookie value for a session id, signed with the first (current) secret. */
export function signedValue(id: string, secret: string): string {
  return `s:${id}.${mac(id, secret)}`;
}

/** The session id in a signed value, if one of `secrets` signed it. */
export function unsign(value: string, secrets: readonly string[]): string | undefined {
  if (!value.startsWith('s:')) return undefined;
  const dot = value.lastIndexOf('.');
  if (dot < 2) return undefined;
  const id = value.slice(2, dot);
  const given = Buffer.from(value.slice(dot + 1));
  for (const secret of secrets) {
    const expected = Buffer.from(mac(id, secret));
    if (expected.length === given.length && timingSafeEqual(expected, given)) return id;
  }
  return undefined;
}

/**
 * The raw value of cookie `name` in a Cookie header: the first one when repeated, quotes removed,
 * %-decoded. This is what the `cookie` package's parse() gives express-session, for one name, without
 * building an object of every cookie; like parse(), it trims only spaces and tabs (a header may carry other
 * bytes Node accepts, such as U+00A0, and they belong to the name or value).
 */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  const length = header.length;
  let start = 0;
  while (start < length) {
    const eq = header.indexOf('=', start);
    if (eq === -1) return undefined;
    let end = header.indexOf(';', start);
    if (end === -1) end = length;
    else if (eq > end) {
      // A pair without '=': skip it.
      start = end + 1;
      continue;
    }
    const nameStart = skipBlanks(header, start, eq);
    if (eq - nameStart >= name.length && header.startsWith(name, nameStart) && skipBlanks(header, nameStart + name.length, eq) === eq) {
      let from = skipBlanks(header, eq + 1, end);
      let to = trimBlanks(header, end, from);
      // Quotes come off even from a lone '"', which leaves the empty value.
      if (to > from && header.charCodeAt(from) === 34 /* " */ && header.charCodeAt(to - 1) === 34) {
        from++;
        to--;
      }
      let value = to > from ? header.slice(from, to) : '';
      if (value.includes('%')) {
        try {
          value = decodeURIComponent(value);
        } catch {
          // Kept as sent, as cookie.parse() does.
        }
      }
      return value;
    }
    start = end + 1;
  }
  return undefined;
}

const isBlank = (code: number) => code === 32 /* space */ || code === 9; /* tab */

/** The first index in [from, to) that is not a space or tab, else `to`. */
function skipBlanks(text: string, from: number, to: number): number {
  while (from < to && isBlank(text.charCodeAt(from))) from++;
  return from;
}

/** One past the last index in [min, to) that is not a space or tab, else `min`. */
function trimBlanks(text: string, to: number, min: number): number {
  while (to > min && isBlank(text.charCodeAt(to - 1))) to--;
  return to;
}

/**
 * The request's Cookie header, read from rawHeaders: `req.headers` is built on first read, and this runs for
 * every request, most of which never need it. Repeated Cookie headers are joined with '; ', as Node joins them.
 */
export function cookieHeader(req: IncomingMessage): string | undefined {
  const raw = req.rawHeaders;
  let found: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 6 && name.toLowerCase() === 'cookie') found = found === undefined ? raw[i + 1] : `${found}; ${raw[i + 1]}`;
  }
  return found;
}

/** Whether the request arrived over TLS, with `proxy` meaning what it means in express-session. */
export function isSecure(req: IncomingMessage & { secure?: boolean }, trustProxy: boolean | undefined): boolean {
  if ((req.socket as { encrypted?: boolean } | null)?.encrypted) return true;
  if (trustProxy === false) return false;
  if (trustProxy !== true) return req.secure === true;
  const header = String(req.headers['x-forwarded-proto'] ?? '');
  const comma = header.indexOf(',');
  return (comma === -1 ? header : header.slice(0, comma)).trim().toLowerCase() === 'https';
}

// Ids are 24 random bytes, base64url (32 characters), as express-session's uid-safe makes them. The bytes
// come from a pool filled 128 ids at a time: one call into the CSPRNG per 128 logins instead of one each.
const ID_BYTES = 24;
const POOL_IDS = 128;
let pool = Buffer.alloc(0);
let offset = 0;

export function generateId(): string {
  if (offset + ID_BYTES > pool.length) {
    pool = randomBytes(ID_BYTES * POOL_IDS);
    offset = 0;
  }
  const id = pool.toString('base64url', offset, offset + ID_BYTES);
  // Each id's bytes are used once; wiping them keeps them out of a later heap dump.
  pool.fill(0, offset, offset + ID_BYTES);
  offset += ID_BYTES;
  return id;
}
