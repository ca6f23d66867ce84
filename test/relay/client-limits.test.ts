import { afterEach, describe, expect, it } from 'vitest';
import { ClientLimits, clientKey, type ClientLimitsOptions } from '../../relay/edge/client-limits.js';
import { ManualClock } from '../../shared/clock.js';

const made: ClientLimits[] = [];
afterEach(() => {
  for (const limits of made.splice(0)) limits.close();
});

function limits(options: Partial<ClientLimitsOptions> = {}): { limits: ClientLimits; clock: ManualClock } {
  const clock = new ManualClock();
  const l = new ClientLimits({
    maxConnectionsPerIp: 0,
    maxRequestsPerSecondPerIp: 0,
    requestBurstPerIp: 0,
    maxTrackedIps: 1000,
    clock,
    ...options,
  });
  made.push(l);
  return { limits: l, clock };
}

describe('per-IP connection limit', () => {
  it('refuses the connection past the limit, per address, and admits again once one closes', () => {
    const { limits: l } = limits({ maxConnectionsPerIp: 2 });
    expect(l.openConnection('10.0.0.1')).toBe('ok');
    expect(l.openConnection('10.0.0.1')).toBe('ok');
    expect(l.openConnection('10.0.0.1')).toBe('per_ip_connections');
    expect(l.openConnection('10.0.0.2')).toBe('ok');
    expect(l.connectionsOf('10.0.0.1')).toBe(2);
    l.closeConnection('10.0.0.1');
    expect(l.openConnection('10.0.0.1')).toBe('ok');
  });

  it('forgets an address when its last connection closes', () => {
    const { limits: l } = limits({ maxConnectionsPerIp: 5 });
    for (let i = 0; i < 100; i++) expect(l.openConnection(`10.0.${i >> 8}.${i & 255}`)).toBe('ok');
    expect(l.size).toBe(100);
    for (let i = 0; i < 100; i++) l.closeConnection(`10.0.${i >> 8}.${i & 255}`);
    expect(l.size).toBe(0);
  });

  it('tracks at most maxTrackedIps addresses: a new one is refused while all are busy', () => {
    const { limits: l, clock } = limits({ maxConnectionsPerIp: 5, maxTrackedIps: 3 });
    for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) expect(l.openConnection(ip)).toBe('ok');
    expect(l.openConnection('10.0.0.4')).toBe('table_full');
    // a known address still gets its connections
    expect(l.openConnection('10.0.0.1')).toBe('ok');
    expect(l.size).toBe(3);
    l.closeConnection('10.0.0.2');
    clock.advance(1_000);
    expect(l.openConnection('10.0.0.4')).toBe('ok');
  });

  it('lets at most maxLingeringRefusalsPerIp refused connections linger, and forgets the address after', () => {
    const { limits: l } = limits({ maxConnectionsPerIp: 1, maxLingeringRefusalsPerIp: 2 });
    expect(l.openConnection('10.0.0.1')).toBe('ok');
    expect(l.beginRefusal('10.0.0.1')).toBe(true);
    expect(l.beginRefusal('10.0.0.1')).toBe(true);
    expect(l.beginRefusal('10.0.0.1')).toBe(false);
    // an address that is not tracked has no lingering refusal
    expect(l.beginRefusal('10.0.0.9')).toBe(false);
    l.closeConnection('10.0.0.1');
    expect(l.size).toBe(1);
    l.endRefusal('10.0.0.1');
    l.endRefusal('10.0.0.1');
    expect(l.size).toBe(0);
  });

  it('is off with 0, and tracks nothing when every per-IP limit is off', () => {
    const { limits: l } = limits();
    expect(l.enabled).toBe(false);
    expect(l.rateLimited).toBe(false);
    expect(l.takeRequest('10.0.0.1')).toBe(0);
  });
});

describe('per-IP request rate (token bucket)', () => {
  it('allows the burst, then one request per 1/rate seconds, with Retry-After in whole seconds', () => {
    const { limits: l, clock } = limits({ maxRequestsPerSecondPerIp: 2, requestBurstPerIp: 3 });
    expect(l.openConnection('10.0.0.1')).toBe('ok');
    expect([l.takeRequest('10.0.0.1'), l.takeRequest('10.0.0.1'), l.takeRequest('10.0.0.1')]).toEqual([0, 0, 0]);
    expect(l.takeRequest('10.0.0.1')).toBe(1);
    clock.advance(499);
    expect(l.takeRequest('10.0.0.1')).toBe(1);
    clock.advance(1);
    expect(l.takeRequest('10.0.0.1')).toBe(0);
    expect(l.takeRequest('10.0.0.1')).toBe(1);
    // another address has its own bucket
    expect(l.openConnection('10.0.0.2')).toBe('ok');
    expect(l.takeRequest('10.0.0.2')).toBe(0);
  });

  it('defaults the burst to twice the rate', () => {
    const { limits: l } = limits({ maxRequestsPerSecondPerIp: 5 });
    l.openConnection('10.0.0.1');
    const taken = Array.from({ length: 11 }, () => l.takeRequest('10.0.0.1'));
    expect(taken.filter((t) => t === 0)).toHaveLength(10);
  });

  it('remembers a drained bucket after the last connection closes, until it is full again', () => {
    const { limits: l, clock } = limits({ maxRequestsPerSecondPerIp: 10, requestBurstPerIp: 10 });
    l.openConnection('10.0.0.1');
    for (let i = 0; i < 10; i++) l.takeRequest('10.0.0.1');
    l.closeConnection('10.0.0.1');
    // reconnecting does not refill the bucket
    expect(l.size).toBe(1);
    l.openConnection('10.0.0.1');
    expect(l.takeRequest('10.0.0.1')).toBe(1);
    l.closeConnection('10.0.0.1');
    clock.advance(500);
    expect(l.sweep()).toBe(0);
    clock.advance(500);
    expect(l.sweep()).toBe(1);
    expect(l.size).toBe(0);
  });

  it('does not limit an address it does not track (its connection was exempt)', () => {
    const { limits: l } = limits({ maxRequestsPerSecondPerIp: 1, requestBurstPerIp: 1 });
    for (let i = 0; i < 5; i++) expect(l.takeRequest('10.0.0.1')).toBe(0);
    expect(l.size).toBe(0);
  });

  it('sweeps a full table at most once a second, so a flood of new addresses costs no O(n) scan each', () => {
    const { limits: l, clock } = limits({ maxRequestsPerSecondPerIp: 1, requestBurstPerIp: 1, maxTrackedIps: 2 });
    for (const ip of ['10.0.0.1', '10.0.0.2']) {
      l.openConnection(ip);
      l.takeRequest(ip);
      l.closeConnection(ip);
    }
    expect(l.size).toBe(2);
    // buckets not yet full: nothing to forget
    expect(l.openConnection('10.0.0.3')).toBe('table_full');
    clock.advance(999);
    // full again, but the last full-table sweep was less than a second ago
    expect(l.openConnection('10.0.0.3')).toBe('table_full');
    clock.advance(1);
    expect(l.openConnection('10.0.0.3')).toBe('ok');
    expect(l.size).toBe(1);
  });
});

describe('which client an address belongs to', () => {
  it('is the IPv4 address itself, and the /64 of an IPv6 address', () => {
    expect(clientKey('10.1.2.3')).toBe('10.1.2.3');
    expect(clientKey('2001:db8:0:1::5')).toBe('2001:db8:0:1::/64');
    expect(clientKey('2001:db8:0:1:a:b:c:d')).toBe('2001:db8:0:1::/64');
    expect(clientKey('2001:0db8:0000:0001:ffff::')).toBe('2001:db8:0:1::/64');
    expect(clientKey('2001:db8::')).toBe('2001:db8:0:0::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('::')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1.2.3.4')).toBe('fe80:0:0:0::/64');
    expect(clientKey('64:ff9b::10.0.0.1')).toBe('64:ff9b:0:0::/64');
  });

  it('counts every address of one IPv6 /64 as one client, and each /64 apart', () => {
    const { limits: l } = limits({ maxConnectionsPerIp: 2 });
    expect(l.openConnection('2001:db8:0:1::1')).toBe('ok');
    expect(l.openConnection('2001:db8:0:1::2')).toBe('ok');
    expect(l.openConnection('2001:db8:0:1:ffff::3')).toBe('per_ip_connections');
    expect(l.openConnection('2001:db8:0:2::1')).toBe('ok');
    expect(l.connectionsOf('2001:db8:0:1::99')).toBe(2);
    expect(l.size).toBe(2);
    l.closeConnection('2001:db8:0:1::2');
    l.closeConnection('2001:db8:0:1::1');
    expect(l.size).toBe(1);
  });
});
