#!/usr/bin/env node
import { dialectNames, type DialectName } from './dialects/index.js';
import { tableSql } from './store/statements.js';
import { assertTableName, DEFAULT_TABLE_NAME } from './store/entity.js';
import { operate } from './cli-operations.js';

const usage = `Usage: typeorm-session <command> [options]

Commands:
  print-sql [--dialect postgres|mysql|sqlite] [--table sessions]
      Print the SQL that creates the session table (default dialect: postgres).
  prune --url URL [--table sessions] [--batch-size 1000]
      Delete expired sessions now, in batches, showing progress. Waits for no lease: prints 0 if another
      instance is pruning.
  stats --url URL [--table sessions]
      Live sessions, expired rows awaiting a prune, and the users with most sessions.

URL: postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db (or mariadb://), or sqlite:path/to/file.db.
`;

/**
 * Reads `--name value` / `--name=value` pairs. Anything else (an unknown option, a stray word, an option given
 * twice or without its value) is an error: silently falling back to a default would print SQL for a table or
 * database the user did not ask for.
 */
function parseOptions(args: string[], known: readonly string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    if (!known.includes(name)) throw new TypeError(`unknown argument "${arg}"`);
    const value = name === arg ? args[++i] : arg.slice(eq + 1);
    if (value === undefined || value === '' || (name === arg && value.startsWith('--'))) {
      throw new TypeError(`${name} needs a value`);
    }
    if (values.has(name)) throw new TypeError(`${name} is given twice`);
    values.set(name, value);
  }
  return values;
}

export function main(
  argv: string[],
  out: (text: string) => void,
  err: (text: string) => void,
): number | Promise<number> {
  const [command, ...args] = argv;
  try {
    if (command === 'prune' || command === 'stats') {
      const options = parseOptions(args, ['--url', '--table', '--batch-size']);
      return operate(command, options, out, err).catch((e: Error) => {
        err(`typeorm-session: ${e.message}${e.cause ? ` (${(e.cause as Error).message})` : ''}\n`);
        return 1;
      });
    }
    if (command === 'print-sql') {
      const options = parseOptions(args, ['--dialect', '--table']);
      const dialect = (options.get('--dialect') ?? 'postgres') as DialectName;
      if (!dialectNames.includes(dialect)) {
        throw new TypeError(`--dialect must be one of ${dialectNames.join(', ')}, got ${JSON.stringify(dialect)}`);
      }
      const table = options.get('--table') ?? DEFAULT_TABLE_NAME;
      assertTableName(table, '--table');
      out(tableSql(dialect, table));
      return 0;
    }
    if (command === '--help' || command === '-h' || command === 'help') {
      out(usage);
      return 0;
    }
    if (command === undefined) {
      err(usage);
      return 1;
    }
    err(`typeorm-session: unknown command "${command}"\n\n${usage}`);
    return 1;
  } catch (e) {
    err(`typeorm-session: ${(e as Error).message}\n\n${usage}`);
    return 1;
  }
}

if (typeof require !== 'undefined' && require.main === module) {
  void Promise.resolve(main(process.argv.slice(2), (t) => process.stdout.write(t), (t) => process.stderr.write(t))).then(
    (code) => (process.exitCode = code),
  );
}
