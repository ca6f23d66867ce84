/**
 * One read per request: within one HTTP request (`inRequest`), the store's plain reads —
 * settings, the signing key, the operations catalog, a user, a group — are made once and shared
 * by every rule that asks (the token check, the account check, the operation check each asked
 * for the settings or the user again). Any call that may write (a change, a counted attempt, a
 * transaction) forgets what the request read, so a request sees its own changes. The next request reads again: what
 * another instance changed is in force for it, as before. On a shared store this saves database
 * round trips; on SQLite, statement runs.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { PlatformStore } from './store.js';

/** Reads that take no time argument and change nothing: safe to share within one request. */
const SHARED_READS: ReadonlySet<PropertyKey> = new Set<keyof PlatformStore>([
  'getSettings',
  'getSigningKey',
  'listCustomOperations',
  'getUser',
  'getLoginUser',
  'getGroup',
]);

/** Other reads: made every time they are asked (they take a time, or are rarely repeated), and they change nothing, so what the request read stays. */
const OTHER_READS: ReadonlySet<PropertyKey> = new Set<keyof PlatformStore>([
  'getConfig',
  'getFamily',
  'getDevice',
  'getDeviceUser',
  'deviceLockedUntil',
  'listDevices',
  'listUsers',
  'listGroups',
  'countAdmins',
  'countUsersInGroup',
  'usersBySecretTag',
  'sharedPasswords',
  'ambiguousNames',
  'lookupKey',
  'getMobileToken',
]);

const scope = new AsyncLocalStorage<Map<string, Promise<unknown>>>();

/** Runs `fn` (one request) with its own reads. */
export function inRequest<T>(fn: () => T): T {
  return scope.run(new Map(), fn);
}

/** `store`, sharing its plain reads within each `inRequest` (outside one, every call goes straight through). */
export function withRequestReads(store: PlatformStore): PlatformStore {
  // One wrapper per method, made on first use: every store call of a request goes through here.
  const wrappers = new Map<PropertyKey, unknown>();
  const wrap = (prop: PropertyKey, method: (...args: unknown[]) => unknown): unknown => {
    if (OTHER_READS.has(prop)) return method.bind(store);
    if (!SHARED_READS.has(prop))
      return (...args: unknown[]) => {
        scope.getStore()?.clear();
        return method.apply(store, args);
      };
    return (...args: unknown[]) => {
      const reads = scope.getStore();
      if (!reads) return method.apply(store, args);
      const key = `${String(prop)}\0${JSON.stringify(args)}`;
      let read = reads.get(key);
      if (!read) {
        read = method.apply(store, args) as Promise<unknown>;
        reads.set(key, read);
        // A failed read is not kept: the next rule that asks tries again (and meets the error itself).
        read.catch(() => reads.delete(key));
      }
      // Each caller gets its own copy: a rule that changes what it got changes nothing for the next.
      return read.then((v) => structuredClone(v));
    };
  };
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      let wrapper = wrappers.get(prop);
      if (wrapper === undefined) {
        wrapper = wrap(prop, value as (...args: unknown[]) => unknown);
        wrappers.set(prop, wrapper);
      }
      return wrapper;
    },
  });
}
