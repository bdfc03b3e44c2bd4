/** The Fastify adapter's session cookie: its options, checked once, and its Set-Cookie header. */

export interface FastifySessionCookieOptions {
  /**
   * Lifetime in milliseconds (cookie Expires, and the stored session's expiry). Default: none, a
   * browser-session cookie whose stored session lives the store's `ttl`.
   */
  maxAge?: number;
  /** Default `'/'`. */
  path?: string;
  /** Default: none (the request's host only). */
  domain?: string;
  /** Default `true`. */
  httpOnly?: boolean;
  /** Sent only over HTTPS (`request.protocol`, which follows Fastify's `trustProxy`). Default `false`. */
  secure?: boolean;
  /** Default: none. */
  sameSite?: 'lax' | 'strict' | 'none';
}

export interface ResolvedCookieOptions {
  maxAge: number | undefined;
  path: string;
  domain: string | undefined;
  httpOnly: boolean;
  secure: boolean;
  sameSite: 'lax' | 'strict' | 'none' | undefined;
}

const names = ['maxAge', 'path', 'domain', 'httpOnly', 'secure', 'sameSite'];
// RFC 6265's cookie-av values: no control characters and no ';' (which would start another attribute).
const attributeValue = /^[\x20-\x3a\x3c-\x7e]+$/;

export function resolveCookieOptions(value: unknown): ResolvedCookieOptions {
  const options = (value ?? {}) as FastifySessionCookieOptions;
  if (typeof options !== 'object' || Array.isArray(options)) throw new TypeError('typeorm-session: option "cookie" must be an object');
  for (const key of Object.keys(options)) {
    if (!names.includes(key)) throw new TypeError(`typeorm-session: unknown option "cookie.${key}"`);
  }
  const { maxAge, path, domain, httpOnly, secure, sameSite } = options;
  if (maxAge !== undefined && (typeof maxAge !== 'number' || !Number.isFinite(maxAge) || maxAge <= 0)) {
    throw new TypeError(`typeorm-session: option "cookie.maxAge" must be a number of milliseconds > 0, got ${JSON.stringify(maxAge)}`);
  }
  for (const [name, text] of [['path', path], ['domain', domain]] as const) {
    if (text !== undefined && (typeof text !== 'string' || !attributeValue.test(text))) {
      throw new TypeError(`typeorm-session: option "cookie.${name}" must be a string without ';' or control characters`);
    }
  }
  for (const [name, flag] of [['httpOnly', httpOnly], ['secure', secure]] as const) {
    if (flag !== undefined && typeof flag !== 'boolean') throw new TypeError(`typeorm-session: option "cookie.${name}" must be a boolean`);
  }
  if (sameSite !== undefined && sameSite !== 'lax' && sameSite !== 'strict' && sameSite !== 'none') {
    throw new TypeError(`typeorm-session: option "cookie.sameSite" must be 'lax', 'strict' or 'none', got ${JSON.stringify(sameSite)}`);
  }
  return { maxAge, path: path ?? '/', domain, httpOnly: httpOnly ?? true, secure: secure ?? false, sameSite };
}

/** The Set-Cookie header for `value`; `expires` (epoch ms) undefined for a browser-session cookie, 0 to clear it. */
export function serializeCookie(name: string, value: string, options: ResolvedCookieOptions, expires: number | undefined): string {
  let header = `${name}=${encodeURIComponent(value)}; Path=${options.path}`;
  if (expires !== undefined) header += `; Expires=${new Date(expires).toUTCString()}`;
  if (options.domain !== undefined) header += `; Domain=${options.domain}`;
  if (options.httpOnly) header += '; HttpOnly';
  if (options.secure) header += '; Secure';
  if (options.sameSite !== undefined) header += `; SameSite=${options.sameSite[0]!.toUpperCase()}${options.sameSite.slice(1)}`;
  return header;
}
