/**
 * Issue 17, point 5, against a real database (TEST_DB): `encryptionKeys` encrypts the data column at rest
 * (AES-256-GCM, the row's id as associated data), rotates keys, and reports what does not decrypt.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { SessionDecodeError, TypeormSessionStore, type TypeormSessionError } from '../src/index.js';
import { digest } from '../src/store/session-state.js';
import { createTestDatabase, openDataSource, type TestDatabase } from './helpers/database.js';
import { sql } from './helpers/dialect.js';

let db: TestDatabase;
let dataSource: DataSource;
const stores: TypeormSessionStore[] = [];
beforeAll(async () => {
  db = await createTestDatabase();
  dataSource = await openDataSource(db.url);
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await dataSource.destroy();
  await db.drop();
});

const clock = Date.now();
const now = () => clock;
let tableCounter = 0;
function storeOn(tableName: string, options: Partial<ConstructorParameters<typeof TypeormSessionStore>[0]> = {}) {
  const store = new TypeormSessionStore({ dataSource, tableName, now, pruneInterval: false, ...options });
  stores.push(store);
  return store;
}
const newTable = () => `enc_${++tableCounter}`;
const session = (extra: Record<string, unknown> = {}, maxAge = 3_600_000) =>
  ({ cookie: { originalMaxAge: maxAge, expires: new Date(clock + maxAge).toISOString() }, ...extra }) as any;
const rawData = async (table: string, sid: string) =>
  ((await dataSource.query(sql(`SELECT data FROM "${table}" WHERE id = $1`), [digest(sid)])) as Array<{ data: string }>)[0]?.data;
const setRawData = (table: string, sid: string, data: string) =>
  dataSource.query(sql(`UPDATE "${table}" SET data = $1 WHERE id = $2`), [data, digest(sid)]);

const keyA = randomBytes(32);
const keyB = randomBytes(32);

describe('encryptionKeys', () => {
  test('the data column holds no clear text; every read path decrypts; user_id stays clear for listByUser', async () => {
    const table = newTable();
    const store = storeOn(table, { encryptionKeys: [keyA] });
    await store.set('s1', session({ userId: 'alice', email: 'alice@example.test', roles: ['admin'] }));
    const stored = await rawData(table, 's1');
    expect(stored).toMatch(/^tse1:[0-9a-f]{8}:/);
    expect(stored).not.toContain('alice');
    expect(stored).not.toContain('admin');
    expect(await store.get('s1')).toMatchObject({ email: 'alice@example.test', roles: ['admin'] });
    expect(Object.values(await store.all())).toEqual([expect.objectContaining({ email: 'alice@example.test' })]);
    const [listed] = await store.listByUser('alice');
    expect(listed!.handle).toBe(store.handleOf('s1'));
    expect(await store.length()).toBe(1);
    expect((await store.stats()).live).toBe(1);
    // A loaded save, a touch and a destroy work as without encryption.
    const loaded = store.createSession({ sessionID: 's1', sessionStore: store } as any, (await store.get('s1'))!) as any;
    loaded.n = 2;
    await store.set('s1', loaded);
    expect(await store.get('s1')).toMatchObject({ n: 2 });
    expect(await rawData(table, 's1')).not.toBe(stored); // a fresh IV on every write
    await store.destroy('s1');
    expect(await store.get('s1')).toBeNull();
  });

  test('a row copied to another id does not decrypt: SessionDecodeError to onError, no session', async () => {
    const table = newTable();
    const errors: TypeormSessionError[] = [];
    const store = storeOn(table, { encryptionKeys: [keyA], onError: (e) => errors.push(e) });
    await store.set('admin-session', session({ userId: 'admin', roles: ['admin'] }));
    await store.set('attacker-session', session({ userId: 'mallory' }));
    await setRawData(table, 'attacker-session', (await rawData(table, 'admin-session'))!);
    expect(await store.get('attacker-session')).toBeNull();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(SessionDecodeError);
    expect(errors[0]!.code).toBe('ERR_SESSION_DECODE');
    expect(String((errors[0]!.cause as Error).message)).toMatch(/failed authentication/);
    // The original row still reads.
    expect(await store.get('admin-session')).toMatchObject({ roles: ['admin'] });
    // A flipped byte in the ciphertext is refused too, and clear text planted in the column as well.
    const stored = (await rawData(table, 'admin-session'))!;
    const flipped = stored.slice(0, -6) + (stored.at(-6) === 'A' ? 'B' : 'A') + stored.slice(-5);
    await setRawData(table, 'admin-session', flipped);
    expect(await store.get('admin-session')).toBeNull();
    await setRawData(table, 'admin-session', JSON.stringify(session({ roles: ['admin'] })));
    expect(await store.get('admin-session')).toBeNull();
    expect(errors.map((e) => e.code)).toEqual(['ERR_SESSION_DECODE', 'ERR_SESSION_DECODE', 'ERR_SESSION_DECODE']);
  });

  test('rotation: a new key first, the old one after; old rows read and are re-encrypted with the new key at their next write', async () => {
    const table = newTable();
    const before = storeOn(table, { encryptionKeys: [keyA] });
    await before.set('old', session({ n: 1 }));
    const underA = (await rawData(table, 'old'))!;

    const rotated = storeOn(table, { encryptionKeys: [keyB, keyA] });
    expect(await rotated.get('old')).toMatchObject({ n: 1 });
    await rotated.set('new', session({ n: 2 }));
    const underB = (await rawData(table, 'new'))!;
    expect(underB.slice(0, 14)).not.toBe(underA.slice(0, 14)); // another key id

    const loaded = rotated.createSession({ sessionID: 'old', sessionStore: rotated } as any, (await rotated.get('old'))!) as any;
    loaded.n = 3;
    await rotated.set('old', loaded);
    expect((await rawData(table, 'old'))!.slice(0, 14)).toBe(underB.slice(0, 14));

    // Once every row is rewritten the old key can go: the rewritten row reads with keyB alone.
    const onlyB = storeOn(table, { encryptionKeys: [keyB] });
    expect(await onlyB.get('old')).toMatchObject({ n: 3 });
    expect(await onlyB.get('new')).toMatchObject({ n: 2 });
  });

  test('the wrong key: rows read as no session, reported; nothing is overwritten by reading', async () => {
    const table = newTable();
    const errors: TypeormSessionError[] = [];
    await storeOn(table, { encryptionKeys: [keyA] }).set('s', session({ n: 1 }));
    const stored = await rawData(table, 's');
    const wrong = storeOn(table, { encryptionKeys: [keyB], onError: (e) => errors.push(e) });
    expect(await wrong.get('s')).toBeNull();
    expect(await wrong.listByUser('nobody')).toEqual([]);
    expect(errors.map((e) => e.code)).toEqual(['ERR_SESSION_DECODE']);
    expect(String((errors[0]!.cause as Error).message)).toMatch(/not in encryptionKeys/);
    expect(await rawData(table, 's')).toBe(stored);
    // Without keys, an encrypted row is undecodable data too, not a crash.
    const plain = storeOn(table, { onError: (e) => errors.push(e) });
    expect(await plain.get('s')).toBeNull();
    expect(errors).toHaveLength(2);
  });

  test('prune and stats work on encrypted rows', async () => {
    const table = newTable();
    const store = storeOn(table, { encryptionKeys: [keyA] });
    await store.set('short', session({}, 1_000));
    await store.set('long', session({}, 3_600_000));
    const later = storeOn(table, { encryptionKeys: [keyA], now: () => clock + 10_000 });
    expect(await later.stats()).toMatchObject({ live: 1, expired: 1 });
    expect(await later.pruneExpired()).toBe(1);
    expect(await later.get('long')).not.toBeNull();
  });

  test('keys are 32 bytes as a Buffer, 64 hex digits or base64; anything else is a TypeError naming the option, never showing the key', () => {
    for (const good of [[keyA], [keyA.toString('hex')], [keyA.toString('base64')], [keyA.toString('base64url')], [new Uint8Array(keyA), keyB]]) {
      expect(() => new TypeormSessionStore({ dataSource, encryptionKeys: good })).not.toThrow();
    }
    const secret = 'correct horse battery staple';
    for (const bad of [[], [secret], [randomBytes(16)], [keyA.toString('hex').slice(2)], 'not-an-array', [42]]) {
      let error: unknown;
      try {
        new TypeormSessionStore({ dataSource, encryptionKeys: bad as never });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(TypeError);
      expect(String((error as Error).message)).toContain('option "encryptionKeys"');
      expect(String((error as Error).message)).not.toContain(secret);
    }
  });
});
