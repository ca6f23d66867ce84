/**
 * Making certificates with node-forge, which builds and signs them; node:crypto generates the keys
 * (OpenSSL on the thread pool: an RSA 4096 key takes ~1-3 s there, many times longer in forge's
 * JavaScript). Here: the self-signed pair of a relay given no certificate (and of the platform
 * server's internal HTTPS), and the signing steps the private CA in `relay/cert-issuing.ts` shares
 * (its keys, made asynchronously, are its own).
 *
 * node-forge costs ~1.3-1.8 MiB of live heap and ~4 MiB of RSS once loaded (more in a bare
 * process: its JavaScript is parsed and compiled): import this file only where a certificate is made.
 * The relay loads it with a dynamic `import()` when its certificate files are missing
 * (`relay/cli.ts`), and `relay cert …` when it signs; reading and describing certificates is in
 * `certs.ts`, which needs only node:crypto.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import { canonicalAddress, certPolicy, readPemPairFiles, type PemPair, type PemPairFiles, type SubjectAltName } from './certs.js';
import { DAY_MS } from './clock.js';

// ---------------------------------------------------------------------------------------------
// the self-signed pair

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
  const key = rsaKeyFromPem(
    generateKeyPairSync('rsa', {
      modulusLength: options.keyBits ?? certPolicy.leafKeyBits,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    }).privateKey,
  );
  const sans = [
    ...(options.dnsNames ?? []).map((value): SubjectAltName => ({ type: 'dns', value })),
    ...(options.ipAddresses ?? []).map((value): SubjectAltName => ({ type: 'ip', value })),
  ];
  const cert = selfSign(key, options.commonName, Date.now(), options.days ?? certPolicy.leafDays, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    sanExtension(sans),
    { name: 'subjectKeyIdentifier' },
  ]);
  return { cert, key: key.pem };
}

/**
 * Loads `<baseName>.crt`/`<baseName>.key` from `dir`, or makes a self-signed pair there (key mode
 * 0600, folder 0700 when created). Returns the pair and whether it was generated.
 */
export function loadOrCreateSelfSigned(dir: string, options: SelfSignedOptions, baseName = 'relay'): PemPairFiles & { generated: boolean } {
  const existing = readPemPairFiles(dir, baseName);
  if (existing) return { ...existing, generated: false };
  const certFile = join(dir, `${baseName}.crt`);
  const keyFile = join(dir, `${baseName}.key`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pair = generateSelfSigned(options);
  writeFileSync(keyFile, pair.key, { mode: 0o600 });
  writeFileSync(certFile, pair.cert, { mode: 0o644 });
  return { ...pair, generated: true, certFile, keyFile };
}

// ---------------------------------------------------------------------------------------------
// signing steps (the CA in relay/cert-issuing.ts uses them too)

/** What {@link signCertificate} puts in a certificate. */
export interface CertificateSpec {
  subject: forge.pki.CertificateField[];
  issuer: forge.pki.CertificateField[];
  publicKey: forge.pki.PublicKey;
  signingKey: forge.pki.rsa.PrivateKey;
  notBefore: Date;
  notAfter: Date;
  extensions: object[];
}

/** A certificate signed by its own key, valid from `now` (backdated by the policy) for `days`; PEM. */
export function selfSign(
  key: { publicKey: forge.pki.PublicKey; privateKey: forge.pki.rsa.PrivateKey },
  commonName: string,
  now: number,
  days: number,
  extensions: CertificateSpec['extensions'],
): string {
  const name = distinguishedName(commonName);
  return signCertificate({
    subject: name,
    issuer: name,
    publicKey: key.publicKey,
    signingKey: key.privateKey,
    notBefore: new Date(now - certPolicy.backdateMs),
    notAfter: new Date(now + days * DAY_MS),
    extensions,
  });
}

/** A certificate as `spec` says, with a random serial, signed with SHA-256 by `spec.signingKey`; PEM. */
export function signCertificate(spec: CertificateSpec): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = spec.publicKey;
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  cert.setSubject(spec.subject);
  cert.setIssuer(spec.issuer);
  cert.setExtensions(spec.extensions);
  cert.sign(spec.signingKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/**
 * A random positive serial of 128 bits as minimal DER INTEGER hex (RFC 5280 §4.1.2.2: at most 20
 * octets; CA/B Forum: at least 64 random bits). A leading 0x00 is added only when the top bit is
 * set, and a first byte of 0 is drawn again: forge writes the hex as is, and a padded INTEGER is
 * not DER.
 */
export function randomSerialHex(): string {
  let bytes: Buffer;
  do bytes = randomBytes(16);
  while (bytes[0] === 0);
  return (bytes[0]! >= 0x80 ? '00' : '') + bytes.toString('hex');
}

/** A DN with one CN, as UTF8String (PrintableString, forge's default, cannot hold `_`, `*` or `@`). */
export function distinguishedName(commonName: string): forge.pki.CertificateField[] {
  return [{ name: 'commonName', value: commonName, valueTagClass: forge.asn1.Type.UTF8 as unknown as forge.asn1.Class }];
}

/** The subjectAltName extension of `sans`, as forge takes it. */
export function sanExtension(sans: readonly SubjectAltName[]): object {
  return {
    name: 'subjectAltName',
    // GeneralName tags: 2 dNSName, 7 iPAddress (bytes given directly: forge's own parser has no
    // IPv4-in-IPv6 form).
    altNames: sans.map((san) => (san.type === 'dns' ? { type: 2, value: san.value } : { type: 7, value: addressBytes(san.value) })),
  };
}

/** A private key as PEM (what is written to disk) and as forge objects (what signs). */
export interface RsaKey {
  pem: string;
  privateKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
}

/** The forge objects of a PEM RSA private key (PKCS#8), with the PEM. */
export function rsaKeyFromPem(pem: string): RsaKey {
  const privateKey = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  return { pem, privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) };
}

/** The 4 or 16 bytes of an address (subjectAltName iPAddress, RFC 5280 §4.2.1.6), as forge's byte string. */
function addressBytes(ip: string): string {
  if (isIP(ip) === 4) return String.fromCharCode(...ip.split('.').map(Number));
  const canonical = canonicalAddress(ip);
  // The URL form never embeds dotted IPv4 and has at most one `::`.
  const [head = '', tail] = canonical.split('::');
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  return String.fromCharCode(...all.flatMap((g) => [g >> 8, g & 0xff]));
}
