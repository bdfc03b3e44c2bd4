import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Encryption of the `data` column at rest: AES-256-GCM from node:crypto, authenticated, with the row's id
 * (the session id's digest) as associated data, so a row copied or moved to another id does not decrypt.
 * Stored text: `tse1:<key id>:<base64 of IV (12 bytes), tag (16 bytes), ciphertext>`. The key id (8 hex
 * digits of a hash of the key) picks the key among several, which is what lets keys rotate: the first key
 * encrypts, every listed key decrypts, and a row is re-encrypted with the first key at its next write.
 */
const FORMAT = 'tse1:';
const KEY_ID_LENGTH = 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;

function keyError(index: number): TypeError {
  // The key itself is never shown: it is a secret.
  return new TypeError(
    'typeorm-session: option "encryptionKeys" must be a non-empty array of 32-byte keys, each a Buffer or ' +
      `Uint8Array, 64 hex digits, or base64 of 32 bytes (as \`openssl rand -base64 32\` prints); key ${index} is not`,
  );
}

function keyFrom(key: unknown, index: number): Buffer {
  if (key instanceof Uint8Array) {
    if (key.length === 32) return Buffer.from(key); // a copy: the caller may reuse or wipe its buffer
    throw keyError(index);
  }
  if (typeof key === 'string') {
    if (/^[0-9a-fA-F]{64}$/.test(key)) return Buffer.from(key, 'hex');
    if (/^[A-Za-z0-9+/]{43}=?$|^[A-Za-z0-9_-]{43}$/.test(key)) {
      const bytes = Buffer.from(key, key.includes('-') || key.includes('_') ? 'base64url' : 'base64');
      if (bytes.length === 32) return bytes;
    }
  }
  throw keyError(index);
}

/** Validates the `encryptionKeys` option (at construction, a TypeError naming it). */
export function resolveKeys(keys: unknown): Buffer[] {
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new TypeError('typeorm-session: option "encryptionKeys" must be a non-empty array of keys, the newest first');
  }
  return keys.map(keyFrom);
}

function keyIdOf(key: Buffer): string {
  return createHash('sha256').update('typeorm-session key id\0').update(key).digest('hex').slice(0, KEY_ID_LENGTH);
}

export class SessionCipher {
  private readonly keys: ReadonlyArray<{ id: string; key: Buffer }>;

  constructor(keys: readonly Buffer[]) {
    this.keys = keys.map((key) => ({ id: keyIdOf(key), key }));
  }

  /** Encrypts a row's data with the first key, bound to the row's id. */
  seal(rowId: string, text: string): string {
    const { id, key } = this.keys[0]!;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(associatedData(id, rowId));
    const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
    return `${FORMAT}${id}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  /** Decrypts a row's data; throws when it is not encrypted, its key is not listed, or it fails authentication. */
  open(rowId: string, stored: string): string {
    if (!stored.startsWith(FORMAT) || stored[FORMAT.length + KEY_ID_LENGTH] !== ':') {
      // Accepting clear text here would let anyone who can write the table plant session data.
      throw new Error('the row is not encrypted (written without encryptionKeys, or altered)');
    }
    const keyId = stored.slice(FORMAT.length, FORMAT.length + KEY_ID_LENGTH);
    const candidates = this.keys.filter((k) => k.id === keyId);
    if (candidates.length === 0) throw new Error(`the row was encrypted with a key that is not in encryptionKeys (key id ${keyId})`);
    const raw = Buffer.from(stored.slice(FORMAT.length + KEY_ID_LENGTH + 1), 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new Error('the encrypted row is truncated');
    let failure: unknown;
    for (const { id, key } of candidates) {
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
        decipher.setAAD(associatedData(id, rowId));
        decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
        return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
      } catch (err) {
        failure = err;
      }
    }
    throw new Error('the encrypted row failed authentication: altered, or moved from another id', { cause: failure });
  }
}

function associatedData(keyId: string, rowId: string): Buffer {
  return Buffer.from(`${FORMAT}${keyId}:${rowId}`, 'utf8');
}
