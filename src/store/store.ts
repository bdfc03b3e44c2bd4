import { Store, type SessionData } from 'express-session';
import type { DataSource, QueryRunner } from 'typeorm';
import createDebug from 'debug';
import { settle, type Callback } from '../callback.js';
import {
  DataSourceNotInitializedError,
  SessionDecodeError,
  StoreClosedError,
  StoreQueryError,
  TypeormSessionError,
} from '../errors.js';
import { resolveStoreOptions, type ResolvedStoreOptions, type StoreOptions } from '../options.js';
import { sessionEntity } from './entity.js';
import { registerEntity } from './register.js';
import { bind, compileStatements, dialectFor, type DialectName, type Params, type Statement, type Statements } from './sql.js';
import { ensureTable } from './table.js';
import { scopeOf } from '../unit-of-work/request-scope.js';
import { digest, expiryOf, LOADED, logTag, userIdOf, type LoadedState, type SessionLike } from './session-state.js';

const debug = createDebug('typeorm-session:store');

type StoredSession = SessionData & { [LOADED]?: LoadedState };

// Deleting many ids binds one parameter each; chunks stay well under every driver's parameter limit.
const DESTROY_CHUNK = 500;

/**
 * An express-session Store kept in a SQL table through TypeORM. Every method takes an optional callback and
 * otherwise returns a promise; see README for the semantics of each.
 */
export class TypeormSessionStore extends Store {
  readonly tableName: string;
  readonly dialect: DialectName;
  private readonly options: ResolvedStoreOptions;
  private readonly statements: Statements;
  private readonly registration: Promise<void>;
  private readiness: Promise<void> | undefined;
  private readonly loaded = new WeakMap<object, LoadedState>();
  private closed = false;

  constructor(options: StoreOptions) {
    super();
    this.options = resolveStoreOptions(options);
    const { dataSource, tableName } = this.options;
    const dialect = dialectFor(String(dataSource.options.type));
    if (!dialect) {
      throw new TypeError(
        `typeorm-session: option "dataSource" uses database type "${dataSource.options.type}", ` +
          'which is not supported (postgres, cockroachdb, mysql, mariadb, better-sqlite3, sqlite, sqljs are)',
      );
    }
    this.dialect = dialect;
    this.tableName = tableName;
    this.statements = compileStatements(dialect, tableName);
    this.registration = registerEntity(dataSource, sessionEntity({ tableName }));
    // Awaited in ready(); a rejection here must not surface as unhandled before that.
    this.registration.catch(() => undefined);
  }

  get dataSource(): DataSource {
    return this.options.dataSource;
  }

  // ---- express-session Store interface -------------------------------------------------------------------

  override get(sid: string): Promise<SessionData | null>;
  override get(sid: string, callback: Callback<SessionData | null>): void;
  override get(sid: string, callback?: Callback<SessionData | null>) {
    return settle(this.read(sid), callback);
  }

  override set(sid: string, session: SessionData): Promise<void>;
  override set(sid: string, session: SessionData, callback: Callback<void>): void;
  override set(sid: string, session: SessionData, callback?: Callback<void>) {
    return settle(this.write(sid, session), callback);
  }

  /** Destroys one session, or several when given an array of ids. */
  override destroy(sid: string | string[]): Promise<void>;
  override destroy(sid: string | string[], callback: Callback<void>): void;
  override destroy(sid: string | string[], callback?: Callback<void>) {
    return settle(this.erase(sid), callback);
  }

  override touch(sid: string, session: SessionData): Promise<void>;
  override touch(sid: string, session: SessionData, callback: Callback<void>): void;
  override touch(sid: string, session: SessionData, callback?: Callback<void>) {
    return settle(this.extend(sid, session), callback);
  }

  /** Live sessions keyed by their opaque handle (the id's digest), since ids are not stored. */
  override all(): Promise<Record<string, SessionData>>;
  override all(callback: Callback<Record<string, SessionData>>): void;
  override all(callback?: Callback<Record<string, SessionData>>) {
    return settle(this.readAll(), callback);
  }

  override length(): Promise<number>;
  override length(callback: Callback<number>): void;
  override length(callback?: Callback<number>) {
    return settle(this.countLive(), callback);
  }

  override clear(): Promise<void>;
  override clear(callback: Callback<void>): void;
  override clear(callback?: Callback<void>) {
    return settle(this.eraseAll(), callback);
  }

  /** Opaque handles (digests) of the live sessions. */
  ids(): Promise<string[]>;
  ids(callback: Callback<string[]>): void;
  ids(callback?: Callback<string[]>) {
    return settle(this.readIds(), callback);
  }

  /** Records what was loaded, so touch() can tell whether the stored expiry needs a write. */
  override createSession(req: Parameters<Store['createSession']>[0], session: SessionData) {
    const created = super.createSession(req, session);
    const state = (session as StoredSession)[LOADED];
    if (state) this.loaded.set(created, state);
    return created;
  }

  /** Stops the store's background work. The DataSource belongs to the caller and stays open. */
  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- operations ----------------------------------------------------------------------------------------

  private async read(sid: string): Promise<SessionData | null> {
    const handle = digest(sid);
    const now = this.options.now();
    const rows = await this.query('get', this.statements.get, { id: handle, now });
    const row = rows[0] as { data: string; expires_at: string | number } | undefined;
    if (!row) return null;
    const session = this.decode(handle, row.data);
    if (session) {
      Object.defineProperty(session, LOADED, { value: { expiresAt: Number(row.expires_at) }, enumerable: false });
    }
    return session;
  }

  private async write(sid: string, session: SessionData): Promise<void> {
    const now = this.options.now();
    await this.upsert(sid, session, expiryOf(session as SessionLike, now, this.options.ttlMs), now);
  }

  /**
   * Saves `data` under `sid` with an explicit expiry (epoch ms), or the store's ttl when it is undefined.
   * For adapters whose session library tracks expiry itself (koa-session's maxAge).
   */
  async setWithExpiry(sid: string, data: object, expiresAt: number | undefined): Promise<void> {
    const now = this.options.now();
    await this.upsert(sid, data, expiresAt ?? now + this.options.ttlMs, now);
  }

  private async upsert(sid: string, session: object, expires: number, now: number): Promise<void> {
    const values = {
      id: digest(sid),
      data: this.options.serializer.stringify(session),
      expires,
      now,
      userId: userIdOf(session as SessionLike, this.options.userIdPath),
    };
    await this.query('set', this.statements.upsert, values, session);
  }

  private async extend(sid: string, session: SessionData): Promise<void> {
    const now = this.options.now();
    const expires = expiryOf(session as SessionLike, now, this.options.ttlMs);
    const window = Math.min(this.options.touchAfterMs, Math.max(0, (expires - now) / 10));
    const state = this.loaded.get(session);
    if (state && expires - state.expiresAt < window) return;
    await this.query('touch', this.statements.touch, { id: digest(sid), expires, now, threshold: expires - window }, session);
    if (state) state.expiresAt = expires;
  }

  private async erase(sid: string | string[]): Promise<void> {
    const ids = (Array.isArray(sid) ? sid : [sid]).map(digest);
    if (ids.length === 1) {
      await this.query('destroy', this.statements.destroy, { id: ids[0] });
      return;
    }
    for (let start = 0; start < ids.length; start += DESTROY_CHUNK) {
      const chunk = ids.slice(start, start + DESTROY_CHUNK);
      const values: Params = {};
      chunk.forEach((id, i) => (values[`id${i}`] = id));
      await this.query('destroy', this.statements.destroyMany(chunk.length), values);
    }
  }

  private async readAll(): Promise<Record<string, SessionData>> {
    const rows = await this.query('all', this.statements.all, { now: this.options.now() });
    const result: Record<string, SessionData> = {};
    for (const row of rows as Array<{ id: string; data: string }>) {
      const session = this.decode(row.id, row.data);
      if (session) result[row.id] = session;
    }
    return result;
  }

  private async readIds(): Promise<string[]> {
    const rows = await this.query('ids', this.statements.ids, { now: this.options.now() });
    return (rows as Array<{ id: string }>).map((row) => row.id);
  }

  private async countLive(): Promise<number> {
    const rows = await this.query('length', this.statements.count, { now: this.options.now() });
    return Number((rows[0] as { n: string | number } | undefined)?.n ?? 0);
  }

  private async eraseAll(): Promise<void> {
    await this.query('clear', this.statements.clear, {});
  }

  // ---- plumbing ------------------------------------------------------------------------------------------

  private decode(handle: string, text: string): StoredSession | null {
    try {
      const value = this.options.serializer.parse(text);
      if (value && typeof value === 'object') return value as StoredSession;
      throw new TypeError(`decoded to ${value === null ? 'null' : typeof value}, not an object`);
    } catch (cause) {
      this.report(
        new SessionDecodeError(`typeorm-session: stored session ${logTag(handle)}… could not be decoded; treated as no session`, {
          cause,
        }),
      );
      return null;
    }
  }

  private report(error: TypeormSessionError): void {
    debug('%s: %s', error.code, error.message);
    if (!this.options.onError) return;
    try {
      this.options.onError(error);
    } catch (err) {
      debug('onError threw: %O', err);
    }
  }

  /** Resolves once the entity is registered and the table exists; a failure is retried on the next call. */
  ready(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreClosedError());
    if (!this.readiness) {
      const attempt = this.prepare();
      this.readiness = attempt;
      attempt.catch(() => {
        if (this.readiness === attempt) this.readiness = undefined;
      });
    }
    return this.readiness;
  }

  private async prepare(): Promise<void> {
    const { dataSource, tableName, createTable } = this.options;
    if (!dataSource.isInitialized) {
      throw new DataSourceNotInitializedError(
        'typeorm-session: the DataSource is not initialized; call dataSource.initialize() before serving requests',
      );
    }
    await this.registration;
    try {
      await ensureTable({
        dataSource,
        dialect: this.dialect,
        table: tableName,
        createTable,
        existsSql: this.statements.exists.sql,
        run: (sql) => this.runOnPool(sql, []),
      });
    } catch (err) {
      if (err instanceof TypeormSessionError) throw err;
      throw new StoreQueryError(`typeorm-session: checking the session table "${tableName}" failed`, { cause: err });
    }
  }

  private async runOnPool(sql: string, parameters: unknown[], runner?: QueryRunner): Promise<unknown[]> {
    const queryRunner = runner ?? this.options.dataSource.createQueryRunner();
    try {
      const result = await queryRunner.query(sql, parameters, true);
      return (result as { records?: unknown[] }).records ?? [];
    } finally {
      if (!runner) await queryRunner.release();
    }
  }

  /**
   * Runs one statement. Inside a request whose transaction is open, it joins that transaction, so the session
   * commits or rolls back with the request's own writes. A session write made while the response is being
   * finished, in a request that will roll back, is skipped. Everything else runs on the pool as one statement.
   */
  private async query(operation: string, statement: Statement, values: Params, session?: unknown): Promise<unknown[]> {
    await this.ready();
    const scope = scopeOf(session);
    const parameters = bind(statement, values);
    try {
      if (scope && scope.unitOfWork.isOpen && scope.unitOfWork.dataSource === this.options.dataSource) {
        scope.sessionJoined = true;
        return await scope.unitOfWork.query(statement.sql, parameters);
      }
      if (scope && scope.ending && WRITES.has(operation) && !scope.willCommit()) {
        scope.sessionDiscarded = true;
        debug('%s skipped: the request is rolling back', operation);
        return [];
      }
      return await this.runOnPool(statement.sql, parameters);
    } catch (cause) {
      const error = new StoreQueryError(`typeorm-session: session ${operation} failed`, {
        cause: scope ? scope.unitOfWork.causeOf(cause) : cause,
      });
      if (scope && WRITES.has(operation)) scope.sessionFailure ??= error;
      throw error;
    }
  }
}

const WRITES = new Set(['set', 'touch', 'destroy']);
