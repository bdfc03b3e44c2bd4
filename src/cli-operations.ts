import { DataSource, type DataSourceOptions } from 'typeorm';
import { TypeormSessionStore } from './store/store.js';
import { assertTableName, DEFAULT_TABLE_NAME } from './store/entity.js';

/** The CLI's database commands: a DataSource from --url, a store on it with no background work. */
function dataSourceFromUrl(url: string): DataSource {
  if (url.startsWith('sqlite:')) {
    return new DataSource({ type: 'better-sqlite3', database: url.slice('sqlite:'.length) } as DataSourceOptions);
  }
  const scheme = /^([a-z]+):\/\//.exec(url)?.[1];
  const type = scheme === 'postgres' || scheme === 'postgresql' ? 'postgres' : scheme === 'mysql' || scheme === 'mariadb' ? scheme : undefined;
  if (!type) throw new TypeError('--url must start with postgres://, postgresql://, mysql://, mariadb:// or sqlite:');
  return new DataSource({ type, url } as DataSourceOptions);
}

export async function operate(
  command: 'prune' | 'stats',
  options: Map<string, string>,
  out: (text: string) => void,
  err: (text: string) => void,
): Promise<number> {
  const url = options.get('--url') ?? process.env.DATABASE_URL;
  if (!url) throw new TypeError('--url is required (or set DATABASE_URL)');
  const tableName = options.get('--table') ?? DEFAULT_TABLE_NAME;
  assertTableName(tableName, '--table');
  const batch = options.get('--batch-size');
  const pruneBatchSize = batch === undefined ? 1000 : Number(batch);
  if (!Number.isInteger(pruneBatchSize) || pruneBatchSize < 1) throw new TypeError('--batch-size must be a whole number >= 1');

  const dataSource = dataSourceFromUrl(url);
  await dataSource.initialize();
  const store = new TypeormSessionStore({ dataSource, tableName, createTable: false, pruneInterval: false, pruneBatchSize });
  try {
    if (command === 'prune') {
      const tty = Boolean((process.stderr as { isTTY?: boolean }).isTTY);
      let batches = 0;
      const deleted = await store.pruneExpired({
        onProgress: (total) => {
          batches++;
          if (tty) err(`\rpruned ${total} expired sessions...`);
          else if (batches % 50 === 0) err(`pruned ${total} expired sessions so far\n`);
        },
      });
      if (tty) err('\n');
      out(`pruned ${deleted} expired sessions from "${tableName}"\n`);
    } else {
      const stats = await store.stats({ topUsers: 10 });
      out(`table "${tableName}": ${stats.live} live sessions, ${stats.expired} expired rows awaiting a prune\n`);
      if (stats.topUsers.length) {
        out('users with most live sessions:\n');
        for (const { userId, sessions } of stats.topUsers) out(`  ${userId}\t${sessions}\n`);
      }
    }
    return 0;
  } finally {
    await store.close();
    await dataSource.destroy();
  }
}
