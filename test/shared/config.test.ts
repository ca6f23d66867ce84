import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { intOption, readJsonConfig, resolveSecret } from '../../shared/config.js';
import { fingerprintSha256, normalizeFingerprint } from '../../shared/certs.js';
import { checkBearer, hashToken } from '../../relay/tunnel/tunnel-endpoint.js';
import { relayTls } from '../fixtures/harness.js';

const dir = mkdtempSync(join(tmpdir(), 'relay-config-test-'));
afterEach(() => {
  delete process.env.TEST_SECRET;
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

describe('secrets', () => {
  const base = { option: 'agent-token', env: 'TEST_SECRET', minLength: 16, value: undefined, file: undefined };

  it('takes the flag, then the file, then the environment', () => {
    const file = join(dir, 'token');
    writeFileSync(file, 'from-file-0123456789\n');
    process.env.TEST_SECRET = 'from-env-0123456789';
    expect(resolveSecret({ ...base, value: 'from-flag-0123456789', file })).toBe('from-flag-0123456789');
    expect(resolveSecret({ ...base, file })).toBe('from-file-0123456789');
    expect(resolveSecret(base)).toBe('from-env-0123456789');
  });

  it('refuses a missing, short or unreadable secret with a message naming the option', () => {
    expect(() => resolveSecret(base)).toThrow(/--agent-token-file.*TEST_SECRET/);
    expect(() => resolveSecret({ ...base, value: 'short' })).toThrow(/--agent-token: too short/);
    expect(() => resolveSecret({ ...base, file: join(dir, 'missing') })).toThrow(/--agent-token-file: cannot read/);
    expect(codeOf(() => resolveSecret(base))).toBe('RELAY_ERR_CONFIG');
  });
});

describe('numeric options and config files', () => {
  it('accepts integers in range and names the option otherwise', () => {
    expect(intOption('connect-wait-ms', '250', 0, 1000)).toBe(250);
    expect(() => intOption('connect-wait-ms', 1.5, 0, 1000)).toThrow(
      /--connect-wait-ms: 1.5 is not valid; expected an integer from 0 to 1000/,
    );
    expect(() => intOption('connect-wait-ms', 'soon', 0, 1000)).toThrow(/--connect-wait-ms/);
    expect(() => intOption('connect-wait-ms', 1001, 0, 1000)).toThrow(/--connect-wait-ms/);
  });

  it('reads a JSON object and refuses anything else', () => {
    const good = join(dir, 'good.json');
    writeFileSync(good, '{"httpPort": 8080}');
    expect(readJsonConfig(good)).toEqual({ httpPort: 8080 });
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '[1,2]');
    expect(() => readJsonConfig(bad)).toThrow(/--config: .* is not a JSON object/);
    writeFileSync(bad, '{oops');
    expect(codeOf(() => readJsonConfig(bad))).toBe('RELAY_ERR_CONFIG');
  });
});

describe('agent token check', () => {
  const hash = hashToken('the-agent-token-0123456789');
  it('accepts exactly the bearer token', () => {
    expect(checkBearer('Bearer the-agent-token-0123456789', hash)).toBe(true);
    expect(checkBearer('bearer the-agent-token-0123456789', hash)).toBe(true);
  });
  it('refuses anything else', () => {
    for (const header of [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      'Bearer the-agent-token-012345678',
      'Basic the-agent-token-0123456789',
      'Bearer the-agent-token-0123456789 extra',
    ]) {
      expect(checkBearer(header, hash)).toBe(false);
    }
  });
});

describe('fingerprints', () => {
  it('prints AA:BB form and accepts any case, with or without colons', () => {
    const fp = fingerprintSha256(relayTls().cert);
    expect(fp).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(normalizeFingerprint(fp.toLowerCase().replace(/:/g, ''))).toBe(fp);
    expect(normalizeFingerprint(`sha256:${fp}`)).toBe(fp);
    expect(normalizeFingerprint('abc')).toBeNull();
  });
});
