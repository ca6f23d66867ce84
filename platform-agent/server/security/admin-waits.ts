/**
 * The administrators' brute-force rule: failed logins slow down, they never lock. Keycloak's
 * brute-force detection, in numbers from `shared/defaults.ts`: counted per address and per
 * account name, the first `freeFailures` failures in a row cost nothing, then each further
 * attempt must wait `firstWaitMs`, doubled with every failure up to `maxWaitMs`; `failureResetMs`
 * without a failure forgets the count. The device and user locks of the documents are for API
 * users: an administrator locked for a day by someone on the internet guessing would leave the
 * platform without anyone to run it.
 */
import { defaults } from '../../../shared/defaults.js';

export interface AdminWaitPolicy {
  /** Failures allowed before the first wait. */
  freeFailures: number;
  /** The first wait. */
  firstWaitMs: number;
  /** The longest wait. */
  maxWaitMs: number;
  /** A count is forgotten this long after its last failure. */
  failureResetMs: number;
}

export const adminWaitPolicy: AdminWaitPolicy = Object.freeze({
  freeFailures: defaults.adminLoginFreeFailures,
  firstWaitMs: defaults.adminLoginFirstWaitMs,
  maxWaitMs: defaults.adminLoginMaxWaitMs,
  failureResetMs: defaults.adminLoginFailureResetMs,
});

/** The wait after `failures` failures in a row: 0 up to `freeFailures`, then first × 2^(failures − free), capped. */
export function adminWaitMs(failures: number, p: AdminWaitPolicy = adminWaitPolicy): number {
  if (failures < p.freeFailures) return 0;
  // 2^40 ms is 35 years: past it the cap has long been reached (and the shift stays exact).
  const doublings = Math.min(failures - p.freeFailures, 40);
  return Math.min(p.firstWaitMs * 2 ** doublings, p.maxWaitMs);
}

/** The keys an administrator's login is counted under. */
export const adminAddressKey = (ip: string): string => `ip:${ip}`;
export const adminAccountKey = (username: string): string => `user:${username}`;
