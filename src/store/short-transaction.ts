import type { DataSource } from 'typeorm';
import { driverDialect, type QueryOutcome } from '../dialects/index.js';
import type { DialectName, Statement } from '../dialects/index.js';

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
  return driverDialect(dialect).inTurn(dataSource, async () => {
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
