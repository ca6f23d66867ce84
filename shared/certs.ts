/**
 * Certificate tools that need only node:crypto: reading, describing and checking certificates
 * (`X509Certificate` reads EC certificates too, which forge cannot), subjectAltName names, the
 * certificate policy, the files of a pair, and the SHA-256 fingerprint an agent pins with
 * `--relay-fingerprint`. What a running relay needs is all here; the checks of an imported
 * certificate with its chain (`relay cert import`) are the relay's, in `relay/cert-bundle.ts`.
 *
 * Making certificates needs node-forge: the self-signed pair is in `cert-making.ts`, the private CA
 * and PKCS#12 import in `relay/cert-issuing.ts`. Keep node-forge out of this file: a relay started
 * with its certificate files then never loads it (measured: 1.3 MiB less live heap, ~4 MiB less
 * RSS at idle).
 */
import { KeyObject, X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { DAY_MS } from './clock.js';
import { RelayError } from './errors.js';

export interface PemPair {
  cert: string;
  key: string;
}

/** Key sizes and validity periods of the certificates made here. */
export const certPolicy = Object.freeze({
  /** RSA bits of a private CA key: it outlives every certificate it signs. */
  caKeyBits: 4096,
  /** Validity of a private CA, in days (10 years). */
  caDays: 3650,
  /**
   * RSA bits of server and client keys. 2048 rather than 3072: every TLS handshake costs one
   * private-key operation on the relay (3072 is ~3x the CPU) and 2048 is fine until 2030 (NIST SP 800-57).
   */
  leafKeyBits: 2048,
  /**
   * Validity of server and client certificates, in days. 825 is the most iOS and macOS accept for
   * a TLS server certificate from a private CA (Apple, "Requirements for trusted certificates").
   */
  leafDays: 825,
  /** Fewer days left than this is worth a warning (import, `cert show`, the reloader). */
  expiryWarnDays: 30,
  /** notBefore is set this far in the past, so that a peer whose clock lags accepts a new certificate. */
  backdateMs: 5 * 60_000,
});

/** Why a certificate operation failed; `details.problem` of the RelayError thrown. */
export type CertProblem =
  | 'bad_certificate'
  | 'bad_key'
  | 'key_encrypted'
  | 'bad_passphrase'
  | 'bad_pfx'
  | 'no_key'
  | 'key_mismatch'
  | 'expired'
  | 'not_yet_valid'
  | 'not_server_certificate'
  | 'bad_ca';

/** A certificate error: code `RELAY_ERR_CONFIG`, with `details.problem` saying which check failed. */
export function certError(problem: CertProblem, message: string, cause?: unknown): RelayError {
  return new RelayError('RELAY_ERR_CONFIG', message, { details: { problem }, cause });
}

// ---------------------------------------------------------------------------------------------
// subjectAltName

export type SubjectAltName = { type: 'dns'; value: string } | { type: 'ip'; value: string };

/**
 * Parses `DNS:relay.example.com,IP:10.0.0.5,IP:::1` (comma-separated; several option values are
 * joined). Types are case-insensitive; IP addresses are IPv4 or IPv6 (no zone); DNS names are host
 * names, a leading `*.` allowed. Throws a config error naming `--san` on anything else.
 */
export function parseSubjectAltNames(input: string | readonly string[]): SubjectAltName[] {
  const text = typeof input === 'string' ? input : input.join(',');
  const sans: SubjectAltName[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const colon = entry.indexOf(':');
    const type = colon < 0 ? '' : entry.slice(0, colon).trim().toUpperCase();
    const value = colon < 0 ? '' : entry.slice(colon + 1).trim();
    let san: SubjectAltName | undefined;
    if (type === 'DNS' && isDnsName(value)) san = { type: 'dns', value: value.toLowerCase() };
    else if ((type === 'IP' || type === 'IP ADDRESS') && isIP(value) !== 0 && !value.includes('%'))
      san = { type: 'ip', value: canonicalAddress(value) };
    if (!san) {
      throw new RelayError(
        'RELAY_ERR_CONFIG',
        `--san: ${JSON.stringify(entry)} is not valid; expected DNS:<host name> or IP:<IPv4 or IPv6 address>, comma-separated (e.g. DNS:relay.example.com,IP:10.0.0.5,IP:::1)`,
      );
    }
    if (!sans.some((s) => s.type === san.type && s.value === san.value)) sans.push(san);
  }
  return sans;
}

/**
 * The names a relay certificate gets when none are given: the common name (when it is a host name
 * or an address) and loopback (`localhost`, 127.0.0.1, ::1) for agents and checks on the same host.
 */
export function defaultServerSans(commonName: string): SubjectAltName[] {
  return withCommonName(commonName, [
    { type: 'dns', value: 'localhost' },
    { type: 'ip', value: '127.0.0.1' },
    { type: 'ip', value: '::1' },
  ]);
}

/**
 * `sans` with the common name first when it is a host name or an address and not listed: TLS
 * clients ignore the CN when a certificate has SANs (RFC 6125 §6.4.4), so a CN missing from them
 * would not be valid for connections.
 */
export function withCommonName(commonName: string, sans: readonly SubjectAltName[]): SubjectAltName[] {
  const cn: SubjectAltName | undefined =
    isIP(commonName) !== 0
      ? { type: 'ip', value: canonicalAddress(commonName) }
      : isDnsName(commonName)
        ? { type: 'dns', value: commonName.toLowerCase() }
        : undefined;
  if (!cn || sans.some((s) => s.type === cn.type && s.value === cn.value)) return [...sans];
  return [cn, ...sans];
}

function isDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.replace(/^\*\./, '').split('.');
  return labels.every((label) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label));
}

/** One spelling per address: IPv6 compressed and lower case (RFC 5952), as URLs print it. */
export function canonicalAddress(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
}

// ---------------------------------------------------------------------------------------------
// reading certificates

/** What a person (or a script, as JSON) needs to know about one certificate. */
export interface CertificateDescription {
  /** `CN=relay.example.com, O=…` */
  subject: string;
  issuer: string;
  /** `DNS:name`, `IP:address` (IPv6 compressed), other types as OpenSSL names them. */
  sans: string[];
  notBefore: Date;
  notAfter: Date;
  /** Whole days from `now` to notAfter, rounded down; negative once expired. */
  daysLeft: number;
  /** SHA-256 of the DER as `AA:BB:…`, accepted as is by `--relay-fingerprint`. */
  fingerprint: string;
  serialNumber: string;
  /** `RSA 2048`, `EC prime256v1`, … */
  keyType: string;
  isCa: boolean;
  selfSigned: boolean;
}

/** Describes the first certificate of a PEM text (a chain file describes its leaf) or a DER buffer. */
export function describeCertificate(pemOrDer: string | Buffer, now: number | Date = Date.now()): CertificateDescription {
  return describeX509(readCertificate(pemOrDer), typeof now === 'number' ? now : now.getTime());
}

/** Whole days from `now` to `notAfter`, rounded down (negative once past). */
export function daysUntil(notAfter: Date, now: number): number {
  return Math.floor((notAfter.getTime() - now) / DAY_MS);
}

/** Each certificate of a PEM text (a chain), in file order. Throws a `bad_certificate` error when there is none or one cannot be read. */
export function parseCertificateChain(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw certError('bad_certificate', 'no PEM certificate found (expected -----BEGIN CERTIFICATE-----)');
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw certError('bad_certificate', `certificate ${i + 1} of the PEM text cannot be read (${(err as Error).message})`, err);
    }
  });
}

/**
 * Checks that `keyPem` is the private key of the first certificate of `certPem` (compares the
 * public keys) and returns that certificate's description. What a TLS server is given: the first
 * certificate is the one it presents. Throws `bad_certificate`, `bad_key`, `key_encrypted` or
 * `key_mismatch` errors.
 */
export function checkCertificatePair(certPem: string, keyPem: string, now: number = Date.now()): CertificateDescription {
  const [leaf] = parseCertificateChain(certPem);
  const key = readPrivateKey(keyPem);
  if (!keyMatches(leaf!, key)) {
    throw certError('key_mismatch', `the private key does not belong to the certificate (${leaf!.subject.replace(/\n/g, ', ')})`);
  }
  return describeX509(leaf!, now);
}

function readCertificate(pemOrDer: string | Buffer): X509Certificate {
  if (typeof pemOrDer === 'string') return parseCertificateChain(pemOrDer)[0]!;
  try {
    return new X509Certificate(pemOrDer);
  } catch (err) {
    throw certError('bad_certificate', `the certificate cannot be read (${(err as Error).message})`, err);
  }
}

/** A PEM private key, decrypted with `passphrase` if given; `bad_key`, `key_encrypted` or `bad_passphrase` errors. */
export function readPrivateKey(pem: string, passphrase?: string): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: 'pem', ...(passphrase === undefined ? {} : { passphrase }) });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MISSING_PASSPHRASE') throw certError('key_encrypted', 'the private key is encrypted: give its passphrase', err);
    if (passphrase !== undefined && /bad decrypt/i.test(e.message))
      throw certError('bad_passphrase', 'the private key cannot be decrypted with that passphrase', err);
    throw certError('bad_key', `the private key cannot be read as PEM (${e.message})`, err);
  }
}

/** Whether `key` is the private key of `cert`. */
export function keyMatches(cert: X509Certificate, key: KeyObject): boolean {
  try {
    return cert.checkPrivateKey(key);
  } catch {
    // A key of another type (EC key, RSA certificate) is simply not this certificate's key.
    return false;
  }
}

/** Whether `cert` names itself as its issuer. */
export function isSelfIssued(cert: X509Certificate): boolean {
  return cert.checkIssued(cert);
}

/** {@link describeCertificate} of a certificate already read. */
export function describeX509(cert: X509Certificate, now: number): CertificateDescription {
  const notAfter = new Date(cert.validTo);
  const details = cert.publicKey.asymmetricKeyDetails;
  const kind = (cert.publicKey.asymmetricKeyType ?? 'unknown').toUpperCase();
  return {
    subject: oneLine(cert.subject),
    issuer: oneLine(cert.issuer),
    sans: parseNodeAltNames(cert.subjectAltName),
    notBefore: new Date(cert.validFrom),
    notAfter,
    daysLeft: daysUntil(notAfter, now),
    fingerprint: fingerprintSha256(cert.raw),
    serialNumber: cert.serialNumber,
    keyType: details?.modulusLength ? `${kind} ${details.modulusLength}` : details?.namedCurve ? `${kind} ${details.namedCurve}` : kind,
    isCa: cert.ca,
    selfSigned: isSelfIssued(cert) && cert.verify(cert.publicKey),
  };
}

/** A distinguished name as Node prints it (one attribute a line) on one line: `CN=a, O=b`. */
export function oneLine(dn: string): string {
  return dn.split('\n').join(', ');
}

/**
 * Node prints subjectAltName as `DNS:a, IP Address:0:0:0:0:0:0:0:1, …`, with a value in JSON
 * quotes when it holds a comma, quote or control character (since the fix for CVE-2021-44532).
 */
function parseNodeAltNames(text: string | undefined): string[] {
  if (!text) return [];
  const names: string[] = [];
  for (const match of text.matchAll(/(?:^|, )([^:,]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const type = match[1]!;
    const raw = match[2]!;
    const value = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
    names.push(type === 'IP Address' ? `IP:${isIP(value) === 0 ? value : canonicalAddress(value)}` : `${type}:${value}`);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// the files of a pair and fingerprints

/** A certificate and key read from files, with their paths. */
export type PemPairFiles = PemPair & { certFile: string; keyFile: string };

/**
 * Reads `<baseName>.crt` and `<baseName>.key` from `dir`; null when either is missing (then
 * `loadOrCreateSelfSigned` in `cert-making.ts` makes them). Checks nothing: the caller does.
 */
export function readPemPairFiles(dir: string, baseName = 'relay'): PemPairFiles | null {
  const certFile = join(dir, `${baseName}.crt`);
  const keyFile = join(dir, `${baseName}.key`);
  if (!existsSync(certFile) || !existsSync(keyFile)) return null;
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
}

/** SHA-256 fingerprint of a certificate's DER, as `AA:BB:...` (the form `openssl x509 -fingerprint` prints). */
export function fingerprintSha256(certPemOrDer: string | Buffer): string {
  const der = typeof certPemOrDer === 'string' ? new X509Certificate(certPemOrDer).raw : certPemOrDer;
  return formatFingerprint(createHash('sha256').update(der).digest('hex'));
}

/** Normalises a fingerprint given by a user (any case, with or without colons) to `AA:BB:...`; null if it is not 32 bytes of hex. */
export function normalizeFingerprint(input: string): string | null {
  const hex = input
    .replace(/^sha256:/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) return null;
  return formatFingerprint(hex);
}

function formatFingerprint(hex: string): string {
  return hex.toUpperCase().match(/../g)!.join(':');
}
