/**
 * The relay's private CA and what it signs (`relay cert init`, `relay cert issue-agent`), and
 * PKCS#12 import (`relay cert import --pfx`): node-forge work that only `cert-cli.ts` needs, which
 * loads this file with a dynamic `import()` when one of those commands runs, so that `relay start`
 * never carries node-forge. The signing steps are shared with the self-signed pair
 * (`shared/cert-making.ts`); the checks of an imported certificate are in `cert-bundle.ts`.
 */
import { KeyObject, X509Certificate, createPrivateKey, generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { distinguishedName, rsaKeyFromPem, sanExtension, selfSign, signCertificate, type RsaKey } from '../shared/cert-making.js';
import { assembleBundle, type BundleOptions, type CertificateBundle } from './cert-bundle.js';
import { certError, certPolicy, type PemPair, type SubjectAltName } from '../shared/certs.js';
import { DAY_MS } from '../shared/clock.js';

export interface CaOptions {
  /** Common name of the CA, e.g. `relay.example.com CA`. */
  commonName: string;
  /** Default {@link certPolicy}.caDays. */
  days?: number;
  /** Default {@link certPolicy}.caKeyBits. */
  keyBits?: number;
  /** Milliseconds since the epoch the validity starts from (default now). */
  now?: number;
}

/**
 * A private CA: self-signed, basicConstraints cA (pathLen 0: it signs only end-entity
 * certificates), keyUsage keyCertSign and cRLSign, SHA-256.
 */
export async function createCertificateAuthority(options: CaOptions): Promise<PemPair> {
  const key = await generateRsaKey(options.keyBits ?? certPolicy.caKeyBits);
  const cert = selfSign(key, options.commonName, options.now ?? Date.now(), options.days ?? certPolicy.caDays, [
    { name: 'basicConstraints', critical: true, cA: true, pathLenConstraint: 0 },
    { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return { cert, key: key.pem };
}

export interface LeafOptions {
  commonName: string;
  /** Default {@link certPolicy}.leafDays; never past the CA's own expiry (cut to it). */
  days?: number;
  /** Default {@link certPolicy}.leafKeyBits. */
  keyBits?: number;
  /** Milliseconds since the epoch the validity starts from (default now). */
  now?: number;
}

/**
 * A TLS server certificate signed by `ca`: extKeyUsage serverAuth, keyUsage digitalSignature and
 * keyEncipherment, the given subjectAltNames (`withCommonName` in shared/certs.ts adds the CN). `cert` is
 * the leaf alone; a server sends it followed by the CA (`relay.crt`).
 */
export async function issueServerCertificate(ca: PemPair, options: LeafOptions & { sans: readonly SubjectAltName[] }): Promise<PemPair> {
  return issueLeaf(ca, options, [
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    sanExtension(options.sans),
  ]);
}

/** A TLS client certificate signed by `ca` (an agent's, for mTLS): extKeyUsage clientAuth, keyUsage digitalSignature. */
export async function issueClientCertificate(ca: PemPair, options: LeafOptions): Promise<PemPair> {
  return issueLeaf(ca, options, [
    { name: 'keyUsage', critical: true, digitalSignature: true },
    { name: 'extKeyUsage', clientAuth: true },
  ]);
}

async function issueLeaf(ca: PemPair, options: LeafOptions, extensions: object[]): Promise<PemPair> {
  const now = options.now ?? Date.now();
  const issuer = readCa(ca, now);
  const key = await generateRsaKey(options.keyBits ?? certPolicy.leafKeyBits);
  const notAfter = Math.min(now + (options.days ?? certPolicy.leafDays) * DAY_MS, issuer.cert.validity.notAfter.getTime());
  const cert = signCertificate({
    subject: distinguishedName(options.commonName),
    issuer: issuer.cert.subject.attributes,
    publicKey: key.publicKey,
    signingKey: issuer.key,
    notBefore: new Date(now - certPolicy.backdateMs),
    notAfter: new Date(notAfter),
    extensions: [
      { name: 'basicConstraints', critical: true, cA: false },
      ...extensions,
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: issuer.cert.generateSubjectKeyIdentifier().getBytes() },
    ],
  });
  return { cert, key: key.pem };
}

/** The CA's certificate and key as forge objects, after checking that they belong together and can sign. */
function readCa(ca: PemPair, now: number): { cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey } {
  let cert: forge.pki.Certificate;
  let key: forge.pki.rsa.PrivateKey;
  try {
    cert = forge.pki.certificateFromPem(ca.cert);
    key = forge.pki.privateKeyFromPem(ca.key) as forge.pki.rsa.PrivateKey;
  } catch (err) {
    throw certError('bad_ca', `the CA certificate or key cannot be read as RSA PEM (${(err as Error).message})`, err);
  }
  const publicKey = cert.publicKey as forge.pki.rsa.PublicKey;
  if (publicKey.n.compareTo(key.n) !== 0 || publicKey.e.compareTo(key.e) !== 0) {
    throw certError('key_mismatch', 'the CA key does not belong to the CA certificate');
  }
  const constraints = cert.getExtension('basicConstraints') as { cA?: boolean } | null;
  if (!constraints?.cA) throw certError('bad_ca', 'the CA certificate is not a CA (basicConstraints cA is not set)');
  if (cert.validity.notAfter.getTime() <= now) {
    throw certError('expired', `the CA certificate expired on ${cert.validity.notAfter.toISOString()}`);
  }
  return { cert, key };
}

/**
 * Reads a PKCS#12 (PFX) file: its private key and certificates, then the same checks as
 * `parsePemBundle` (shared/certs.ts). Throws `bad_passphrase` when the MAC or the decryption fails with
 * `passphrase`, `bad_pfx` when the bytes are not PKCS#12, `no_key` when it holds no key.
 */
export function parsePkcs12(pfx: Buffer, passphrase: string, options: Pick<BundleOptions, 'now'> = {}): CertificateBundle {
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    const asn1 = forge.asn1.fromDer(pfx.toString('binary'), false);
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, passphrase);
  } catch (err) {
    const message = (err as Error).message;
    // forge: "PKCS#12 MAC could not be verified. Invalid password?", "Unable to decrypt PKCS#8 ShroudedKeyBag, wrong password?"
    if (/password/i.test(message)) throw certError('bad_passphrase', 'the PKCS#12 file cannot be opened with that passphrase', err);
    throw certError('bad_pfx', `not a readable PKCS#12 (PFX) file (${message})`, err);
  }
  const certs: X509Certificate[] = [];
  const keys: KeyObject[] = [];
  const der = (asn1: forge.asn1.Asn1): Buffer => Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
  try {
    for (const bag of p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? []) {
      // forge parses RSA certificates only; it hands others (EC) back as ASN.1.
      const asn1 = bag.cert ? forge.pki.certificateToAsn1(bag.cert) : (bag as { asn1?: forge.asn1.Asn1 }).asn1;
      if (asn1) certs.push(new X509Certificate(der(asn1)));
    }
    for (const bagType of [forge.pki.oids.pkcs8ShroudedKeyBag!, forge.pki.oids.keyBag!]) {
      for (const bag of p12.getBags({ bagType })[bagType] ?? []) {
        // A key forge does not parse (EC) comes back as its PrivateKeyInfo, already decrypted.
        const asn1 = (bag as { asn1?: forge.asn1.Asn1 }).asn1;
        if (bag.key) keys.push(createPrivateKey(forge.pki.privateKeyToPem(bag.key)));
        else if (asn1) keys.push(createPrivateKey({ key: der(asn1), format: 'der', type: 'pkcs8' }));
      }
    }
  } catch (err) {
    throw certError('bad_pfx', `a certificate or key in the PKCS#12 file cannot be read (${(err as Error).message})`, err);
  }
  if (keys.length === 0) throw certError('no_key', 'the PKCS#12 file holds no private key');
  if (certs.length === 0) throw certError('bad_certificate', 'the PKCS#12 file holds no certificate');
  return assembleBundle(certs, keys, options.now ?? Date.now());
}

const generateKeyPairAsync = promisify(generateKeyPair);

/** An RSA key of `bits`, generated by OpenSSL on the thread pool. */
async function generateRsaKey(bits: number): Promise<RsaKey> {
  const { privateKey } = await generateKeyPairAsync('rsa', {
    modulusLength: bits,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return rsaKeyFromPem(privateKey);
}
