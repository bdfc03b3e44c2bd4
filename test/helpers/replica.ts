import { execFile } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';

/**
 * A PostgreSQL primary and a streaming replica of it, both made for one test file: the primary by initdb
 * in a fresh temporary directory, the replica by pg_basebackup -R from it, each on a free loopback port.
 * `bin` is a directory of PostgreSQL's server programs (TEST_REPLICA_BIN; Debian: /usr/lib/postgresql/15/bin).
 * stop() stops both servers and removes the directory.
 */
export interface ReplicaPair {
  primaryUrl: string;
  replicaUrl: string;
  /** Runs `work` on a connection of its own to the primary or the replica. */
  on<T>(server: 'primary' | 'replica', work: (client: Client) => Promise<T>): Promise<T>;
  /** Stops applying WAL on the replica (it still receives it): what replication lag looks like to a reader. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** Waits until the replica has applied everything the primary has written so far. */
  caughtUp(): Promise<void>;
  stop(): Promise<void>;
}

const PROGRAMS = ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres'];

/** Why `bin` cannot make a primary and a replica, or undefined when it has every program needed. */
export function missingPrograms(bin: string): string | undefined {
  const missing = PROGRAMS.filter((name) => !existsSync(join(bin, name)));
  return missing.length ? `${bin} lacks ${missing.join(', ')}` : undefined;
}

/** The uid and gid of `user` from /etc/passwd, or undefined. */
function account(user: string): { uid: number; gid: number } | undefined {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startReplicaPair(bin: string): Promise<ReplicaPair> {
  const missing = missingPrograms(bin);
  if (missing) throw new Error(`TEST_REPLICA_BIN=${bin}: ${missing}`);
  // PostgreSQL refuses to run as root: then every program runs as the postgres user, who owns the directory.
  const runAs = process.getuid?.() === 0 ? account('postgres') : undefined;
  if (process.getuid?.() === 0 && !runAs) throw new Error('running as root, and there is no postgres user to run PostgreSQL as');
  const dir = mkdtempSync(join(tmpdir(), 'typeorm-session-replica-'));
  const primaryDir = join(dir, 'primary');
  const replicaDir = join(dir, 'replica');
  const own = (path: string) => runAs && chownSync(path, runAs.uid, runAs.gid);
  own(dir);

  const run = (program: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      execFile(join(bin, program), args, { ...(runAs ?? {}), timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${program} ${args.join(' ')} failed: ${String(stderr || stdout || err.message).trim()}`, { cause: err }));
        else resolve();
      });
    });
  const logOf = (name: string) => {
    try {
      return readFileSync(join(dir, `${name}.log`), 'utf8').trim().split('\n').slice(-10).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const started: string[] = [];
  const stopAll = async () => {
    for (const data of started.splice(0).reverse()) await run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  const start = async (name: string, data: string) => {
    try {
      await run('pg_ctl', ['-D', data, '-l', join(dir, `${name}.log`), '-w', '-t', '60', 'start']);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${name} log:\n${logOf(name)}`, { cause: err });
    }
    started.push(data);
  };

  try {
    const [primaryPort, replicaPort] = [await freePort(), await freePort()];
    mkdirSync(primaryDir, { mode: 0o700 });
    own(primaryDir);
    await run('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    // initdb's pg_hba.conf already trusts replication connections from 127.0.0.1 under --auth=trust.
    appendFileSync(
      join(primaryDir, 'postgresql.conf'),
      [
        '',
        `port = ${primaryPort}`,
        "listen_addresses = '127.0.0.1'",
        // TCP only: no socket file in a directory the postgres user may not write.
        "unix_socket_directories = ''",
        'wal_level = replica',
        'max_wal_senders = 4',
        'hot_standby = on',
        // A test cluster, thrown away at the end: durability is not worth the fsyncs.
        'fsync = off',
        'shared_buffers = 16MB',
        '',
      ].join('\n'),
    );
    await start('primary', primaryDir);
    await run('pg_basebackup', ['-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', replicaDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync']);
    // The copy carries the primary's settings; a later line wins.
    appendFileSync(join(replicaDir, 'postgresql.conf'), `\nport = ${replicaPort}\n`);
    await start('replica', replicaDir);

    const url = (port: number) => `postgres://postgres@127.0.0.1:${port}/postgres`;
    const pair: ReplicaPair = {
      primaryUrl: url(primaryPort),
      replicaUrl: url(replicaPort),
      async on(server, work) {
        const client = new Client({ connectionString: server === 'primary' ? pair.primaryUrl : pair.replicaUrl });
        await client.connect();
        try {
          return await work(client);
        } finally {
          await client.end();
        }
      },
      pauseReplay: () => pair.on('replica', async (c) => void (await c.query('SELECT pg_wal_replay_pause()'))),
      resumeReplay: () => pair.on('replica', async (c) => void (await c.query('SELECT pg_wal_replay_resume()'))),
      async caughtUp() {
        const lsn = await pair.on('primary', async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string);
        await pair.on('replica', async (c) => {
          for (let i = 0; i < 600; i++) {
            const { rows } = await c.query('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done', [lsn]);
            if (rows[0].done) return;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          throw new Error(`the replica did not replay up to ${lsn} within 30 s`);
        });
      },
      stop: stopAll,
    };
    // The replica streams from the primary (not only replayed the base backup).
    await pair.on('primary', async (c) => {
      for (let i = 0; i < 600; i++) {
        const { rows } = await c.query("SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'");
        if (rows[0].n > 0) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`the replica did not start streaming within 30 s; replica log:\n${logOf('replica')}`);
    });
    return pair;
  } catch (err) {
    await stopAll();
    throw err;
  }
}
