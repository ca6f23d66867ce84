import { describe, expect, it } from 'vitest';
import { errorCodes, publicCode } from '../../shared/errors.js';

describe('error catalog', () => {
  it('names every code RELAY_ERR_* or PLATFORM_ERR_*, and no two codes share a public code', () => {
    for (const code of errorCodes) expect(code).toMatch(/^(RELAY|PLATFORM)_ERR_[A-Z0-9_]+$/);
    const seen = new Map<string, string>();
    for (const code of errorCodes) {
      const pub = publicCode(code);
      expect(seen.get(pub), `${code} and ${seen.get(pub)} both show as ${pub}`).toBeUndefined();
      seen.set(pub, code);
    }
  });

  it('shows clients the code without its prefix, as before the platform codes got their own', () => {
    expect(publicCode('RELAY_ERR_NO_AGENT')).toBe('no_agent');
    expect(publicCode('PLATFORM_ERR_USER_EXISTS')).toBe('user_exists');
    expect(publicCode('PLATFORM_ERR_INVALID_CREDENTIALS')).toBe('invalid_credentials');
  });
});
