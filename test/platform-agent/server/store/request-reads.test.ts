/**
 * One read per request (store/request-reads.ts) on a real SqliteStore: the plain reads are made
 * once within a request and shared (as copies), a write in between makes the request read again,
 * and another request — or code outside any — always reads afresh.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../../../platform-agent/server/store/sqlite-store.js';
import { inRequest, withRequestReads } from '../../../../platform-agent/server/store/request-reads.js';
import type { PlatformStore } from '../../../../platform-agent/server/store/store.js';
import { cloneSettings, defaultSettings } from '../../../../platform-agent/server/security/settings.js';
import { T0, userRecord } from '../../../fixtures/records.js';

let raw: SqliteStore;
let calls: string[];
let store: PlatformStore;

beforeEach(async () => {
  raw = new SqliteStore(':memory:');
  await raw.createUser(userRecord({ username: 'alice' }));
  calls = [];
  // counts what reaches the real store
  const counted = new Proxy(raw, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  store = withRequestReads(counted);
});
afterEach(async () => raw.close());

describe('reads shared within one request', () => {
  it('reads the settings and a user once however many rules ask, each getting its own copy', async () => {
    await inRequest(async () => {
      const [a, b] = await Promise.all([store.getSettings(), store.getSettings()]);
      const c = await store.getSettings();
      expect(a).toEqual(c);
      a.settings.lockout.device_failures = 99;
      expect((await store.getSettings()).settings.lockout.device_failures).toBe(defaultSettings.lockout.device_failures);
      expect(b).not.toBe(c);
      expect((await store.getUser('alice'))?.username).toBe('alice');
      expect((await store.getUser('ALICE'))?.username).toBe('alice'); // another argument: another read
      expect((await store.getUser('alice'))?.username).toBe('alice');
    });
    expect(calls.filter((c) => c === 'getSettings')).toHaveLength(1);
    expect(calls.filter((c) => c === 'getUser')).toHaveLength(2);
  });

  it('keeps what it read across other reads (a refresh family, a device lock), which it makes every time', async () => {
    await inRequest(async () => {
      await store.getSettings();
      await store.getFamily('f1');
      await store.deviceLockedUntil('d1', 'alice', T0);
      await store.getFamily('f1');
      await store.getSettings();
    });
    expect(calls).toEqual(['getSettings', 'getFamily', 'deviceLockedUntil', 'getFamily']);
  });

  it('reads again after a write in the same request: a request sees its own changes', async () => {
    await inRequest(async () => {
      expect((await store.getUser('alice'))?.description).toBeNull();
      await store.updateUser('alice', { description: 'changed' }, T0);
      expect((await store.getUser('alice'))?.description).toBe('changed');
      await store.saveSettings(
        { ...cloneSettings(defaultSettings), ip_login_attempts_per_minute: 7 },
        {
          invalidateTokens: false,
          recalculateLocks: null,
          now: T0,
        },
      );
      expect((await store.getSettings()).settings.ip_login_attempts_per_minute).toBe(7);
    });
    expect(calls.filter((c) => c === 'getUser')).toHaveLength(2);
  });

  it('shares nothing between requests, nor outside one: a change by anyone is seen by the next request', async () => {
    await inRequest(async () => expect((await store.getUser('alice'))?.description).toBeNull());
    await raw.updateUser('alice', { description: 'by another instance' }, T0); // straight to the store, as another instance would
    await inRequest(async () => expect((await store.getUser('alice'))?.description).toBe('by another instance'));
    await store.getSettings();
    await store.getSettings();
    expect(calls.filter((c) => c === 'getUser')).toHaveLength(2);
    expect(calls.filter((c) => c === 'getSettings')).toHaveLength(2);
  });

  it('does not keep a failed read', async () => {
    await raw.close();
    await inRequest(async () => {
      await expect(store.getSettings()).rejects.toThrow();
      await expect(store.getSettings()).rejects.toThrow();
    });
    expect(calls.filter((c) => c === 'getSettings')).toHaveLength(2);
    raw = new SqliteStore(':memory:');
  });
});
