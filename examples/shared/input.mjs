// What the forms accept. Checked before anything touches the database or scrypt, each with a message that
// says what to change; a request outside these limits gets 400 (413 for an oversized body).
import { normalizeEmail } from './users.mjs';

export const INPUT_LIMITS = {
  /** RFC 5321 allows at most 254 characters in an address. */
  emailLength: 254,
  /** NIST SP 800-63B: at least 8 characters; no composition rules. */
  passwordMin: 8,
  /** Long enough for any passphrase, short enough that hashing it costs nothing extra. */
  passwordMax: 256,
  /** A form body larger than this is refused before it is parsed. */
  formBytes: 4096,
};

export class InputError extends Error {
  constructor(message, status = 400) {
    super(message);
    this.name = 'InputError';
    this.status = status;
  }
}

export const tooLargeBody = () => new InputError(`The form is too large (at most ${INPUT_LIMITS.formBytes} bytes).`, 413);

/** `{ email, password }` from a submitted form, or throws an InputError saying what is wrong. */
export function credentialsFrom(form, { registering }) {
  const { email, password } = form;
  if (typeof email !== 'string' || typeof password !== 'string' || !email.trim() || !password) {
    throw new InputError('Enter an e-mail address and a password.');
  }
  if (email.length > INPUT_LIMITS.emailLength) {
    throw new InputError(`That e-mail address is too long (at most ${INPUT_LIMITS.emailLength} characters).`);
  }
  if (!/^[^\s@]+@[^\s@]+$/.test(email.trim())) throw new InputError('Enter an e-mail address such as name@example.com.');
  if (password.length > INPUT_LIMITS.passwordMax) {
    throw new InputError(`That password is too long (at most ${INPUT_LIMITS.passwordMax} characters).`);
  }
  if (registering && password.length < INPUT_LIMITS.passwordMin) {
    throw new InputError(`Choose a password of at least ${INPUT_LIMITS.passwordMin} characters.`);
  }
  return { email: normalizeEmail(email), password };
}
