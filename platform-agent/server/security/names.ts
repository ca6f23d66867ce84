/**
 * User and group names: what a name may be, and how two names compare.
 *
 * A name may be written in any script: letters (with their combining marks), digits, single
 * spaces between words and common punctuation (`. _ @ - ' ’ ( ) , & + # №`), 1-64 characters
 * (code points, after NFC normalisation), starting with a letter or a digit. Control characters,
 * invisible ones (zero-width joiners and spaces, bidirectional controls, soft hyphens) and every
 * other kind of space are refused: they would let two names that look alike be two accounts.
 *
 * Two names are the same name when their keys are equal (`nameKey`): NFC, then Unicode case
 * folding. `Alice` and `alice`, `ИВАНОВ` and `иванов`, `STRASSE` and `straße` are one account.
 * Every lookup, uniqueness check and login goes through `nameKey`.
 */

/** Longest name, in characters (code points after NFC). */
export const MAX_NAME_CHARS = 64;

/** A letter or digit first; then letters, marks, digits, the punctuation, and single spaces between words. */
const NAME = /^[\p{L}\p{Nd}](?:[\p{L}\p{M}\p{Nd}._@'’(),&+#№-]| (?! |$))*$/u;

/** What the field's error says a name may be. */
export const NAME_RULE = `expected 1-${MAX_NAME_CHARS} characters: letters, digits, spaces and . _ @ - ' ( ) , & + # №, starting with a letter or a digit`;

/** The name in NFC, or null when it is not a valid name. */
export function normalizeName(name: unknown): string | null {
  if (typeof name !== 'string') return null;
  const nfc = name.normalize('NFC');
  if ([...nfc].length > MAX_NAME_CHARS || !NAME.test(nfc)) return null;
  return nfc;
}

/**
 * The comparison key of a name: NFC, then full Unicode case folding, done as lower, upper, then
 * lower case (`ß` → `SS` → `ss`, capital `ẞ` → `ß` → `SS` → `ss`, final `ς` → `Σ` → `σ`, `ﬁ` →
 * `FI` → `fi`), then NFC again. The first lower case matters: upper case alone leaves `ẞ` as it
 * is, and its key would not be the key of `ß`. It joins a little more than the Unicode folding
 * table does (dotless `ı` and `i` are one key): for uniqueness that errs on the safe side.
 */
export function nameKey(name: string): string {
  return name.normalize('NFC').toLowerCase().toUpperCase().toLowerCase().normalize('NFC');
}
