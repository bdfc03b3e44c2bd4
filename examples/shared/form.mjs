// A small urlencoded-form reader for the Koa app (Express has express.urlencoded), with the same size
// limit: a body over it is refused as it arrives, before it is buffered whole.
import { INPUT_LIMITS, tooLargeBody } from './input.mjs';

export async function readForm(req, limit = INPUT_LIMITS.formBytes) {
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) return {};
  if (Number(req.headers['content-length'] ?? 0) > limit) throw tooLargeBody();
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw tooLargeBody();
    chunks.push(chunk);
  }
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}
