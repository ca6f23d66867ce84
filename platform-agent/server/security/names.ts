/**
 * How names (usernames, group names) compare. Two names that differ only in case, or only in
 * Unicode normalisation, are the same name: `Alice` and `alice` are one account. Every lookup,
 * uniqueness check and login goes through `nameKey`, so widening the rule (full Unicode case
 * folding, when names take every script) changes this one function.
 */

/** The comparison key of a name: its NFC form, lower-cased. */
export function nameKey(name: string): string {
  return name.normalize('NFC').toLowerCase();
}
