import { testDialect } from './dialect.js';

/**
 * Stored `data` values that no store write produces: what damage, a manual edit or another program can leave
 * in the table. Each must read as "no session" (reported once as a SessionDecodeError), never as a session,
 * a hang, a crash or a 5xx. MySQL's `text` column holds at most 64 KiB, so there the long value is as long as
 * the column allows.
 */
const long = testDialect === 'mysql' ? 60_000 : 1 << 20;

export const damagedRows: Array<[label: string, data: string]> = [
  ['invalid JSON', '{not json'],
  ['JSON null', 'null'],
  ['an empty array', '[]'],
  ['an array of numbers', '[1,2]'],
  ['a JSON string', JSON.stringify('x'.repeat(long - 2))],
  ['a number', '42'],
  ['a cookie that is a string', '{"cookie":"x","userId":"mallory"}'],
  ['a cookie that is an array', '{"cookie":[1],"userId":"mallory"}'],
  ['an unparseable cookie.expires', '{"cookie":{"expires":"not a date","originalMaxAge":null},"userId":"mallory"}'],
  ['a cookie.expires that is an object', '{"cookie":{"expires":{},"originalMaxAge":null},"userId":"mallory"}'],
  ['a cookie.originalMaxAge that is a string', '{"cookie":{"originalMaxAge":"soon"},"userId":"mallory"}'],
  [`${long} characters of garbage`, 'x'.repeat(long)],
];
