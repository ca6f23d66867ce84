/**
 * Devices (devices-page.ts): the list and its search, and the "Unlock" button of a locked device.
 */
import { RelayError } from '../../../shared/errors.js';
import type { ConsoleRequest, ConsoleServices } from './console-request.js';
import { devicesPage, filterDevices } from './devices-page.js';
import { page, redirect, sendHtml } from './html.js';
import { t } from './i18n/i18n.js';

export class DevicesHandlers {
  constructor(private readonly s: ConsoleServices) {}

  /** `devices`: the list, searched by `?q=`, with the notice of a device just unlocked. */
  readonly list = async ({ res, session, query }: ConsoleRequest): Promise<void> => {
    const { store, clock } = this.s;
    const q = query.get('q') ?? '';
    const unlocked = query.get('unlocked');
    const notice = unlocked === null ? null : t('devices.unlocked', { device: unlocked });
    const devices = filterDevices(await store.listDevices(), q);
    const usernames = new Set((await store.listUsers()).map((u) => u.username));
    const body = devicesPage({ devices, q, usernames, now: clock.now(), csrf: session.csrf, notice });
    sendHtml(res, 200, page({ title: t('devices.title'), current: 'devices', csrf: session.csrf, body }));
  };

  /** `GET devices/:id/unlock`: back to the list. */
  readonly toList = ({ res }: ConsoleRequest): void => redirect(res, '/console/devices');

  /** `POST devices/:id/unlock`: unlocks the device and goes back to the list as it was searched. */
  readonly unlock = async ({ res, session, params }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const deviceId = params.id!;
    const q = form.get('q') ?? '';
    if (!(await this.s.store.unlockDevice(deviceId))) throw new RelayError('PLATFORM_ERR_DEVICE_NOT_FOUND');
    this.s.logger.info({ event: 'device_unlocked', deviceId, by: session.claims.sub, via: 'console' }, 'device unlocked');
    redirect(res, `/console/devices?${q ? `q=${encodeURIComponent(q)}&` : ''}unlocked=${encodeURIComponent(deviceId)}`);
  };
}
