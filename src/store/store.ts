import { Store, type SessionData } from 'express-session';
import type { DataSource } from 'typeorm';
import { performance } from 'node:perf_hooks';
import createDebug from 'debug';
import { settle, type Callback } from '../callback.js';
import {
  DataSourceNotInitializedError,
  SessionConflictError,
  SessionDecodeError,
  StoreClosedError,
  StoreQueryError,
  TypeormSessionError,
} from '../errors.js';
import { resolveStoreOptions, type ResolvedStoreOptions, type StoreOptions } from '../options.js';
import { sessionEntity } from './entity.js';
import { registerEntity } from './register.js';
import { compileStatements, leaseTableStatement, type Statements } from './statements.js';
import { ensureTable } from './table.js';
import { PruneTimer, pruneInBatches } from './pruner.js';
import { noSite, type SiteFinder } from './statement-site.js';
import { storeChannel, traced, type StoreTrace } from '../tracing.js';
import {
  bind,
  dialectFor,
  driverDialect,
  unsupportedTypeMessage,
  type DialectName,
  type Executor,
  type Params,
  type QueryOutcome,
  type Statement,
} from '../dialects/index.js';
import { hearPoolErrors } from '../connection-errors.js';
import { reporter } from '../reporter.js';
import { damageOf, digest, expiryOf, FETCHED, LOADED, logTag, showExpiryInForce, userIdOf, type LoadedState, type SessionLike } from './session-state.js';
import { SessionCipher } from './encryption.js';
import { inShortTransaction } from './short-transaction.js';
import { storeQueryError } from './query-error.js';

const debug = createDebug('typeorm-session:store');

type StoredSession = SessionData & { [FETCHED]?: LoadedState; [LOADED]?: LoadedState };

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
  private readonly execute: Executor;
  private readonly pruner: PruneTimer | undefined;
  private readonly report: (error: TypeormSessionError) => void;
  private readonly cipher: SessionCipher | undefined;
  private closed = false;
  private readyDone = false;
  private siteOf: SiteFinder = noSite;

  constructor(options: StoreOptions) {
    super();
    this.options = resolveStoreOptions(options);
    this.report = reporter(this.options.onError, debug);
    const { dataSource, tableName } = this.options;
    const dialect = dialectFor(String(dataSource.options.type));
    if (!dialect) throw new TypeError(unsupportedTypeMessage(String(dataSource.options.type)));
    this.dialect = dialect;
    this.tableName = tableName;
    this.statements = compileStatements(dialect, tableName, { prepare: this.options.preparedStatements });
    this.execute = driverDialect(dialect).executor(dataSource);
    this.cipher = this.options.encryptionKeys ? new SessionCipher(this.options.encryptionKeys) : undefined;
    this.registration = registerEntity(dataSource, sessionEntity({ tableName }));
    // Awaited in ready(); a rejection here must not surface as unhandled before that.
    this.registration.catch(() => undefined);
    const { pruneIntervalMs } = this.options;
    this.pruner =
      pruneIntervalMs === undefined
        ? undefined
        : new PruneTimer(pruneIntervalMs, () => this.pruneExpired(), (err) =>
            this.report(
              err instanceof TypeormSessionError
                ? err
                : new StoreQueryError('typeorm-session: background prune failed', { cause: err }),
            ),
          );
  }

  get dataSource(): DataSource {
    return this.options.dataSource;
  }

  /**
   * How this store finds the request a call belongs to (for adapters: the one that made the store calls this
   * once). Without it, every statement runs on the store's own connections.
   */
  findSitesWith(finder: SiteFinder): void {
    this.siteOf = finder;
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
    const values = this.touchValues(session);
    if (values === undefined) {
      // Inside the throttle window: nothing to write, so answer at once. express-session then sends the
      // response in one piece instead of all but its last byte now and the rest a tick later.
      if (typeof callback !== 'function') return Promise.resolve();
      callback(null);
      return undefined;
    }
    return settle(this.extend(sid, session, values), callback);
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

  /**
   * A new session for the request (express-session's regenerate()). A session id made earlier in the same
   * request and never saved has no row, so nothing is deleted for it: a login is one statement, not two.
   */
  override regenerate(req: Parameters<Store['regenerate']>[0], callback: (err?: unknown) => void): void {
    const site = this.siteOf(req);
    const id = (req as { sessionID?: string }).sessionID;
    if (site !== undefined && typeof id === 'string' && site.isUnsaved(id)) {
      debug('regenerate of a session id made in this request and never saved: nothing to delete');
      (this as unknown as { generate(req: unknown): void }).generate(req);
      callback();
      return;
    }
    super.regenerate(req, callback);
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

  /** Records what was loaded, so touch() can skip writes and save() can update only what it loaded. */
  override createSession(req: Parameters<Store['createSession']>[0], session: SessionData) {
    const created = super.createSession(req, session);
    const state = (session as StoredSession)[FETCHED];
    if (state) markLoaded(created, state);
    return created;
  }

  /**
   * For sessionStore(), which makes its own Session objects: carries what get() loaded (`data`) over to the
   * session made from it, as createSession() does. @internal
   */
  adoptLoaded(data: object, session: object): void {
    const state = (data as StoredSession)[FETCHED];
    if (state) markLoaded(session, state);
  }

  /** Whether touch() would write now (false inside the throttle window). @internal */
  touchIsDue(session: SessionData): boolean {
    return this.touchValues(session) !== undefined;
  }

  /** Stops the background pruner (waiting for a prune in progress). The DataSource stays open: it is yours. */
  async close(): Promise<void> {
    this.closed = true;
    await this.pruner?.stop();
  }

  /** Where sign-in helpers put the user id and the listing metadata in a session. */
  get sessionFields(): { userIdPath: readonly string[]; metadataField: string } {
    return { userIdPath: this.options.userIdPath, metadataField: this.options.metadataField };
  }

  /** The store's clock (the `now` option), in epoch ms: what signIn() records and signedInWithin() compares. */
  currentTime(): number {
    return this.options.now();
  }

  /** The opaque handle of a session id, as listByUser(), all() and ids() show it. */
  handleOf(sid: string): string {
    return digest(sid);
  }

  // ---- users ---------------------------------------------------------------------------------------------

  /** The live sessions of a user, most recently seen first: for "where you are signed in" pages. */
  async listByUser(userId: string | number): Promise<SessionInfo[]> {
    const { records } = await this.query('listByUser', this.statements.listByUser, {
      userId: String(userId),
      now: this.options.now(),
    });
    const sessions: SessionInfo[] = [];
    for (const row of records as Array<{ id: string; data: string; created_at: unknown; updated_at: unknown; expires_at: unknown }>) {
      const data = this.open(row.id, row.data);
      if (!data) continue;
      sessions.push({
        handle: row.id,
        createdAt: new Date(Number(row.created_at)),
        lastSeenAt: new Date(Number(row.updated_at)),
        expiresAt: new Date(Number(row.expires_at)),
        metadata: (data as unknown as Record<string, unknown>)[this.options.metadataField] ?? null,
      });
    }
    return sessions;
  }

  /**
   * Revokes every session of a user, or all but one (`except`: the current session's id, for "sign out
   * other devices"). Returns how many were revoked.
   */
  async destroyByUser(userId: string | number, options: { except?: string } = {}): Promise<number> {
    const values = { userId: String(userId), except: options.except === undefined ? undefined : digest(options.except) };
    const statement = options.except === undefined ? this.statements.destroyByUser : this.statements.destroyByUserExcept;
    return (await this.query('destroyByUser', statement, values)).affected;
  }

  /**
   * Revokes one session by the handle listByUser() gave. Returns whether it existed (and, with `userId`,
   * belonged to that user). With `{ userId }` it ends the session only if it is that user's, in one
   * statement: the form for a route where users revoke their own sessions. Without it any session is
   * ended, whoever's it is: for administration only.
   */
  async destroyByHandle(handle: string, owner?: { userId: string | number | null | undefined }): Promise<boolean> {
    if (typeof handle !== 'string' || !/^[0-9a-f]{64}$/.test(handle)) {
      throw new TypeError('typeorm-session: destroyByHandle() takes a handle from listByUser(), all() or ids()');
    }
    if (owner === undefined) {
      return (await this.query('destroyByHandle', this.statements.destroy, { id: handle })).affected > 0;
    }
    if (!owner || typeof owner !== 'object') {
      throw new TypeError('typeorm-session: destroyByHandle(handle, owner) takes { userId } as its second argument');
    }
    // No user (a request that is not signed in) owns no session; never the unchecked form.
    const { userId } = owner;
    if (typeof userId !== 'string' && typeof userId !== 'number') return false;
    const values = { id: handle, userId: String(userId) };
    return (await this.query('destroyByHandle', this.statements.destroyOwned, values)).affected > 0;
  }

  // ---- pruning -------------------------------------------------------------------------------------------

  /**
   * Deletes expired rows now, in batches of `pruneBatchSize`; returns how many. Returns 0 at once when
   * another instance (any process sharing the table) is pruning.
   */
  async pruneExpired(options: { onProgress?: (deleted: number) => void } = {}): Promise<number> {
    await this.ready();
    const s = this.statements;
    const name = 'prune';
    // Always on the pool, never joining a request's transaction (pruneExpired() called from a route): the
    // lease must be visible to other instances at once, and a request that rolls back must not bring back
    // what was pruned. Not through query() either, whose closed check would fail a prune that close() is
    // waiting for halfway, leaving its lease held; `stop` ends such a run after its batch instead.
    const run = (operation: string, statement: Statement, values: Params) => this.maintenance(operation, statement, values);
    return pruneInBatches(
      {
        createLease: () => this.createLease(),
        acquire: async (holder, now, until) =>
          (await run('lease', s.leaseAcquire, { name, holder, now, until })).affected === 1,
        release: async (holder) => void (await run('lease', s.leaseRelease, { name, holder })),
        deleteBatch: async (now, limit) => (await run('prune', s.pruneBatch, { now, floor: -now, limit })).affected,
      },
      {
        batchSize: this.options.pruneBatchSize,
        now: this.options.now,
        onProgress: options.onProgress,
        stop: () => this.closed,
      },
    );
  }

  /**
   * Makes sure the 'prune' lease row exists. A session table made by something other than this store
   * (TypeORM's `synchronize` on the registered entity) comes without the lease table, and ensureTable()
   * only looks for the session table; so a missing lease table is created here, when createTable allows.
   */
  private async createLease(): Promise<void> {
    const values = { name: 'prune' };
    try {
      await this.maintenance('lease', this.statements.leaseCreate, values);
      return;
    } catch (err) {
      if (!this.options.createTable || !driverDialect(this.dialect).isMissingTable((err as Error).cause)) throw err;
    }
    try {
      await this.maintenance('lease table creation', { sql: leaseTableStatement(this.dialect, this.tableName), names: [] }, {});
    } catch (err) {
      if (!driverDialect(this.dialect).isAlreadyExists((err as Error).cause)) throw err;
    }
    await this.maintenance('lease', this.statements.leaseCreate, values);
  }

  /** One statement on the pool, outside any request scope, errors wrapped. */
  private async maintenance(operation: string, statement: Statement, values: Params): Promise<QueryOutcome> {
    if (driverDialect(this.dialect).singleConnection && this.siteOf(undefined)?.routeOf(this.options.dataSource, false) === 'join') {
      // SQLite's one connection is held by this request's transaction until the request ends: waiting for
      // our turn on it would deadlock, so there the prune can only join that transaction.
      return this.query(operation, statement, values);
    }
    try {
      return await traced(storeChannel, () => this.trace(operation, values, false), () => this.execute(statement, bind(statement, values)));
    } catch (cause) {
      throw storeQueryError(this.dialect, operation, statement, cause);
    }
  }

  /** What a tracing subscriber hears of a statement: never an id, only its digest's short tag. */
  private trace(operation: string, values: Params, joined: boolean): StoreTrace {
    const id = values.id;
    return { operation, table: this.tableName, tag: typeof id === 'string' ? logTag(id) : undefined, joined };
  }

  /**
   * For readiness probes: one cheap query on the store's own connections, outside any request. Resolves
   * with whether the session table exists and how long the round trip took; rejects with StoreQueryError
   * when the database does not answer.
   */
  async ping(): Promise<StorePing> {
    if (this.closed) throw new StoreClosedError();
    const started = performance.now();
    const { records } = await this.maintenance('ping', this.statements.exists, {});
    const found = (records[0] as { found?: unknown } | undefined)?.found;
    return { table: found === true || Number(found) > 0, latencyMs: performance.now() - started };
  }

  /** Counts for operators: live sessions, expired rows waiting for a prune, and the users with most sessions. */
  async stats(options: { topUsers?: number } = {}): Promise<StoreStats> {
    const now = this.options.now();
    const [live, expired, users] = await Promise.all([
      this.query('stats', this.statements.count, { now }),
      this.query('stats', this.statements.countExpired, { now, floor: -now }),
      this.query('stats', this.statements.countByUser, { now, limit: options.topUsers ?? 10 }),
    ]);
    const count = (r: QueryOutcome) => Number((r.records[0] as { n?: unknown } | undefined)?.n ?? 0);
    return {
      live: count(live),
      expired: count(expired),
      topUsers: (users.records as Array<{ user_id: string; n: unknown }>).map((r) => ({ userId: r.user_id, sessions: Number(r.n) })),
    };
  }

  // ---- operations ----------------------------------------------------------------------------------------

  private async read(sid: string): Promise<SessionData | null> {
    const handle = digest(sid);
    const now = this.options.now();
    const { records } = await this.query('get', this.statements.get, { id: handle, now });
    const row = records[0] as { data: string; expires_at: unknown; version: unknown } | undefined;
    if (!row) return null;
    const session = this.cipher ? this.open(handle, row.data) : this.decode(handle, row.data);
    if (session) {
      const state: LoadedState = { expiresAt: Number(row.expires_at), version: Number(row.version) };
      showExpiryInForce(session as SessionLike, state.expiresAt);
      Object.defineProperty(session, FETCHED, { value: state, enumerable: false, configurable: true });
    }
    return session;
  }

  private async write(sid: string, session: SessionData): Promise<void> {
    const now = this.options.now();
    const expires = expiryOf(session as SessionLike, now, this.options.ttlMs);
    await this.save(sid, session, expires, now, (session as StoredSession)[LOADED]);
  }

  /**
   * Saves `data` under `sid` with an explicit expiry (epoch ms), or the store's ttl when it is undefined.
   * For adapters whose session library tracks expiry itself (koa-session's maxAge). `loaded` is what
   * getWithState() returned for this session in the same request, so the save cannot re-create a session
   * destroyed meanwhile.
   */
  async setWithExpiry(sid: string, data: object, expiresAt: number | undefined, loaded?: LoadedState): Promise<void> {
    const now = this.options.now();
    await this.save(sid, data, expiresAt ?? now + this.options.ttlMs, now, loaded);
  }

  /** get(), plus the state a later setWithExpiry() needs; for adapters without express-session's createSession. */
  async getWithState(sid: string): Promise<{ data: SessionData; loaded: LoadedState } | null> {
    const data = (await this.read(sid)) as StoredSession | null;
    return data ? { data, loaded: data[FETCHED]! } : null;
  }

  private async save(sid: string, session: object, expires: number, now: number, loaded: LoadedState | undefined) {
    const id = digest(sid);
    const values = {
      id,
      data: this.seal(id, this.options.serializer.stringify(session)),
      expires: Math.min(expires, now + this.options.absoluteMs),
      absolute: this.options.absoluteMs,
      now,
      userId: userIdOf(session as SessionLike, this.options.userIdPath),
      version: loaded?.version,
    };
    if (!loaded) {
      // From here on a row may exist for this id, so a later destroy must really delete.
      this.siteOf(requestOf(session))?.noteSaved(sid);
      const cap = this.options.maxSessionsPerUser;
      if (cap === undefined || values.userId === null) {
        await this.query('set', this.statements.upsert, values, session);
        return;
      }
      // A new session of a user (a sign-in): the sessions it ends go with it or not at all.
      await this.atomically('set', [
        [this.statements.upsert, values],
        [this.statements.capUser, { ...values, keep: cap - 1 }],
      ], session);
      return;
    }
    if ((await this.query('set', this.statements.update, values, session)).affected === 1) {
      loaded.version += 1;
      loaded.expiresAt = values.expires;
      return;
    }
    // Nothing updated: the session is gone (destroyed, revoked, expired) or another request saved it first.
    const { records } = await this.query('set', this.statements.versionOf, values, session);
    const current = records[0] as { version: unknown } | undefined;
    if (!current) {
      debug('save of %s… dropped: the session was destroyed meanwhile', logTag(values.id));
      return;
    }
    const conflict = new SessionConflictError(
      `typeorm-session: session ${logTag(values.id)}… was saved by another request since this one loaded it ` +
        `(version ${loaded.version}, now ${Number(current.version)})`,
    );
    if (this.options.onConflict === 'reject') {
      // The request must not answer as if its session change had been kept.
      this.siteOf(requestOf(session))?.writeFailed(conflict);
      throw conflict;
    }
    this.report(conflict);
    loaded.version = Number(current.version);
    await this.save(sid, session, expires, now, loaded);
  }

  /** What a touch would write, or undefined inside the throttle window (the stored expiry is recent enough). */
  private touchValues(session: SessionData): TouchValues | undefined {
    const now = this.options.now();
    const expires = Math.min(expiryOf(session as SessionLike, now, this.options.ttlMs), now + this.options.absoluteMs);
    const window = Math.floor(Math.min(this.options.touchAfterMs, Math.max(0, (expires - now) / 10)));
    const state = (session as StoredSession)[LOADED];
    if (state && expires - state.expiresAt < window) return undefined;
    return { expires, now, threshold: expires - window };
  }

  private async extend(sid: string, session: SessionData, touch: TouchValues): Promise<void> {
    const values = { id: digest(sid), ...touch, absolute: this.options.absoluteMs };
    await this.query('touch', this.statements.touch, values, session);
    const state = (session as StoredSession)[LOADED];
    if (state) state.expiresAt = touch.expires;
  }

  private async erase(sid: string | string[]): Promise<void> {
    if (typeof sid === 'string' && this.siteOf(undefined)?.isUnsaved(sid)) {
      debug('destroy of a session id generated in this request and never saved: nothing to delete');
      return;
    }
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
    const { records } = await this.query('all', this.statements.all, { now: this.options.now() });
    const result: Record<string, SessionData> = {};
    for (const row of records as Array<{ id: string; data: string }>) {
      const session = this.open(row.id, row.data);
      if (session) result[row.id] = session;
    }
    return result;
  }

  private async readIds(): Promise<string[]> {
    const { records } = await this.query('ids', this.statements.ids, { now: this.options.now() });
    return (records as Array<{ id: string }>).map((row) => row.id);
  }

  private async countLive(): Promise<number> {
    const { records } = await this.query('length', this.statements.count, { now: this.options.now() });
    return Number((records[0] as { n: string | number } | undefined)?.n ?? 0);
  }

  private async eraseAll(): Promise<void> {
    await this.query('clear', this.statements.clear, {});
  }

  // ---- plumbing ------------------------------------------------------------------------------------------

  /** The text stored in `data`: encrypted for the row's id when encryptionKeys are set. */
  private seal(id: string, text: string): string {
    return this.cipher ? this.cipher.seal(id, text) : text;
  }

  /** A stored row's session: decrypted (when encryptionKeys are set) and decoded, or null, reported. */
  private open(handle: string, stored: string): StoredSession | null {
    if (!this.cipher) return this.decode(handle, stored);
    let text: string;
    try {
      text = this.cipher.open(handle, stored);
    } catch (cause) {
      this.report(
        new SessionDecodeError(`typeorm-session: stored session ${logTag(handle)}… could not be decrypted; treated as no session`, {
          cause,
        }),
      );
      return null;
    }
    return this.decode(handle, text);
  }

  private decode(handle: string, text: string): StoredSession | null {
    try {
      const value: unknown = this.options.serializer.parse(text);
      const damage = damageOf(value);
      if (damage === undefined) return value as StoredSession;
      throw new TypeError(damage);
    } catch (cause) {
      this.report(
        new SessionDecodeError(`typeorm-session: stored session ${logTag(handle)}… could not be decoded; treated as no session`, {
          cause,
        }),
      );
      return null;
    }
  }



  /** True once ready() has succeeded. */
  get isReady(): boolean {
    return this.readyDone;
  }

  /** Resolves once the entity is registered and the table exists; a failure is retried on the next call. */
  ready(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreClosedError());
    if (!this.readiness) {
      const attempt = this.prepare();
      this.readiness = attempt;
      attempt.then(
        () => {
          this.readyDone = true;
          this.pruner?.start();
        },
        () => {
          if (this.readiness === attempt) this.readiness = undefined;
        },
      );
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
    // Before the first request: every connection the pool makes from now on has a listener from its birth.
    hearPoolErrors(dataSource.driver);
    await this.registration;
    try {
      await ensureTable({
        dataSource,
        dialect: this.dialect,
        table: tableName,
        createTable,
        existsSql: this.statements.exists.sql,
        run: async (sql) => (await this.execute({ sql, names: [] }, [])).records,
      });
    } catch (err) {
      if (err instanceof TypeormSessionError) throw err;
      throw new StoreQueryError(`typeorm-session: checking the session table "${tableName}" failed`, { cause: err });
    }
  }

  /**
   * Runs a few statements that must land together. Inside a request whose transaction is open they join it
   * (query() does that per statement, as it skips them in a request that rolls back); otherwise they run as
   * one short transaction of their own on the pool.
   */
  private async atomically(operation: string, steps: Step[], session?: unknown): Promise<void> {
    if (!this.readyDone) await this.ready();
    const site = this.siteOf(requestOf(session));
    // Joined or skipped, each statement goes its own way through query(), all the same way.
    if (site !== undefined && site.routeOf(this.options.dataSource, true) !== 'own') {
      for (const [statement, values] of steps) await this.query(operation, statement, values, session);
      return;
    }
    const bound = steps.map(([statement, values]) => ({ statement, parameters: bind(statement, values) }));
    try {
      await traced(storeChannel, () => this.trace(operation, steps[0]![1], false), () => inShortTransaction(this.options.dataSource, this.dialect, bound));
    } catch (cause) {
      const error = new StoreQueryError(`typeorm-session: session ${operation} failed`, {
        cause: site ? site.causeOf(cause) : cause,
      });
      if (site && WRITES.has(operation)) site.writeFailed(error);
      throw error;
    }
  }

  /**
   * Runs one statement. Inside a request whose transaction is open, it joins that transaction, so the session
   * commits or rolls back with the request's own writes. A session write made while the response is being
   * finished, in a request that will roll back, is skipped. Everything else runs on the pool as one statement.
   */
  private async query(operation: string, statement: Statement, values: Params, session?: unknown): Promise<QueryOutcome> {
    if (!this.readyDone) await this.ready();
    const site = this.siteOf(requestOf(session));
    const write = WRITES.has(operation);
    const route = site === undefined ? 'own' : site.routeOf(this.options.dataSource, write);
    const parameters = bind(statement, values);
    if (route === 'skip') {
      debug('%s skipped: the request is rolling back', operation);
      return { records: [], affected: 0 };
    }
    try {
      const run = route === 'join' ? () => site!.runJoined(statement.sql, parameters) : () => this.execute(statement, parameters);
      return await traced(storeChannel, () => this.trace(operation, values, route === 'join'), run);
    } catch (cause) {
      const error = storeQueryError(this.dialect, operation, statement, site ? site.causeOf(cause) : cause);
      if (site && write) site.writeFailed(error);
      throw error;
    }
  }
}

const WRITES = new Set(['set', 'touch', 'destroy']);

/** The request express-session ties a session object to (a Koa session's data has none). */
function requestOf(session: unknown): unknown {
  return (session as { req?: unknown } | null | undefined)?.req;
}

type Step = [Statement, Params];

interface TouchValues {
  expires: number;
  now: number;
  threshold: number;
}

/** Ties what was loaded to the session object express-session made from it (invisible to JSON and for-in). */
function markLoaded(session: object, state: LoadedState): void {
  Object.defineProperty(session, LOADED, { value: state, enumerable: false, configurable: true, writable: true });
}

/** One of a user's sessions, as listByUser() returns it. */
export interface SessionInfo {
  /** Opaque handle for destroyByHandle(); not the session id. */
  handle: string;
  createdAt: Date;
  /** Last save or touch (accurate to `touchAfter`). */
  lastSeenAt: Date;
  expiresAt: Date;
  /** The session's `metadataField` value (for example `{ userAgent, ip }` recorded at sign-in), or null. */
  metadata: unknown;
}

export interface StorePing {
  /** Whether the session table exists. */
  table: boolean;
  /** The round trip, in milliseconds. */
  latencyMs: number;
}

export interface StoreStats {
  live: number;
  expired: number;
  topUsers: Array<{ userId: string; sessions: number }>;
}
