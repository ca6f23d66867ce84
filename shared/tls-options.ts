/**
 * TLS settings every server listener shares (the relay's mobile HTTPS, per-platform HTTPS ports
 * and tunnel endpoint; the platform server's internal HTTPS): TLS 1.2 or later, forward-secret
 * AEAD suites only, server's order preferred.
 */
import { defaults } from './defaults.js';

export const tlsServerDefaults = Object.freeze({
  minVersion: defaults.tlsMinVersion as 'TLSv1.2',
  ciphers: defaults.tlsCiphers,
  honorCipherOrder: true,
});
