import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A PgBouncer in transaction mode in front of the test PostgreSQL, for the configuration that runs the
 * Express suite through it (TEST_PGBOUNCER = the pgbouncer binary). Started by the global setup on a free
 * loopback port, with its configuration in a fresh temporary directory, and stopped by the teardown.
 * Every database name is passed through (`*`), so each test file's own database works as it is.
 */
export interface PgBouncer {
  port: number;
  stop(): Promise<void>;
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

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startPgBouncer(binary: string, serverUrl: string, port: number): Promise<PgBouncer> {
  const version = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  if (version.status !== 0) throw new Error(`TEST_PGBOUNCER=${binary}: it does not run (${version.error?.message ?? version.stderr})`);
  const server = new URL(serverUrl);
  const dir = mkdtempSync(join(tmpdir(), 'typeorm-session-pgbouncer-'));
  const user = decodeURIComponent(server.username || 'postgres');
  const password = decodeURIComponent(server.password);
  // The server's own credentials for every connection PgBouncer opens; clients are trusted (loopback only).
  const target = [`host=${server.hostname}`, `port=${server.port || 5432}`, `user=${user}`, ...(password ? [`password=${password}`] : [])];
  writeFileSync(join(dir, 'users.txt'), `"${user}" ""\n`);
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = ${target.join(' ')}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(dir, 'users.txt')}`,
      'pool_mode = transaction',
      // The admin console (database "pgbouncer"): tests read SHOW POOLS from it.
      `admin_users = ${user}`,
      'max_client_conn = 1000',
      'default_pool_size = 40',
      // pg sends none of these, TypeORM neither; listed so a driver that does is not refused at startup.
      'ignore_startup_parameters = extra_float_digits,options',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      '',
    ].join('\n'),
  );
  // PgBouncer refuses to run as root ("PgBouncer should not run as root"): then it runs as postgres or nobody.
  const runAs = process.getuid?.() === 0 ? (account('postgres') ?? account('nobody')) : undefined;
  if (runAs) {
    chownSync(dir, runAs.uid, runAs.gid);
    for (const file of ['users.txt', 'pgbouncer.ini']) chownSync(join(dir, file), runAs.uid, runAs.gid);
  }
  const child: ChildProcess = spawn(binary, [join(dir, 'pgbouncer.ini')], {
    stdio: 'ignore',
    ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
  });
  let exited = false;
  child.once('exit', () => (exited = true));
  const log = () => {
    try {
      return readFileSync(join(dir, 'pgbouncer.log'), 'utf8').trim().split('\n').slice(-5).join('\n');
    } catch {
      return '(no log)';
    }
  };
  for (let i = 0; i < 100 && !(await listening(port)); i++) {
    if (exited) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (exited || !(await listening(port))) {
    child.kill('SIGKILL');
    const text = log();
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`PgBouncer (${binary}) did not start on 127.0.0.1:${port}:\n${text}`);
  }
  return {
    port,
    async stop() {
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
