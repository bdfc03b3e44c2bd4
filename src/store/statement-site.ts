import type { DataSource } from 'typeorm';
import type { QueryOutcome } from '../dialects/index.js';

/**
 * All the store knows of the request a statement of it belongs to: where the statement runs, and what the
 * request must hear of it. The request's unit of work implements it (unit-of-work/request-scope.ts), and
 * the adapter that made the store tells it how to find one (TypeormSessionStore.findSitesWith); a store
 * without a finder runs every statement on its own connections.
 */
export interface StatementSite {
  /**
   * 'join': inside the request's open transaction on `dataSource`, sharing its fate; 'skip': a session write
   * that the request's rollback would discard anyway; 'own': one autocommit statement on the store's pool.
   */
  routeOf(dataSource: DataSource, write: boolean): 'join' | 'skip' | 'own';
  /** Runs a statement in the request's transaction, once routeOf() said 'join'. */
  runJoined(sql: string, parameters: unknown[]): Promise<QueryOutcome>;
  /** The original error behind a failed statement of this request. */
  causeOf(err: unknown): unknown;
  /** A session write failed: the response must not claim success. */
  writeFailed(error: unknown): void;
  /** A session id made in this request and never saved: no row can exist for it. */
  isUnsaved(id: string): boolean;
  /** From now on a row may exist for this session id. */
  noteSaved(id: string): void;
}

/** The site of a store call, from the request it names (a session's `req`) or else from the async context. */
export type SiteFinder = (req: unknown) => StatementSite | undefined;

export const noSite: SiteFinder = () => undefined;
