/**
 * Keeps the relay's TLS certificate current without a restart: re-reads the certificate and key
 * files when either changes, or when asked (`reload()`, which the CLI wires to SIGHUP), and hands a
 * new pair to `onReload` (the relay swaps its listeners' secure context; open connections keep
 * theirs). A pair is applied only when the key belongs to the certificate and the certificate is
 * valid now; anything else is logged and the pair in force stays.
 */
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { certPolicy, checkCertificatePair, daysUntil, type CertificateDescription } from '../../shared/certs.js';
import { systemClock, type Clock } from '../../shared/clock.js';
import { RelayError } from '../../shared/errors.js';
import { FilePoller, signatureOf } from '../../shared/file-poll.js';
import type { Logger } from '../../shared/logger.js';

/** How often the files are stat'ed for changes, in ms (the IP rule files use the same period). */
export const certReloadPollMs = 2_000;

export interface CertReloaderOptions {
  /** PEM certificate, followed by its chain. */
  certFile: string;
  /** PEM private key of the certificate. */
  keyFile: string;
  logger: Logger;
  /**
   * Called with the new texts (as read) when a changed pair checks out. If it throws, the error is
   * logged and the previous pair stays in force.
   */
  onReload(cert: string, key: string): void;
  /** How often both files are stat'ed, in ms. Default {@link certReloadPollMs}; 0 = no polling (`reload()` only). */
  pollIntervalMs?: number;
  clock?: Clock;
  /** Fewer days left than this logs a warning. Default `certPolicy.expiryWarnDays` (30). */
  warnDays?: number;
}

/** What a reload did. `kept`: the files were not usable (see `error`); the previous pair stays. */
export type CertReloadResult = { status: 'applied' | 'unchanged'; daysLeft: number } | { status: 'kept'; error: string; daysLeft: number };

interface Pair {
  cert: string;
  key: string;
  certificate: CertificateDescription;
}

/**
 * Reads the pair when constructed (throwing a RelayError if it cannot be read or does not match:
 * a relay does not start without a certificate), then stats both paths every `pollIntervalMs`
 * and reloads when either is not the file last read (device, inode, size, mtime, ctime).
 *
 * Polling the paths rather than `fs.watch`: it follows a file replaced by rename (deploy tools,
 * `certbot`, `relay cert import`) and costs two stats a period. A pair caught half-written (new
 * key, old certificate) does not match and is not applied; the second file's change triggers the
 * next attempt.
 */
export class CertReloader {
  private readonly options: CertReloaderOptions;
  private readonly clock: Clock;
  private readonly warnDays: number;
  private current: Pair;
  /** Identities of the files last read, to reload only on a change and log each bad pair once. */
  private seen = { cert: '', key: '' };
  /** daysLeft at the last expiry warning, so that a running relay warns once a day, not every poll. */
  private warnedAtDaysLeft: number | undefined;
  private readonly poller: FilePoller;

  constructor(options: CertReloaderOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.warnDays = options.warnDays ?? certPolicy.expiryWarnDays;
    const read = this.readPair();
    this.seen = read.signatures;
    if ('error' in read) throw read.error;
    this.current = read.pair;
    this.options.logger.info(
      { event: 'tls_cert_loaded', ...this.logFields(read.pair.certificate) },
      `TLS certificate loaded: ${read.pair.certificate.subject}`,
    );
    this.checkExpiry();
    // Watching a certificate is no reason to keep a process alive: the poller's timer is unref'd.
    this.poller = new FilePoller({
      paths: [options.certFile, options.keyFile],
      intervalMs: options.pollIntervalMs ?? certReloadPollMs,
      known: () => [this.seen.cert, this.seen.key],
      onChange: () => this.attempt('change'),
      onUnchanged: () => this.checkExpiry(),
      // attempt() does not throw; this is the last guard before an unhandled rejection.
      onError: (err) => this.options.logger.error({ err }, 'TLS certificate: reload failed; keeping the current certificate'),
    });
  }

  /** The certificate (with chain) in force, PEM. */
  get cert(): string {
    return this.current.cert;
  }

  /** The key in force, PEM. */
  get key(): string {
    return this.current.key;
  }

  /** The leaf in force: subject, SANs, expiry, fingerprint. */
  get certificate(): CertificateDescription {
    return this.current.certificate;
  }

  /** Whole days until the certificate in force expires, by the injected clock; negative once expired. */
  daysLeft(): number {
    return daysUntil(this.current.certificate.notAfter, this.clock.now());
  }

  /** Reads both files now (SIGHUP) and applies them if they changed and check out. */
  reload(): CertReloadResult {
    return this.attempt('reload');
  }

  /** Stops polling; the pair in force stays and `reload()` still works. Idempotent. */
  close(): void {
    this.poller.close();
  }

  private attempt(trigger: 'change' | 'reload'): CertReloadResult {
    const { logger } = this.options;
    const read = this.readPair();
    this.seen = read.signatures;
    const files = { cert: this.options.certFile, key: this.options.keyFile, trigger };
    if ('error' in read) {
      logger.warn(
        { event: 'tls_cert_kept', ...files, error: read.error.message },
        `TLS certificate: ${read.error.message}; keeping the current certificate (a pair still being written is retried when it changes)`,
      );
      return { status: 'kept', error: read.error.message, daysLeft: this.daysLeft() };
    }
    const { pair } = read;
    if (pair.cert === this.current.cert && pair.key === this.current.key) {
      logger.debug({ event: 'tls_cert_unchanged', ...files }, 'TLS certificate: files unchanged');
      return { status: 'unchanged', daysLeft: this.daysLeft() };
    }
    const now = this.clock.now();
    const { notBefore, notAfter } = pair.certificate;
    if (now >= notAfter.getTime() || now < notBefore.getTime()) {
      const error =
        now >= notAfter.getTime()
          ? `the new certificate expired on ${notAfter.toISOString()}`
          : `the new certificate is not valid before ${notBefore.toISOString()}`;
      logger.error({ event: 'tls_cert_kept', ...files, error }, `TLS certificate: ${error}; keeping the current certificate`);
      return { status: 'kept', error, daysLeft: this.daysLeft() };
    }
    try {
      this.options.onReload(pair.cert, pair.key);
    } catch (err) {
      const error = `the listeners refused the new certificate (${(err as Error).message})`;
      logger.error({ event: 'tls_cert_kept', ...files, err }, `TLS certificate: ${error}; keeping the current certificate`);
      return { status: 'kept', error, daysLeft: this.daysLeft() };
    }
    const previous = this.current.certificate.fingerprint;
    this.current = pair;
    this.warnedAtDaysLeft = undefined;
    logger.info(
      { event: 'tls_cert_reloaded', ...files, previousFingerprint: previous, ...this.logFields(pair.certificate) },
      `TLS certificate reloaded: ${pair.certificate.subject}, valid until ${notAfter.toISOString()}`,
    );
    this.checkExpiry();
    return { status: 'applied', daysLeft: this.daysLeft() };
  }

  /** Warns when the certificate in force has fewer than `warnDays` left: at start, on each reload, then once a day. */
  private checkExpiry(): void {
    const daysLeft = this.daysLeft();
    if (daysLeft >= this.warnDays || daysLeft === this.warnedAtDaysLeft) return;
    this.warnedAtDaysLeft = daysLeft;
    const { certificate } = this.current;
    const fields = { event: 'tls_cert_expiring', cert: this.options.certFile, ...this.logFields(certificate) };
    if (daysLeft < 0) this.options.logger.error(fields, `TLS certificate expired on ${certificate.notAfter.toISOString()}: renew it now`);
    else this.options.logger.warn(fields, `TLS certificate expires in ${daysLeft} days (${certificate.notAfter.toISOString()}): renew it`);
  }

  private logFields(certificate: CertificateDescription): Record<string, unknown> {
    return {
      subject: certificate.subject,
      fingerprint: certificate.fingerprint,
      notAfter: certificate.notAfter.toISOString(),
      daysLeft: daysUntil(certificate.notAfter, this.clock.now()),
    };
  }

  /** Both files with the identity of what was read (fstat of the descriptor read, not a later stat of the path). */
  private readPair():
    { pair: Pair; signatures: { cert: string; key: string } } | { error: Error; signatures: { cert: string; key: string } } {
    const cert = readWithSignature(this.options.certFile);
    const key = readWithSignature(this.options.keyFile);
    const signatures = { cert: cert.signature, key: key.signature };
    if (cert.error !== undefined) return { error: unreadable(this.options.certFile, cert.error), signatures };
    if (key.error !== undefined) return { error: unreadable(this.options.keyFile, key.error), signatures };
    try {
      const certificate = checkCertificatePair(cert.text!, key.text!, this.clock.now());
      return { pair: { cert: cert.text!, key: key.text!, certificate }, signatures };
    } catch (err) {
      return { error: err as Error, signatures };
    }
  }
}

function unreadable(file: string, code: string): RelayError {
  return new RelayError('RELAY_ERR_CONFIG', `cannot read ${file} (${code})`);
}

function readWithSignature(path: string): { text?: string; error?: string; signature: string } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? 'unknown', signature: signatureOf(err as NodeJS.ErrnoException) };
  }
  try {
    const signature = signatureOf(null, fstatSync(fd));
    return { text: readFileSync(fd, 'utf8'), signature };
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? 'unknown', signature: signatureOf(err as NodeJS.ErrnoException) };
  } finally {
    closeSync(fd);
  }
}
