import { tracingChannel, type TracingChannel } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';

/**
 * Tracing through Node's diagnostics_channel, the mechanism mysql2, undici and Node itself publish on and
 * OpenTelemetry subscribes to: no dependency, and nothing is built or measured while nobody subscribes.
 */

/** A statement of the store (README, "Tracing and metrics"). Never carries a session id. */
export interface StoreTrace {
  /** get, set, touch, destroy, prune, list, revoke, stats, ... */
  operation: string;
  table: string;
  /** The short tag of the session id's digest, as the debug log prints it; absent when no single session. */
  tag: string | undefined;
  /** Whether the statement ran inside the request's transaction. */
  joined: boolean;
  /** Milliseconds from start to settlement; set before asyncEnd. */
  durationMs?: number;
}

/** One step of a request's transaction. */
export interface TransactionTrace {
  /** acquire: waiting for a connection · begin · commit · rollback */
  phase: 'acquire' | 'begin' | 'commit' | 'rollback';
  /** postgres, mysql or sqlite. */
  database: string;
  /** The isolation level asked for at BEGIN (undefined: the database's default). */
  isolationLevel?: string;
  /** Milliseconds from start to settlement; set before asyncEnd. */
  durationMs?: number;
  /** commit: 'committed'; rollback: 'rolled back'; set on success only (a failure publishes `error`). */
  outcome?: string;
}

export const storeChannel: TracingChannel<object, StoreTrace> = tracingChannel('typeorm-session:store');
export const transactionChannel: TracingChannel<object, TransactionTrace> = tracingChannel('typeorm-session:transaction');

/** Whether anyone listens on any of the channel's events (TracingChannel.hasSubscribers is Node 22+). */
function subscribed(channel: TracingChannel<object, object>): boolean {
  return (
    channel.start.hasSubscribers ||
    channel.end.hasSubscribers ||
    channel.asyncStart.hasSubscribers ||
    channel.asyncEnd.hasSubscribers ||
    channel.error.hasSubscribers
  );
}

/**
 * Runs `fn` as a traced operation when someone subscribes, with the context `describe` makes (only then), its
 * duration set on it before asyncEnd; otherwise just runs `fn`.
 */
export function traced<C extends { durationMs?: number }, T>(
  channel: TracingChannel<object, C>,
  describe: () => C,
  fn: () => Promise<T>,
  after?: (context: C, result: T) => void,
): Promise<T> {
  if (!subscribed(channel as TracingChannel<object, object>)) return fn();
  const context = describe();
  const started = performance.now();
  return channel.tracePromise(async () => {
    try {
      const result = await fn();
      after?.(context, result);
      return result;
    } finally {
      context.durationMs = performance.now() - started;
    }
  }, context);
}
