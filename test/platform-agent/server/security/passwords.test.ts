import { describe, expect, it } from 'vitest';
import {
  defaultScryptParams,
  generatePassword,
  hashPassword,
  passwordProblem,
  verifyPassword,
} from '../../../../platform-agent/server/security/passwords.js';
import { fastScrypt } from './fixtures.js';

describe('passwords: scrypt hashes', () => {
  it('verifies the password a hash was made from', async () => {
    const hash = await hashPassword('s3cret password', fastScrypt);
    expect(await verifyPassword('s3cret password', hash)).toBe(true);
  });

  it('refuses a wrong password, including one that differs only in case or a trailing space', async () => {
    const hash = await hashPassword('s3cret password', fastScrypt);
    expect(await verifyPassword('s3cret passworD', hash)).toBe(false);
    expect(await verifyPassword('s3cret password ', hash)).toBe(false);
    expect(await verifyPassword('', hash)).toBe(false);
  });

  it('stores the parameters with the hash: scrypt$<log2 N>$<r>$<p>$<salt>$<key>', async () => {
    const hash = await hashPassword('s3cret password', { logN: 11, r: 4, p: 2 });
    const parts = hash.split('$');
    expect(parts.slice(0, 4)).toEqual(['scrypt', '11', '4', '2']);
    expect(Buffer.from(parts[4]!, 'base64url')).toHaveLength(16);
    expect(Buffer.from(parts[5]!, 'base64url')).toHaveLength(32);
  });

  it('verifies hashes made with other parameters than the current default (parameters raised later)', async () => {
    const older = await hashPassword('s3cret password', fastScrypt);
    const other = await hashPassword('s3cret password', { logN: 11, r: 4, p: 2 });
    expect(await verifyPassword('s3cret password', older)).toBe(true);
    expect(await verifyPassword('s3cret password', other)).toBe(true);
    expect(defaultScryptParams.logN).toBeGreaterThanOrEqual(15);
  });

  it('salts every hash afresh', async () => {
    const [a, b] = await Promise.all([hashPassword('same', fastScrypt), hashPassword('same', fastScrypt)]);
    expect(a).not.toBe(b);
  });

  it('treats canonically equivalent Unicode spellings as the same password (NFKC)', async () => {
    const hash = await hashPassword('caf\u00e9 au lait', fastScrypt);
    expect(await verifyPassword('cafe\u0301 au lait', hash)).toBe(true);
  });

  it('never matches a malformed hash', async () => {
    const good = await hashPassword('s3cret password', fastScrypt);
    const [, logN, r, p, salt, key] = good.split('$') as [string, string, string, string, string, string];
    const malformed = [
      '',
      's3cret password',
      `bcrypt$${logN}$${r}$${p}$${salt}$${key}`,
      `scrypt$${logN}$${r}$${p}$${salt}`,
      `scrypt$${logN}$${r}$${p}$${salt}$${key}$extra`,
      `scrypt$x$${r}$${p}$${salt}$${key}`,
      `scrypt$0$${r}$${p}$${salt}$${key}`,
      `scrypt$10.5$${r}$${p}$${salt}$${key}`,
      `scrypt$23$${r}$${p}$${salt}$${key}`,
      `scrypt$${logN}$0$${p}$${salt}$${key}`,
      `scrypt$${logN}$${r}$-1$${salt}$${key}`,
      `scrypt$${logN}$${r}$${p}$${salt}$${key.slice(0, 20)}`,
      `scrypt$${logN}$${r}$${p}$${salt}$`,
    ];
    for (const stored of malformed) expect(await verifyPassword('s3cret password', stored), stored).toBe(false);
  });
  it('never matches, and never throws on, a hash whose parameters scrypt itself refuses', async () => {
    const good = await hashPassword('s3cret password', fastScrypt);
    const [, , , , salt, key] = good.split('$') as [string, string, string, string, string, string];
    // N = 2^17 with r = 1 breaks scrypt's N < 2^(16 r) rule: node:crypto throws ERR_CRYPTO_INVALID_SCRYPT_PARAMS.
    await expect(verifyPassword('s3cret password', `scrypt$17$1$1$${salt}$${key}`)).resolves.toBe(false);
  });
});

describe('passwords: rules and generation', () => {
  it('wants 8 to 1024 characters', () => {
    expect(passwordProblem('1234567')).not.toBeNull();
    expect(passwordProblem('12345678')).toBeNull();
    expect(passwordProblem('x'.repeat(1024))).toBeNull();
    expect(passwordProblem('x'.repeat(1025))).not.toBeNull();
  });

  it('generates 20 base64url characters (120 bits), different every time, that meet the rules', () => {
    const a = generatePassword();
    expect(a).toMatch(/^[A-Za-z0-9_-]{20}$/);
    expect(generatePassword()).not.toBe(a);
    expect(passwordProblem(a)).toBeNull();
  });
});
