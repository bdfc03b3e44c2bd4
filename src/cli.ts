#!/usr/bin/env node
import { dialectNames, tableSql, type DialectName } from './store/sql.js';
import { assertTableName, DEFAULT_TABLE_NAME } from './store/entity.js';

const usage = `Usage: typeorm-session <command> [options]

Commands:
  print-sql [--dialect postgres|mysql|sqlite] [--table sessions]
      Print the SQL that creates the session table (default dialect: postgres).
`;

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const inline = args.find((a) => a.startsWith(`${name}=`));
  return inline?.slice(name.length + 1);
}

export function main(argv: string[], out: (text: string) => void, err: (text: string) => void): number {
  const [command, ...args] = argv;
  try {
    if (command === 'print-sql') {
      const dialect = (option(args, '--dialect') ?? 'postgres') as DialectName;
      if (!dialectNames.includes(dialect)) throw new TypeError(`--dialect must be one of ${dialectNames.join(', ')}`);
      const table = option(args, '--table') ?? DEFAULT_TABLE_NAME;
      assertTableName(table, '--table');
      out(tableSql(dialect, table));
      return 0;
    }
    if (command === undefined || command === '--help' || command === '-h') {
      out(usage);
      return command === undefined ? 1 : 0;
    }
    err(`typeorm-session: unknown command "${command}"\n\n${usage}`);
    return 1;
  } catch (e) {
    err(`typeorm-session: ${(e as Error).message}\n`);
    return 1;
  }
}

if (typeof require !== "undefined" && require.main === module) {
  process.exitCode = main(process.argv.slice(2), (t) => process.stdout.write(t), (t) => process.stderr.write(t));
}
