/**
 * What a database's SQL looks like, in the pieces the store's statements (store/statements.ts) are built
 * from. Each database module (postgres.ts, mysql.ts, sqlite.ts) gives one.
 *
 * Times are stored as epoch milliseconds in BIGINT columns in every database. That one choice removes the
 * per-driver time zone and precision differences (MySQL TIMESTAMP vs DATETIME, SQLite's untyped text) and
 * lets tests inject a clock.
 */
export interface SqlSpec {
  quote(identifier: string): string;
  placeholder(index: number): string;
  /** Numbered placeholders ($1): a name used twice in a statement binds one parameter. */
  readonly numberedPlaceholders: boolean;
  /** Statements may be named server-side prepared statements (parsed and planned once per connection). */
  readonly namedPreparedStatements: boolean;
  /** Column types in order: id, data, times, user id. */
  readonly types: { id: string; data: string; time: string; userId: string };
  readonly tableSuffix: string;
  /** Indexes declared inside CREATE TABLE (where CREATE INDEX IF NOT EXISTS does not exist). */
  readonly indexesInTable: boolean;
  /** A one-row SELECT whose `found` column is non-zero when the table exists (the catalog answers, no error). */
  tableExists(quotedTable: string, table: string): string;
  /**
   * `ON CONFLICT`-style tail of the upsert: `assignments` (quoted column, new value) apply only while the
   * existing row passes `keep` (a condition on its columns as they were before the upsert).
   */
  upsertTail(assignments: Array<[string, string]>, keep: string): string;
  /** The value the upsert tried to insert into a column, inside its update part. */
  excluded(column: string): string;
  /** The column's value as the row had it before this upsert, inside the upsert's update part. */
  existing(table: string, column: string): string;
  createIndex(name: string, table: string, column: string): string;
  /** Skips the first :keep rows of an ordered SELECT. */
  readonly offset: string;
  /** A SELECT that has a LIMIT, as the list of an IN. */
  inSubquery(select: string): string;
  /** The smaller of two numbers. */
  readonly least: string;
  /** INSERT that does nothing when the key exists. */
  insertIgnore(table: string, columns: string): string;
  /** One bounded batch of expired rows, live or dead (`:floor` is minus `:now`). */
  pruneBatch(table: string, expires: string, id: string): string;
}
