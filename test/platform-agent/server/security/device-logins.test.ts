/**
 * The device logins of Mobile SMARTS (settings `device_login`, off by default): a password alone
 * («на ТСД Mobile SMARTS не спрашивает имени пользователя, а только его пароль»), or the user
 * barcode («Вход по штрихкоду»). Both find the user by a keyed lookup tag, then verify the scrypt
 * hash, and go through the same failure rules as a name and a password.
 */
import { describe, expect, it } from 'vitest';
import { MINUTE_MS } from '../../../../shared/clock.js';
import { PASSWORD, rejectsWith, useSecurityEnv } from './fixtures.js';

const env = useSecurityEnv();
const IVANOV_PASSWORD = 'Ivanov-2026';
const PETROV_PASSWORD = 'Petrov-2026';

async function deviceUsers(): Promise<void> {
  await env().accounts.create({ username: 'Иванов', password: IVANOV_PASSWORD, role: 'mobile', barcode: '2000000012345' });
  await env().accounts.create({ username: 'Петров', password: PETROV_PASSWORD, role: 'mobile' });
}

const byPassword = (password: string, deviceId = 'tsd-1') => env().login({ username: '', password, method: 'password', deviceId });
const byBarcode = (barcode: string, deviceId = 'tsd-1') => env().login({ username: '', password: barcode, method: 'barcode', deviceId });

describe('device logins: password only', () => {
  it('is refused while off, with the field to give, before anything is counted', async () => {
    await deviceUsers();
    const err = await rejectsWith(byPassword(IVANOV_PASSWORD), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.details?.field).toBe('username');
    expect(await env().store.getDevice('tsd-1')).toBeNull();
  });

  it('logs the user in by the password alone once on; a wrong password fails as any wrong password does', async () => {
    await deviceUsers();
    await env().patchSettings({ device_login: { password_only: true } });
    const pair = await byPassword(IVANOV_PASSWORD);
    expect((await env().auth.authenticate(pair.access_token, 'api')).sub).toBe('Иванов');
    expect((await env().auth.authenticate((await byPassword(PETROV_PASSWORD)).access_token, 'api')).sub).toBe('Петров');
    await rejectsWith(byPassword('Nobody-2026'), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('locks the device after the failure count, and then refuses a right password on it too', async () => {
    await deviceUsers();
    await env().patchSettings({ device_login: { password_only: true } });
    for (let i = 0; i < 5; i++) await rejectsWith(byPassword(`Guess-${i}-2026`), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    const locked = await rejectsWith(byPassword(IVANOV_PASSWORD), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(locked.retryAfterSeconds).toBe(15 * 60);
    // Another device is not locked; this one is again once its lock has passed.
    await byPassword(IVANOV_PASSWORD, 'tsd-2');
    env().clock.advance(15 * MINUTE_MS);
    await byPassword(IVANOV_PASSWORD);
  });

  it("refuses a new or changed password equal to another user's while on, and turning it on while two users share one", async () => {
    await deviceUsers();
    await env().accounts.create({ username: 'Сидоров', password: IVANOV_PASSWORD, role: 'mobile' });
    const refused = await rejectsWith(env().patchSettings({ device_login: { password_only: true } }), 'PLATFORM_ERR_INVALID_SETTING');
    expect(refused.details?.field).toBe('device_login.password_only');
    expect(refused.message).toContain('Иванов and Сидоров');
    await env().accounts.update('Сидоров', { password: 'Sidorov-2026' });
    await env().patchSettings({ device_login: { password_only: true } });
    await rejectsWith(
      env().accounts.create({ username: 'Кузнецов', password: PETROV_PASSWORD, role: 'mobile' }),
      'PLATFORM_ERR_PASSWORD_IN_USE',
    );
    await rejectsWith(env().accounts.update('Сидоров', { password: PETROV_PASSWORD }), 'PLATFORM_ERR_PASSWORD_IN_USE');
    // A user may keep (set again) its own password.
    await env().accounts.update('Петров', { password: PETROV_PASSWORD });
  });

  it("is for mobile users only: an administrator's password alone logs nobody in", async () => {
    await env().accounts.create({ username: 'root', password: PASSWORD, role: 'admin' });
    await env().patchSettings({ device_login: { password_only: true } });
    await rejectsWith(byPassword(PASSWORD), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('cannot find a user whose password was set before tags existed (null tag) until it is set again', async () => {
    await deviceUsers();
    await env().store.updateUser('Петров', { passwordTag: null }, env().clock.now());
    await env().patchSettings({ device_login: { password_only: true } });
    await rejectsWith(byPassword(PETROV_PASSWORD), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await env().accounts.update('Петров', { password: PETROV_PASSWORD });
    await byPassword(PETROV_PASSWORD);
  });
});

describe('device logins: barcode', () => {
  it('logs in by the user barcode once on; off, it is refused naming the field', async () => {
    await deviceUsers();
    expect((await rejectsWith(byBarcode('2000000012345'), 'PLATFORM_ERR_INVALID_REQUEST')).details?.field).toBe('barcode');
    await env().patchSettings({ device_login: { barcode: true } });
    expect((await env().auth.authenticate((await byBarcode('2000000012345')).access_token, 'api')).sub).toBe('Иванов');
    // The password is not a barcode, nor the barcode a password.
    await rejectsWith(byBarcode(IVANOV_PASSWORD), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(
      env().login({ username: 'Иванов', password: '2000000012345', deviceId: 'tsd-1' }),
      'PLATFORM_ERR_INVALID_CREDENTIALS',
    );
  });

  it("keeps barcodes unique, never shows one, and a new barcode ends the user's sessions", async () => {
    await deviceUsers();
    await rejectsWith(env().accounts.update('Петров', { barcode: '2000000012345' }), 'PLATFORM_ERR_BARCODE_IN_USE');
    await env().patchSettings({ device_login: { barcode: true } });
    const pair = await byBarcode('2000000012345');
    const user = await env().user('Иванов');
    expect(user.barcodeHash).not.toContain('2000000012345');
    expect(JSON.stringify(user)).not.toContain('2000000012345');
    await env().accounts.update('Иванов', { barcode: '2000000054321' });
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(byBarcode('2000000012345'), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await byBarcode('2000000054321');
    await env().accounts.update('Иванов', { barcode: null });
    await rejectsWith(byBarcode('2000000054321'), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('refuses barcodes that are too short, too long or carry control characters', async () => {
    await deviceUsers();
    for (const barcode of ['123', 'x'.repeat(129), 'ab\ncd', ' 12345', '12345 ', 42])
      expect((await rejectsWith(env().accounts.update('Петров', { barcode }), 'PLATFORM_ERR_INVALID_REQUEST')).details?.field).toBe(
        'barcode',
      );
  });

  it('locks the device after the failure count of wrong barcodes', async () => {
    await deviceUsers();
    await env().patchSettings({ device_login: { barcode: true } });
    for (let i = 0; i < 5; i++) await rejectsWith(byBarcode(`200000000000${i}`), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(byBarcode('2000000012345'), 'PLATFORM_ERR_DEVICE_LOCKED');
  });
});
