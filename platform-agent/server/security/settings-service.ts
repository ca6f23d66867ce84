/**
 * One way to change the security settings, for the admin API, the control panel and the
 * `platform-agent settings set` CLI alike: read the stored settings → validate the patch
 * (settings.ts) → save → every token voided when a validity changed → the end of every lock in
 * force recalculated when a lock duration changed (both inside the store's one transaction) →
 * the `settings_changed` audit line: who, through what, which settings, and what followed.
 */
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { PlatformStore, StoredSettings } from '../store/store.js';
import { applySettingsPatch, lockoutPolicy, type SecuritySettings, type SettingsChange } from './settings.js';

/** Where a change came from, for the audit line. */
export type ChangeVia = 'api' | 'console' | 'cli';

/** One setting a change touches, by its dotted name (`lockout.device_failures`). */
export interface SettingDiff {
  setting: string;
  from: unknown;
  to: unknown;
}

/** A validated change, not saved yet: what it sets, which settings differ and what saving it implies. */
export interface CheckedChange extends SettingsChange {
  changed: SettingDiff[];
}

export class SettingsService {
  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  get(): Promise<StoredSettings> {
    return this.store.getSettings();
  }

  /** Validates `patch` against the stored settings (RelayError with `details.field` when a value is wrong); saves nothing. */
  async check(patch: unknown): Promise<CheckedChange> {
    const { settings } = await this.store.getSettings();
    const change = applySettingsPatch(settings, patch);
    if (change.next.device_login.password_only && !settings.device_login.password_only) await this.checkPasswordsUnique();
    return { ...change, changed: settingsDiff(settings, change.next) };
  }

  /** Password-only login finds a user by the password: it cannot be turned on while two users share one. */
  private async checkPasswordsUnique(): Promise<void> {
    const shared = await this.store.sharedPasswords();
    if (shared.length === 0) return;
    const field = 'device_login.password_only';
    throw new RelayError(
      'PLATFORM_ERR_INVALID_SETTING',
      `${field}: every user's password must be unique first; these users share a password: ${shared.map((names) => names.join(' and ')).join('; ')}`,
      { details: { field, shared } },
    );
  }

  /** Saves a checked change with what it implies, and logs it. A change that differs in nothing saves and logs nothing. */
  async save(change: CheckedChange, by: string, via: ChangeVia): Promise<StoredSettings> {
    if (change.changed.length === 0) return this.store.getSettings();
    const stored = await this.store.saveSettings(change.next, {
      invalidateTokens: change.invalidatesTokens,
      recalculateLocks: change.recalculatesLocks ? lockoutPolicy(change.next) : null,
      now: this.clock.now(),
    });
    this.logger.info(
      {
        event: 'settings_changed',
        by,
        via,
        settings: change.changed.map((c) => c.setting),
        invalidatedTokens: change.invalidatesTokens,
        recalculatedLocks: change.recalculatesLocks,
      },
      'security settings changed',
    );
    return stored;
  }

  /** `check` then `save`. */
  async update(patch: unknown, by: string, via: ChangeVia): Promise<CheckedChange> {
    const change = await this.check(patch);
    await this.save(change, by, via);
    return change;
  }
}

function flatten(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value))
    for (const [key, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${key}` : key, out);
  else out[prefix] = value;
  return out;
}

/** The settings whose values differ, by dotted name. */
export function settingsDiff(before: SecuritySettings, after: SecuritySettings): SettingDiff[] {
  const [a, b] = [flatten(before), flatten(after)];
  return Object.keys(b)
    .filter((key) => JSON.stringify(a[key]) !== JSON.stringify(b[key]))
    .map((key) => ({ setting: key, from: a[key], to: b[key] }));
}
