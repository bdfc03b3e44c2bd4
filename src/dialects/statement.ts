/** What the store and the unit of work say about statements, whatever the database. */

export const dialectNames = ['postgres', 'mysql', 'sqlite'] as const;
export type DialectName = (typeof dialectNames)[number];

/** A statement with named placeholders (`:id`) compiled once into the driver's placeholder style. */
export interface Statement {
  readonly sql: string;
  readonly names: readonly string[];
  /** PostgreSQL: the prepared statement's name (derived from its text); unset for one-off statements. */
  readonly name?: string;
}

export type Params = Record<string, unknown>;

export function bind(statement: Statement, values: Params): unknown[] {
  return statement.names.map((name) => values[name]);
}

/** Isolation levels every supported database accepts in some form. */
export type IsolationLevel = 'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

/** Whether a driver gave the failure one of `codes`: pg's SQLSTATE, mysql2's code or errno, better-sqlite3's code. */
export function hasCode(err: unknown, codes: ReadonlyArray<string | number>): boolean {
  const e = err as { driverError?: { code?: string; errno?: number }; code?: string; errno?: number } | null;
  const code = e?.driverError?.code ?? e?.code ?? e?.driverError?.errno ?? e?.errno;
  return code !== undefined && codes.includes(code);
}

export function messageOf(err: unknown): string {
  return String((err as { message?: unknown } | null)?.message ?? '');
}
