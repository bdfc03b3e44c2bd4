import { TransactionHookError, type TypeormSessionError } from '../errors.js';
import { outsideFrames } from './context.js';

export type OutcomeHook = () => unknown;

/**
 * A request's afterCommit() and afterRollback() hooks. Once the transaction's outcome is known they run in
 * registration order, one after another, outside the request's async context (the transaction is over, so
 * their database work goes to the pool), and after the current turn: the response does not wait for them.
 * A failing hook is reported and the next one still runs. When the outcome is unknown (the connection died
 * during COMMIT) neither kind runs.
 */
export class OutcomeHooks {
  private readonly commit: OutcomeHook[] = [];
  private readonly rollback: OutcomeHook[] = [];
  private settled = false;

  add(on: 'commit' | 'rollback', hook: OutcomeHook): void {
    (on === 'commit' ? this.commit : this.rollback).push(hook);
  }

  /** Runs the hooks of `outcome`, once; later calls do nothing. */
  settle(outcome: 'committed' | 'rolled back' | 'unknown', report: (error: TypeormSessionError) => void): void {
    if (this.settled) return;
    this.settled = true;
    if (outcome === 'unknown') return;
    const hooks = outcome === 'committed' ? this.commit : this.rollback;
    if (hooks.length === 0) return;
    const name = outcome === 'committed' ? 'afterCommit' : 'afterRollback';
    setImmediate(() => outsideFrames(() => void runInOrder(hooks, name, report)));
  }
}

async function runInOrder(
  hooks: OutcomeHook[],
  name: 'afterCommit' | 'afterRollback',
  report: (error: TypeormSessionError) => void,
): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (cause) {
      report(new TransactionHookError(name, `typeorm-session: an ${name}() hook failed`, { cause }));
    }
  }
}
