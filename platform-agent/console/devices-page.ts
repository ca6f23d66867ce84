/**
 * Devices: those with failed logins or a lock (device id, last user, failures, locked until), and
 * an "Unlock" button per locked device.
 */
import { formatUtc } from '../security/accounts.js';
import type { DeviceRecord } from '../store/store.js';
import { csrfInput, esc } from './html.js';

export interface DevicesPageInput {
  devices: DeviceRecord[];
  now: number;
  csrf: string;
  notice: string | null;
}

export const deviceLocked = (d: DeviceRecord, now: number): boolean => d.lockedUntil !== null && d.lockedUntil > now;

/** The devices worth showing: failures counted or a lock in force; locked first. */
export function devicesOfInterest(devices: DeviceRecord[], now: number): DeviceRecord[] {
  return devices
    .filter((d) => d.failures > 0 || deviceLocked(d, now))
    .sort((a, b) => Number(deviceLocked(b, now)) - Number(deviceLocked(a, now)) || a.deviceId.localeCompare(b.deviceId));
}

export function devicesPage(p: DevicesPageInput): string {
  const rows = p.devices
    .map((d) => {
      const locked = deviceLocked(d, p.now);
      const unlock = locked
        ? `<form method="post" action="/console/devices/${esc(encodeURIComponent(d.deviceId))}/unlock">${csrfInput(p.csrf)}<button type="submit" class="secondary" aria-label="Unlock device ${esc(d.deviceId)}">Unlock</button></form>`
        : '';
      return (
        `<tr><td>${esc(d.deviceId)}</td><td>${esc(d.lastUsername ?? '—')}</td><td>${d.failures}</td>` +
        `<td${locked ? ' class="locked"' : ''}>${locked ? `Locked until ${esc(formatUtc(d.lockedUntil!))}` : 'Not locked'}</td><td>${unlock}</td></tr>`
      );
    })
    .join('\n');
  return `<h2>Devices</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
<table><caption class="hint">${p.devices.length} ${p.devices.length === 1 ? 'device' : 'devices'} with failed logins or a lock (the failure count starts again at 0 when a device is locked)</caption>
<thead><tr><th scope="col">Device ID</th><th scope="col">Last user</th><th scope="col">Failures</th><th scope="col">Locked until</th><th scope="col">Unlock</th></tr></thead>
<tbody>${rows || '<tr><td colspan="5">No device has failed logins or a lock.</td></tr>'}</tbody></table>`;
}
