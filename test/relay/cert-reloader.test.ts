/**
 * CertReloader on real files in a temp folder: rewrites picked up by polling (in place and by
 * rename), half-written pairs refused, expiry warnings and days left read from a moving clock.
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CertReloader, type CertReloaderOptions } from '../../relay/tls/cert-reloader.js';
import { generateSelfSigned } from '../../shared/cert-making.js';
import { fingerprintSha256, type PemPair } from '../../shared/certs.js';
import { DAY_MS, ManualClock } from '../../shared/clock.js';
import type { RelayError } from '../../shared/errors.js';
import { until } from '../fixtures/harness.js';

type LogRecord = { level: number; event?: string; msg: string; daysLeft?: number };
const WARN = 40;

let dir: string;
let pairs: { a: PemPair; b: PemPair; c: PemPair; short: PemPair };

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'relay-cert-reloader-'));
  const make = (commonName: string, days?: number): PemPair => generateSelfSigned({ commonName, dnsNames: ['localhost'], days });
  pairs = { a: make('pair-a'), b: make('pair-b'), c: make('pair-c'), short: make('pair-short', 40) };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

let fileCount = 0;
function files(): { certFile: string; keyFile: string } {
  fileCount++;
  return { certFile: join(dir, `relay-${fileCount}.crt`), keyFile: join(dir, `relay-${fileCount}.key`) };
}

/** Writes a file the way deploy tools do: a temporary name, then a rename over the old one. */
function replace(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

function start(options: Partial<CertReloaderOptions> & { certFile: string; keyFile: string }): {
  reloader: CertReloader;
  reloads: [string, string][];
  records: LogRecord[];
} {
  const reloads: [string, string][] = [];
  const records: LogRecord[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) });
  const reloader = new CertReloader({
    logger,
    pollIntervalMs: 10,
    onReload: (cert, key) => void reloads.push([cert, key]),
    ...options,
  });
  cleanups.push(() => reloader.close());
  return { reloader, reloads, records };
}

describe('CertReloader', () => {
  it('applies a pair rewritten by rename, but not while only the key is new', async () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.a.cert);
    writeFileSync(paths.keyFile, pairs.a.key);
    const { reloader, reloads, records } = start(paths);
    expect(reloader.certificate.fingerprint).toBe(fingerprintSha256(pairs.a.cert));

    replace(paths.keyFile, pairs.b.key);
    await until(() => records.some((r) => r.event === 'tls_cert_kept'));
    expect(reloads).toEqual([]);
    expect(reloader.cert).toBe(pairs.a.cert);
    expect(records.find((r) => r.event === 'tls_cert_kept')!.level).toBe(WARN);

    replace(paths.certFile, pairs.b.cert);
    await until(() => reloads.length === 1);
    expect(reloads[0]).toEqual([pairs.b.cert, pairs.b.key]);
    expect(reloader.certificate.fingerprint).toBe(fingerprintSha256(pairs.b.cert));
    expect(records.filter((r) => r.event === 'tls_cert_reloaded')).toHaveLength(1);
  });

  it('applies a pair rewritten in place, certificate first', async () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.a.cert);
    writeFileSync(paths.keyFile, pairs.a.key);
    const { reloader, reloads } = start(paths);
    writeFileSync(paths.certFile, pairs.c.cert);
    writeFileSync(paths.keyFile, pairs.c.key);
    await until(() => reloader.cert === pairs.c.cert);
    expect(reloads.at(-1)).toEqual([pairs.c.cert, pairs.c.key]);
    // Nothing in between was a mismatched pair that got applied.
    for (const [cert, key] of reloads) expect([cert, key]).toEqual([pairs.c.cert, pairs.c.key]);
  });

  it('reload() applies at once, reports unchanged files, and keeps the pair in force when the files do not match', () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.a.cert);
    writeFileSync(paths.keyFile, pairs.a.key);
    const { reloader, reloads } = start({ ...paths, pollIntervalMs: 0 });
    expect(reloader.reload()).toMatchObject({ status: 'unchanged' });

    writeFileSync(paths.certFile, pairs.b.cert);
    writeFileSync(paths.keyFile, pairs.a.key);
    expect(reloader.reload()).toMatchObject({ status: 'kept', error: expect.stringContaining('does not belong') });
    expect(reloader.cert).toBe(pairs.a.cert);

    writeFileSync(paths.keyFile, pairs.b.key);
    expect(reloader.reload()).toMatchObject({ status: 'applied' });
    expect(reloads).toEqual([[pairs.b.cert, pairs.b.key]]);

    writeFileSync(paths.certFile, 'half a PEM');
    expect(reloader.reload()).toMatchObject({ status: 'kept' });
    rmSync(paths.keyFile);
    expect(reloader.reload()).toMatchObject({ status: 'kept', error: expect.stringContaining('ENOENT') });
    expect(reloader.cert).toBe(pairs.b.cert);
  });

  it('keeps the pair in force when the new certificate has expired, or when the listeners refuse it', () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.a.cert);
    writeFileSync(paths.keyFile, pairs.a.key);
    const clock = new ManualClock(Date.now() + 50 * DAY_MS);
    const { reloader } = start({ ...paths, pollIntervalMs: 0, clock });
    writeFileSync(paths.certFile, pairs.short.cert);
    writeFileSync(paths.keyFile, pairs.short.key);
    expect(reloader.reload()).toMatchObject({ status: 'kept', error: expect.stringContaining('expired') });
    expect(reloader.cert).toBe(pairs.a.cert);

    const refusing = start({
      ...paths,
      pollIntervalMs: 0,
      onReload: () => {
        throw new Error('bad cert for the secure context');
      },
    }).reloader;
    writeFileSync(paths.certFile, pairs.b.cert);
    writeFileSync(paths.keyFile, pairs.b.key);
    expect(refusing.reload()).toMatchObject({ status: 'kept', error: expect.stringContaining('bad cert for the secure context') });
    expect(refusing.cert).toBe(pairs.short.cert);
  });

  it('refuses to start with a key that does not belong to the certificate', () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.a.cert);
    writeFileSync(paths.keyFile, pairs.b.key);
    let thrown: unknown;
    try {
      start(paths);
    } catch (err) {
      thrown = err;
    }
    expect((thrown as RelayError).code).toBe('RELAY_ERR_CONFIG');
    expect((thrown as RelayError).details).toEqual({ problem: 'key_mismatch' });
  });

  it('counts days left by the injected clock and warns under 30 days: at start, then once a day', async () => {
    const paths = files();
    writeFileSync(paths.certFile, pairs.short.cert);
    writeFileSync(paths.keyFile, pairs.short.key);
    const clock = new ManualClock(Date.now());
    const { reloader, records } = start({ ...paths, clock });
    const expiring = (): LogRecord[] => records.filter((r) => r.event === 'tls_cert_expiring');
    expect(reloader.daysLeft()).toBe(39);
    expect(expiring()).toEqual([]);

    clock.advance(20 * DAY_MS);
    expect(reloader.daysLeft()).toBe(19);
    await until(() => expiring().length === 1);
    expect(expiring()[0]).toMatchObject({ level: WARN, daysLeft: 19 });

    clock.advance(DAY_MS);
    await until(() => expiring().length === 2);
    // Every poll in between saw 19 days and said nothing more.
    expect(expiring().map((r) => r.daysLeft)).toEqual([19, 18]);

    clock.advance(30 * DAY_MS);
    expect(reloader.daysLeft()).toBe(-12);
    await until(() => expiring().length === 3);
    expect(expiring()[2]!.level).toBeGreaterThan(WARN);

    const late = start({ ...paths, clock: new ManualClock(Date.now() + 35 * DAY_MS), pollIntervalMs: 0 });
    expect(late.reloader.daysLeft()).toBe(4);
    expect(late.records.filter((r) => r.event === 'tls_cert_expiring')).toMatchObject([{ level: WARN, daysLeft: 4 }]);
  });
});
