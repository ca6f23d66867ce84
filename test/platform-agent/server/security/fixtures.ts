/**
 * A platform security stack for unit tests: a real SqliteStore in a fresh temp folder, a
 * ManualClock the test moves, and the services built on them (AuthService, Accounts,
 * MobileAuthenticators) with fast scrypt parameters. `restart()` closes the store and opens the
 * same folder again, as a platform restart would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, expect } from 'vitest';
import { ManualClock } from '../../../../shared/clock.js';
import { RelayError, type ErrorCode } from '../../../../shared/errors.js';
import { Accounts } from '../../../../platform-agent/server/security/accounts.js';
import { AuthService, type AuthEvent, type LoginAttempt } from '../../../../platform-agent/server/security/auth.js';
import { MobileAuthenticators } from '../../../../platform-agent/server/security/mobile-auth.js';
import type { ScryptParams } from '../../../../platform-agent/server/security/passwords.js';
import type { SettingsChange } from '../../../../platform-agent/server/security/settings.js';
import { SettingsService } from '../../../../platform-agent/server/security/settings-service.js';
import type { TokenPair } from '../../../../platform-agent/server/security/tokens.js';
import { SqliteStore } from '../../../../platform-agent/server/store/sqlite-store.js';
import type { Role, UserRecord } from '../../../../platform-agent/server/store/store.js';

/** scrypt N = 2^10: about a millisecond a hash, so hundreds of logins stay fast. */
export const fastScrypt: ScryptParams = Object.freeze({ logN: 10, r: 8, p: 1 });

export const PASSWORD = 'correct horse battery';
export const WRONG_PASSWORD = 'wrong horse battery';

export class SecurityEnv {
  readonly clock = new ManualClock();
  readonly events: AuthEvent[] = [];
  store!: SqliteStore;
  auth!: AuthService;
  accounts!: Accounts;
  mobile!: MobileAuthenticators;
  settings!: SettingsService;
  /** The settings service's audit lines (`settings_changed`). */
  readonly audit: Record<string, unknown>[] = [];
  private ipCount = 0;

  constructor(readonly dir: string) {
    this.open();
  }

  private open(): void {
    this.store = new SqliteStore(this.dir);
    this.auth = new AuthService(this.store, this.clock, (e) => this.events.push(e), fastScrypt);
    this.accounts = new Accounts(this.store, this.clock, fastScrypt);
    this.mobile = new MobileAuthenticators(this.store, this.auth, this.clock);
    const audit = pino({ level: 'info' }, { write: (line: string) => void this.audit.push(JSON.parse(line) as Record<string, unknown>) });
    this.settings = new SettingsService(this.store, this.clock, audit);
  }

  /** Closes the store and opens the same data folder again (a platform restart). */
  async restart(): Promise<void> {
    await this.store.close();
    this.open();
  }

  async dispose(): Promise<void> {
    await this.store.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  addUser(
    username: string,
    role: Role = 'mobile',
    extra: { account_valid_from?: string; account_valid_until?: string } = {},
  ): Promise<UserRecord> {
    return this.accounts.create({ username, password: PASSWORD, role, ...extra });
  }

  async user(username: string): Promise<UserRecord> {
    const user = await this.store.getUser(username);
    if (!user) throw new Error(`no user ${username}`);
    return user;
  }

  /** A neutral address never used before, so that the per-IP limit stays out of tests about other rules. */
  freshIp(): string {
    this.ipCount++;
    return `198.51.${this.ipCount >> 8}.${this.ipCount & 255}`;
  }

  /** A login; by default the right password, from a fresh neutral address, for the API audience. */
  login(a: Partial<LoginAttempt> & { username: string; deviceId: string }): Promise<TokenPair> {
    return this.auth.login({ password: PASSWORD, ip: this.freshIp(), ipDecision: 'neutral', audience: 'api', ...a });
  }

  /** `n` failed logins (wrong password) on one device, each refused with PLATFORM_ERR_INVALID_CREDENTIALS. */
  async fail(n: number, a: Partial<LoginAttempt> & { username: string; deviceId: string }): Promise<void> {
    for (let i = 0; i < n; i++) await rejectsWith(this.login({ password: WRONG_PASSWORD, ...a }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  }

  /** Applies a settings patch the way the admin API, the console and the CLI do (security/settings-service.ts). */
  patchSettings(patch: unknown): Promise<SettingsChange> {
    return this.settings.update(patch, 'test-admin', 'api');
  }
}

export function useSecurityEnv(): () => SecurityEnv {
  let env: SecurityEnv | undefined;
  beforeEach(() => {
    env = new SecurityEnv(mkdtempSync(join(tmpdir(), 'platform-security-test-')));
  });
  afterEach(async () => {
    await env?.dispose();
    env = undefined;
  });
  return () => {
    if (!env) throw new Error('the security env exists only inside a test');
    return env;
  };
}

/** Awaits `promise`, expects a RelayError with `code`, and returns it for more checks. */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<RelayError> {
  let result: unknown;
  try {
    result = await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe(code);
    return err as RelayError;
  }
  throw new Error(`expected ${code}, but it resolved with ${JSON.stringify(result)}`);
}

/** Runs `fn`, expects a RelayError with `code`, and returns it. */
export function throwsWith(fn: () => unknown, code: ErrorCode): RelayError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe(code);
    return err as RelayError;
  }
  throw new Error(`expected ${code}, but nothing was thrown`);
}
