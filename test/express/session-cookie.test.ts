/**
 * The session cookie (src/express/session-cookie.ts) against what express-session itself uses: the `cookie`
 * package's parse() to find the value in a Cookie header, cookie-signature to sign and check it, and uid-safe's
 * 24-byte ids.
 */
import { dirname } from 'node:path';
import { cookieValue, generateId, signedValue, unsign } from '../../src/session-cookie.js';

const { parse } = require('cookie') as { parse(header: string): Record<string, string> };

interface CookieSignature {
  sign(value: string, secret: string): string;
  unsign(value: string, secret: string): string | false;
}
// The hoisted cookie-signature, and express-session's own (older) copy, which is the one it really calls.
const expressSessionDir = dirname(require.resolve('express-session'));
const signatures: Array<[string, CookieSignature]> = [
  ['cookie-signature', require('cookie-signature')],
  ["express-session's cookie-signature", require(require.resolve('cookie-signature', { paths: [expressSessionDir] }))],
];

/** A deterministic generator (mulberry32), so a failing case can be found again. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('cookieValue() finds what cookie.parse() finds', () => {
  /** parse()'s value for `name`, own properties only (the parsed object has Object's prototype). */
  const reference = (header: string, name: string) => {
    const cookies = parse(header);
    return Object.prototype.hasOwnProperty.call(cookies, name) ? cookies[name] : undefined;
  };

  const headers = [
    'sid=abc',
    '',
    's',
    'sid',
    'sid=',
    'sid=;sid=second',
    '  sid  =  abc  ',
    'sid\t=\tabc\t',
    'a=1; sid=abc; b=2',
    'a=1;sid=abc;b=2',
    ';;; sid=abc ;;;',
    'sid=first; sid=second',
    'sid=first;sid=second; sid=third',
    'sidx=1; xsid=2; SID=3; sid=4',
    'sid="abc"',
    'sid=" abc "',
    ' sid = "abc" ',
    'sid=""',
    'sid="abc',
    'sid=abc"',
    'sid="',
    'sid=a"b"c',
    'x="a;b"; sid=c',
    'sid=s%3Aabc.def',
    'sid=s%3Aabc.d%2Bf%2F%3D',
    'sid=%E2%82%AC',
    'sid=%E0%A4%A',
    'sid=100%',
    'sid=%',
    'sid=%zz',
    'sid=a%20b+c',
    'flag; sid=abc',
    'flag;sid=abc; other',
    'noequals; alsonot',
    'a=b; sid',
    'sid; sid=abc',
    'other=x=y; sid=a=b',
    '=abc; sid=def',
    'sid=abc; ',
    'sid=abc;',
    'sid=\u00a0abc\u00a0',
    '\u00a0sid=abc',
  ];

  /** A header as a test title: JSON, with U+00A0 spelt out (it prints as a space). */
  const shown = (header: string) => JSON.stringify(header).replace(/\u00a0/g, '\\u00a0');

  test.each(headers.map((header) => [shown(header), header]))('%s', (_title, header) => {
    for (const name of ['sid', 'a', 'other']) {
      expect({ name, value: cookieValue(header, name) }).toEqual({ name, value: reference(header, name) });
    }
  });

  test('an absent header', () => {
    expect(cookieValue(undefined, 'sid')).toBeUndefined();
  });

  test('random headers made of the characters that make parsing hard', () => {
    const next = random(20240611);
    // Characters Node lets through in a header value: printable ASCII, tab, and obs-text (such as U+00A0).
    const pieces = ['sid', 'a', 'x', 's%3A', '=', '=', ';', ';', ',', ' ', '\t', '\u00a0', '"', '%', '%2', '%20', '%zz', '%E2%82%AC'];
    const mismatches: Array<{ header: string; ours?: string; parse?: string }> = [];
    for (let i = 0; i < 20_000; i++) {
      let header = '';
      const length = 1 + Math.floor(next() * 12);
      for (let j = 0; j < length; j++) header += pieces[Math.floor(next() * pieces.length)];
      for (const name of ['sid', 'a']) {
        const ours = cookieValue(header, name);
        const theirs = reference(header, name);
        if (ours !== theirs) mismatches.push({ header: header.replace(/\u00a0/g, '<U+00A0>'), ours, parse: theirs });
      }
    }
    expect(mismatches.slice(0, 10)).toEqual([]);
  });
});

describe.each(signatures)('signedValue() and unsign() against %s', (_name, signature) => {
  /** express-session's getcookie(): an `s:` prefix, then each secret in turn; anything else is no id. */
  const reference = (value: string, secrets: string[]) => {
    if (value.slice(0, 2) !== 's:') return undefined;
    for (const secret of secrets) {
      const id = signature.unsign(value.slice(2), secret);
      if (id !== false) return id;
    }
    return undefined;
  };

  const ids = [generateId(), 'plain', 'a.b.c', 'ends.with.dot.', '', 'ünï côdé/+=', 'x'.repeat(300)];
  const secrets = ['test-secret', 'sécret', 'x'];

  test('signedValue() is s: and cookie-signature’s sign()', () => {
    for (const id of ids) for (const secret of secrets) expect(signedValue(id, secret)).toBe(`s:${signature.sign(id, secret)}`);
  });

  test('unsign() gives back the id signed with the secret', () => {
    for (const id of ids) {
      for (const secret of secrets) {
        expect(unsign(signedValue(id, secret), [secret])).toBe(id);
        expect(reference(signedValue(id, secret), [secret])).toBe(id);
      }
    }
  });

  test('a wrong secret: no id', () => {
    const value = signedValue('abc', 'right');
    expect(unsign(value, ['wrong'])).toBeUndefined();
    expect(reference(value, ['wrong'])).toBeUndefined();
  });

  test('a truncated or padded signature, a missing signature or prefix: no id, for both', () => {
    const value = signedValue('abc', 'secret');
    const dot = value.lastIndexOf('.');
    const broken = [
      value.slice(0, -1),
      value.slice(0, -10),
      value.slice(0, dot + 1),
      value.slice(0, dot),
      `${value}=`,
      `${value}x`,
      value.slice(2),
      `S:${value.slice(2)}`,
      ` ${value}`,
      's:',
      's',
      '',
    ];
    for (const candidate of broken) {
      expect({ candidate, id: unsign(candidate, ['secret']) }).toEqual({ candidate, id: undefined });
      expect({ candidate, id: reference(candidate, ['secret']) }).toEqual({ candidate, id: undefined });
    }
  });

  test('several secrets: any of them verifies, whatever its place', () => {
    for (const signer of ['new', 'old']) {
      const value = signedValue('abc', signer);
      expect(unsign(value, ['new', 'old'])).toBe('abc');
      expect(unsign(value, ['old', 'new'])).toBe('abc');
      expect(reference(value, ['new', 'old'])).toBe('abc');
    }
    expect(unsign(signedValue('abc', 'older'), ['new', 'old'])).toBeUndefined();
    expect(reference(signedValue('abc', 'older'), ['new', 'old'])).toBeUndefined();
  });

  test('random changes to a signed value: unsign() agrees with express-session on each', () => {
    const next = random(7);
    const alphabet = 'abcxyzABC0189+/=-_.:s %';
    const valid = [signedValue(generateId(), 'old'), signedValue('a.b', 'new'), signedValue('', 'new')];
    const disagreements: Array<{ value: string; ours?: string; express?: string }> = [];
    for (let i = 0; i < 5_000; i++) {
      let value = valid[i % valid.length]!;
      for (let edits = 1 + Math.floor(next() * 3); edits > 0; edits--) {
        const at = Math.floor(next() * (value.length + 1));
        const char = alphabet[Math.floor(next() * alphabet.length)]!;
        const kind = next();
        if (kind < 1 / 3) value = value.slice(0, at) + char + value.slice(at + 1); // replace
        else if (kind < 2 / 3) value = value.slice(0, at) + char + value.slice(at); // insert
        else value = value.slice(0, at) + value.slice(at + 1); // delete
      }
      const ours = unsign(value, ['new', 'old']);
      const theirs = reference(value, ['new', 'old']);
      if (ours !== theirs) disagreements.push({ value, ours, express: theirs });
    }
    expect(disagreements).toEqual([]);
  });
});

describe('generateId()', () => {
  const { sync: uid } = require('uid-safe') as { sync(bytes: number): string };

  test('32 base64url characters, 24 random bytes, as express-session’s uid-safe makes them', () => {
    const id = generateId();
    expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(Buffer.from(id, 'base64url')).toHaveLength(24);
    expect(uid(24)).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  test('unique over many calls (across many refills of its byte pool), and every character in use', () => {
    const ids = Array.from({ length: 20_000 }, () => generateId());
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.filter((id) => !/^[A-Za-z0-9_-]{32}$/.test(id))).toEqual([]);
    // Wiped pool bytes would show as runs of 'A' (zero bits); random ids use all 64 characters.
    expect(ids.filter((id) => id.includes('AAAAAAAA'))).toEqual([]);
    expect(new Set(ids.join('')).size).toBe(64);
  });
});
