// Where the read replica's test (test/deploy/replica.test.ts) finds PostgreSQL's server programs, with which
// it makes a primary and a streaming replica of its own: TEST_REPLICA_BIN, or the newest of Debian's
// /usr/lib/postgresql/<major>/bin (the postgresql package). The embedded PostgreSQL has no pg_basebackup.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const REPLICA_PROGRAMS = ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres'];

const complete = (dir) => REPLICA_PROGRAMS.every((name) => existsSync(join(dir, name)));

/** The directory holding every program the replica test runs, or null. */
export function findReplicaPrograms() {
  if (process.env.TEST_REPLICA_BIN) return complete(process.env.TEST_REPLICA_BIN) ? process.env.TEST_REPLICA_BIN : null;
  let majors = [];
  try {
    majors = readdirSync('/usr/lib/postgresql').filter((name) => /^\d+$/.test(name));
  } catch {
    return null;
  }
  const dirs = majors.sort((a, b) => Number(b) - Number(a)).map((major) => `/usr/lib/postgresql/${major}/bin`);
  return dirs.find(complete) ?? null;
}

export const missingReplicaProgramsMessage = () =>
  `The read replica's test (test/deploy/replica.test.ts) did not run: no directory with ${REPLICA_PROGRAMS.join(', ')} ` +
  `(TEST_REPLICA_BIN, or /usr/lib/postgresql/<major>/bin). Install them (apt-get install -y postgresql) or set TEST_REPLICA_BIN.`;
