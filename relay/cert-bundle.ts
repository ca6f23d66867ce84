/**
 * A server certificate with its chain and key, read from PEM (`relay cert import`) or from
 * PKCS#12 (`parsePkcs12` in cert-issuing.ts), checked for use by the relay: the leaf the key
 * belongs to, its chain ordered and verified, an unusable leaf refused, warnings collected.
 * node:crypto only (shared/certs.ts reads and describes the certificates).
 */
import type { KeyObject, X509Certificate } from 'node:crypto';
import {
  certError,
  certPolicy,
  describeX509,
  isSelfIssued,
  keyMatches,
  oneLine,
  parseCertificateChain,
  readPrivateKey,
  type CertificateDescription,
} from '../shared/certs.js';

/** A server certificate with its chain and key, read and checked for use by the relay. */
export interface CertificateBundle {
  /** Leaf then its issuers, PEM: what `relay.crt` holds. */
  cert: string;
  /** Unencrypted PKCS#8 PEM: what `relay.key` holds. */
  key: string;
  certificate: CertificateDescription;
  /** The issuers found for the leaf, nearest first. */
  chain: CertificateDescription[];
  /** Things worth telling the operator that do not stop the import (few days left, certificates left out, …). */
  warnings: string[];
}

export interface BundleOptions {
  /** Passphrase of an encrypted key (PEM) or of the PKCS#12 file. */
  passphrase?: string;
  /** Milliseconds since the epoch for the validity checks (default now). */
  now?: number;
}

/**
 * Reads a certificate with its chain and its key from PEM. The leaf is the certificate the key
 * belongs to among those that issued none of the others (it need not come first); its issuers
 * are taken from the other certificates and verified; the rest are left out with a warning.
 * Refused: a key of none of those certificates, a leaf that is expired or not yet valid, a leaf
 * whose extendedKeyUsage excludes serverAuth. Fewer than {@link certPolicy}.expiryWarnDays left
 * is a warning.
 */
export function parsePemBundle(certPem: string, keyPem: string, options: BundleOptions = {}): CertificateBundle {
  return assembleBundle(parseCertificateChain(certPem), [readPrivateKey(keyPem, options.passphrase)], options.now ?? Date.now());
}

const serverAuthOid = '1.3.6.1.5.5.7.3.1';
const anyExtendedKeyUsageOid = '2.5.29.37.0';

/**
 * The checks of {@link parsePemBundle} on certificates and keys already read (`parsePkcs12` in
 * `relay/cert-issuing.ts` reads them from PKCS#12): picks the leaf the key belongs to, orders its
 * chain, refuses an unusable leaf, and collects the warnings.
 */
export function assembleBundle(certs: X509Certificate[], keys: KeyObject[], now: number): CertificateBundle {
  // The leaf is a certificate that issued none of the others: a chain's CA key given by mistake
  // must not turn the CA into the server certificate.
  const issuedAnother = (c: X509Certificate): boolean => certs.some((o) => o !== c && issuedBy(o, c));
  const leaves = certs.filter((c) => !issuedAnother(c));
  let leaf: X509Certificate | undefined;
  let key: KeyObject | undefined;
  for (const k of keys) {
    leaf = leaves.find((c) => keyMatches(c, k));
    if (leaf) {
      key = k;
      break;
    }
  }
  if (!leaf || !key) {
    const issuer = certs.find((c) => keys.some((k) => keyMatches(c, k)));
    if (issuer) {
      throw certError(
        'key_mismatch',
        `the private key belongs to "${oneLine(issuer.subject)}", which issued another certificate in the chain, not to the server certificate`,
      );
    }
    const which = certs.length === 1 ? `the certificate (${oneLine(certs[0]!.subject)})` : `any of the ${certs.length} certificates`;
    throw certError('key_mismatch', `the private key does not belong to ${which}`);
  }
  const warnings: string[] = [];
  const certificate = describeX509(leaf, now);
  if (now < certificate.notBefore.getTime()) {
    throw certError('not_yet_valid', `the certificate (${certificate.subject}) is not valid before ${certificate.notBefore.toISOString()}`);
  }
  if (certificate.daysLeft < 0 || now >= certificate.notAfter.getTime()) {
    throw certError('expired', `the certificate (${certificate.subject}) expired on ${certificate.notAfter.toISOString()}`);
  }
  // Node names extendedKeyUsage `keyUsage`; undefined when the extension is absent (any use).
  const purposes = leaf.keyUsage as string[] | undefined;
  if (purposes && purposes.length > 0 && !purposes.includes(serverAuthOid) && !purposes.includes(anyExtendedKeyUsageOid)) {
    throw certError(
      'not_server_certificate',
      `the certificate (${certificate.subject}) is not for TLS servers: its extendedKeyUsage lacks serverAuth`,
    );
  }
  if (certificate.daysLeft < certPolicy.expiryWarnDays) {
    warnings.push(`the certificate expires in ${certificate.daysLeft} days (${certificate.notAfter.toISOString()}): renew it soon`);
  }
  if (certificate.isCa && !certificate.selfSigned) {
    warnings.push('the certificate is a CA certificate (basicConstraints cA); TLS clients may refuse it as a server certificate');
  }

  const chain = [leaf];
  const rest = certs.filter((c) => c !== leaf);
  for (let top = leaf; !isSelfIssued(top);) {
    const i = rest.findIndex((c) => issuedBy(top, c));
    if (i < 0) break;
    top = rest.splice(i, 1)[0]!;
    chain.push(top);
  }
  if (rest.length > 0) {
    warnings.push(
      `left out ${rest.length} certificate(s) that are not in the chain of the leaf: ${rest.map((c) => oneLine(c.subject)).join('; ')}`,
    );
  }
  if (chain.length === 1 && !certificate.selfSigned) {
    warnings.push(`no issuer certificate came with the leaf: clients that do not already hold "${certificate.issuer}" will refuse it`);
  }
  const issuers = chain.slice(1).map((c) => describeX509(c, now));
  for (const issuer of issuers) {
    if (issuer.daysLeft < 0) warnings.push(`the chain certificate "${issuer.subject}" expired on ${issuer.notAfter.toISOString()}`);
  }
  return {
    cert: chain.map((c) => pemOf(c)).join(''),
    key: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    certificate,
    chain: issuers,
    warnings,
  };
}

/** Whether `issuer` signed `cert` (names and key identifiers match, and the signature verifies). */
function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function pemOf(cert: X509Certificate): string {
  const pem = cert.toString();
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}
