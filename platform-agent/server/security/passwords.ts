/**
 * Password hashing with scrypt (node:crypto, run on the libuv thread pool so it never blocks the
 * event loop). The parameters are stored with each hash, so they can be raised later without
 * invalidating old hashes: `scrypt$<log2 N>$<r>$<p>$<salt b64url>$<hash b64url>`.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. Default 15 (N = 32768, 32 MiB with r = 8). */
  logN: number;
  r: number;
  p: number;
}

/** OWASP's scrypt floor is N=2^17 r=8 p=1 for a server with headroom; 2^15 keeps a login near 60 ms on this 2-core target. */
export const defaultScryptParams: Readonly<ScryptParams> = Object.freeze({ logN: 15, r: 8, p: 1 });

const KEY_BYTES = 32;
/** Largest scrypt working memory a stored hash may ask for (128·N·r bytes). */
const MAX_SCRYPT_MEMORY_BYTES = 256 * 1024 * 1024;
const SALT_BYTES = 16;

function derive(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const N = 2 ** params.logN;
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, { N, r: params.r, p: params.p, maxmem: 256 * N * params.r }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

export async function hashPassword(password: string, params: ScryptParams = defaultScryptParams): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, params);
  return ['scrypt', params.logN, params.r, params.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

function parse(stored: string): { params: ScryptParams; salt: Buffer; key: Buffer } | null {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [logN, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  // Bounded so that a tampered hash cannot make one login allocate gigabytes or burn seconds.
  if (![logN, r, p].every((n) => Number.isInteger(n) && n > 0) || logN > 20 || r > 16 || p > 4) return null;
  if (128 * 2 ** logN * r > MAX_SCRYPT_MEMORY_BYTES) return null;
  return { params: { logN, r, p }, salt: Buffer.from(parts[4]!, 'base64url'), key: Buffer.from(parts[5]!, 'base64url') };
}

/** Constant-time check of `password` against a stored hash. A malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parse(stored);
  if (!parsed || parsed.key.length !== KEY_BYTES) return false;
  let key: Buffer;
  try {
    key = await derive(password, parsed.salt, parsed.params);
  } catch {
    return false; // parameters scrypt itself refuses
  }
  return timingSafeEqual(key, parsed.key);
}

/** Rules a new password must meet; returns a reason, or null when it is acceptable. */
export function passwordProblem(password: string): string | null {
  if (password.length < 8) return 'a password needs at least 8 characters';
  if (password.length > 1024) return 'a password may have at most 1024 characters';
  return null;
}

/** A random password for a generated account: 20 characters from base64url (120 bits). */
export function generatePassword(): string {
  return randomBytes(15).toString('base64url');
}
