/**
 * Lookup tags: how a password or a barcode finds its user without the user's name (the device
 * logins of Mobile SMARTS: "on the device only a password is asked", «Вход по штрихкоду»). Salted
 * scrypt hashes cannot be looked up, so beside each hash the store keeps a keyed tag,
 * HMAC-SHA256 under the store's lookup key (kept outside the database, `lookup.key`); a login
 * finds the user by the tag, then verifies the scrypt hash as every login does.
 *
 * What a leak means: the database alone gives nothing new (the tags are keyed). The database and
 * the key together let an attacker test guesses at HMAC speed rather than scrypt speed, against
 * every user at once: keep backups of platform.db and lookup.key apart.
 */
import { createHmac } from 'node:crypto';
import type { SecretKind } from '../store/store.js';

export function lookupTag(key: Buffer, kind: SecretKind, secret: string): string {
  return createHmac('sha256', key).update(`${kind}\0${secret}`).digest('base64url');
}
