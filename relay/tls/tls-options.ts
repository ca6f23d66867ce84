/**
 * TLS settings every relay listener shares (mobile HTTPS, per-platform HTTPS ports, the tunnel
 * endpoint): TLS 1.2 or later, forward-secret AEAD suites only, server's order preferred.
 */
import { defaults } from '../../shared/defaults.js';

export const tlsServerDefaults = Object.freeze({
  minVersion: defaults.tlsMinVersion as 'TLSv1.2',
  ciphers: defaults.tlsCiphers,
  honorCipherOrder: true,
});
