import type { DataSource } from 'typeorm';
import { withTurn } from '../unit-of-work/connection.js';
import type { QueryOutcome } from './executor.js';
import type { DialectName, Statement } from './sql.js';

// How long the statements wait for SQLite's single connection while a request transaction holds it (as a
// single store statement does).
const SQLITE_TURN_TIMEOUT_MS = 10_000;

/**
 * Runs a few of the store's statements as one short transaction of their own on the pool, for a write that
 * must not land halfway (a new session and the sessions it ends) when there is no request transaction to
 * join. Rolled back on any failure; the first error is thrown as it came.
 */
export function inShortTransaction(
  dataSource: DataSource,
  dialect: DialectName,
  steps: ReadonlyArray<{ statement: Statement; parameters: unknown[] }>,
): Promise<QueryOutcome[]> {
  return withTurn(dataSource, dialect, SQLITE_TURN_TIMEOUT_MS, async () => {
    const runner = dataSource.createQueryRunner('master');
    try {
      await runner.startTransaction();
      const outcomes: QueryOutcome[] = [];
      for (const { statement, parameters } of steps) {
        const result = (await runner.query(statement.sql, parameters, true)) as { records?: unknown[]; affected?: number };
        outcomes.push({ records: result.records ?? [], affected: result.affected ?? 0 });
      }
      await runner.commitTransaction();
      return outcomes;
    } catch (err) {
      // The rollback's own failure (a dead connection) says less than the error that led here.
      if (runner.isTransactionActive) await runner.rollbackTransaction().catch(() => undefined);
      throw err;
    } finally {
      await runner.release();
    }
  });
}
