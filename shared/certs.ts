/**
 * Certificate tools (node-forge): a self-signed pair for a relay that was given none, and the
 * SHA-256 fingerprint an agent pins with `--relay-fingerprint`.
 */
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

export interface PemPair {
  cert: string;
  key: string;
}

export interface SelfSignedOptions {
  commonName: string;
  /** DNS names and IP addresses for the subjectAltName extension. */
  dnsNames?: string[];
  ipAddresses?: string[];
  days?: number;
  keyBits?: number;
}

/** Makes a self-signed RSA certificate (SHA-256, serverAuth) with SANs. */
export function generateSelfSigned(options: SelfSignedOptions): PemPair {
  const keys = forge.pki.rsa.generateKeyPair({ bits: options.keyBits ?? 2048, e: 0x10001 });
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  // positive serial: 16 random bytes with the top bit cleared
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  cert.serialNumber = serial.toString('hex');
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 5 * 60_000);
  cert.validity.notAfter = new Date(now.getTime() + (options.days ?? 825) * 86_400_000);
  const attrs = [{ name: 'commonName', value: options.commonName }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  const altNames = [
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(options.ipAddresses ?? []).map((ip) => ({ type: 7, ip })),
  ];
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

/**
 * Loads `relay.crt`/`relay.key` from `dir`, or makes a self-signed pair there (key mode 0600).
 * Returns the pair and whether it was generated.
 */
export function loadOrCreateSelfSigned(
  dir: string,
  options: SelfSignedOptions,
): PemPair & { generated: boolean; certFile: string; keyFile: string } {
  const certFile = join(dir, 'relay.crt');
  const keyFile = join(dir, 'relay.key');
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), generated: false, certFile, keyFile };
  }
  mkdirSync(dir, { recursive: true });
  const pair = generateSelfSigned(options);
  writeFileSync(keyFile, pair.key, { mode: 0o600 });
  writeFileSync(certFile, pair.cert, { mode: 0o644 });
  return { ...pair, generated: true, certFile, keyFile };
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
