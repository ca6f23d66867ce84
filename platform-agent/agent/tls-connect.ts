/**
 * TLS to the relay, verified before a single byte of the upgrade request (which carries the
 * agent token) is sent: by a CA file, by the system's CAs, or by a SHA-256 pin of the relay's
 * certificate. `insecure` turns verification off and must be asked for explicitly.
 */
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { fingerprintSha256 } from '../../shared/certs.js';
import { RelayError } from '../../shared/errors.js';

export interface RelayTrust {
  /** PEM CA bundle that signed the relay's certificate. */
  ca?: string;
  /** Pinned SHA-256 fingerprint of the relay's certificate (`AA:BB:...`, normalised). */
  fingerprint?: string;
  /** No verification at all. */
  insecure?: boolean;
  /** PEM client certificate and key, for a relay that requires agent certificates (mTLS, `relay --agent-ca`). */
  clientCert?: { cert: string; key: string };
}

type OnCreate = (err: Error | null, socket?: Duplex) => void;

/**
 * A `createConnection` for `http.request`/`ws` that completes the TLS handshake and checks the
 * pin before handing the socket over (Node's async `createConnection(options, callback)` form).
 */
export function verifiedTlsConnector(trust: RelayTrust, timeoutMs: number) {
  return (options: { host?: string; hostname?: string; port?: number | string; servername?: string }, oncreate: OnCreate): undefined => {
    const host = options.hostname ?? options.host ?? 'localhost';
    const socket = tls.connect({
      host,
      port: Number(options.port),
      ...(options.servername ? { servername: options.servername } : {}),
      ...(trust.ca ? { ca: trust.ca } : {}),
      ...(trust.clientCert ? { cert: trust.clientCert.cert, key: trust.clientCert.key } : {}),
      // a pin replaces chain verification: the pinned certificate may be self-signed
      rejectUnauthorized: !(trust.insecure || trust.fingerprint),
      minVersion: 'TLSv1.2',
      ALPNProtocols: ['http/1.1'],
    });
    socket.setNoDelay(true);
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      socket.setTimeout(0);
      socket.off('error', finish);
      if (err) {
        socket.destroy();
        oncreate(err);
      } else {
        oncreate(null, socket);
      }
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`TLS handshake with ${host}:${options.port} timed out after ${timeoutMs} ms`)));
    socket.once('error', finish);
    socket.once('secureConnect', () => {
      if (trust.fingerprint) {
        const raw = socket.getPeerCertificate().raw;
        const seen = raw ? fingerprintSha256(raw) : 'none';
        if (seen !== trust.fingerprint) {
          finish(
            new RelayError('RELAY_ERR_TLS_PIN', `relay certificate fingerprint ${seen} does not match the pinned ${trust.fingerprint}`),
          );
          return;
        }
      }
      finish(null);
    });
    return undefined;
  };
}
