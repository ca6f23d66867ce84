import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_NAME_CHARS, nameKey, normalizeName } from '../../../../platform-agent/server/security/names.js';

describe('names: what a name may be', () => {
  it('takes names in any script, with spaces and common punctuation', () => {
    for (const name of [
      'Иванов',
      'Операторы ТСД',
      'Иванов И.И.',
      'Смена №2',
      "O'Brien",
      'Ærøskøbing',
      'Ελένη',
      '山田太郎',
      'alice@example',
      'ERP-1 (склад)',
      'a',
    ])
      expect(normalizeName(name), name).toBe(name);
  });

  it('returns the NFC form: a decomposed й is stored precomposed', () => {
    const decomposed = 'Сергеи\u0306'; // и + combining breve
    expect(normalizeName(decomposed)).toBe('Сергей');
    expect(normalizeName(decomposed)).not.toBe(decomposed);
  });

  it('refuses control and invisible characters, other spaces, and spaces at the ends or doubled', () => {
    const refused = [
      '',
      ' Иванов',
      'Иванов ',
      'Операторы  ТСД',
      'Ива\u200bнов', // zero-width space
      'Ива\u200dнов', // zero-width joiner
      'admin\u202e', // right-to-left override
      'Ива\u00adнов', // soft hyphen
      'Операторы\u00a0ТСД', // no-break space
      'Операторы\tТСД',
      'a\nb',
      'a\u0000b',
      '-alice',
      '.hidden',
      '\u0301a', // a combining mark first
      'a/b',
      'a:b',
      '<script>',
      'x'.repeat(MAX_NAME_CHARS + 1),
    ];
    for (const name of refused) expect(normalizeName(name), JSON.stringify(name)).toBeNull();
    expect(normalizeName(42)).toBeNull();
  });

  it('counts the length in characters, not UTF-16 units: 64 Cyrillic letters or 64 astral letters pass, 65 do not', () => {
    expect(normalizeName('Ж'.repeat(64))).not.toBeNull();
    expect(normalizeName('Ж'.repeat(65))).toBeNull();
    expect(normalizeName('𠀀'.repeat(64))).not.toBeNull(); // two UTF-16 units each
    expect(normalizeName('𠀀'.repeat(65))).toBeNull();
  });
});

describe('names: how two names compare (nameKey)', () => {
  it('joins names that differ only in case, in any script, with full case folding', () => {
    const same: [string, string][] = [
      ['Alice', 'alice'],
      ['ИВАНОВ', 'иванов'],
      ['Операторы ТСД', 'операторы тсд'],
      ['STRASSE', 'straße'],
      ['STRAẞE', 'strasse'], // capital sharp s (a property run found it)
      ['ΟΔΟΣ', 'οδος'],
      ['οδος', 'οδοσ'], // final sigma
      ['ﬁle', 'FILE'],
      ['Сергей', 'СЕРГЕИ\u0306'],
    ];
    for (const [a, b] of same) expect(nameKey(a), `${a} ~ ${b}`).toBe(nameKey(b));
    expect(nameKey('Иванов')).not.toBe(nameKey('Иванова'));
    // A Latin a is not a Cyrillic а: two names (look-alikes across scripts are not joined).
    expect(nameKey('alice')).not.toBe(nameKey('аlice'));
  });

  it('is idempotent on every single code point (the key of a key is the key)', () => {
    const bad: string[] = [];
    for (let c = 0; c <= 0x10ffff; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      const key = nameKey(String.fromCodePoint(c));
      if (nameKey(key) !== key) bad.push(c.toString(16));
    }
    expect(bad).toEqual([]);
  });

  it('is idempotent, and the key of a normalised name is the key of the name as typed', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 20 }), (s) => {
        expect(nameKey(nameKey(s))).toBe(nameKey(s));
        const n = normalizeName(s);
        if (n !== null) expect(nameKey(n)).toBe(nameKey(s));
      }),
      { numRuns: 5000 },
    );
  });
});
