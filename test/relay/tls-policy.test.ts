/**
 * The relay's TLS policy on the mobile HTTPS port and the tunnel endpoint: TLS 1.2 or later,
 * forward-secret AEAD suites only. Real handshakes from clients that offer less.
 */
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Relay } from '../../relay/relay.js';
import { startRelay } from '../fixtures/harness.js';

let relay: Relay;
beforeAll(async () => {
  relay = await startRelay();
});
afterAll(() => relay.stop(200));

function handshake(port: number, options: tls.ConnectionOptions): Promise<{ protocol: string | null; cipher: string } | Error> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options }, () => {
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().name });
      socket.end();
    });
    socket.on('error', (err) => resolve(err));
  });
}

describe.each(['https', 'tunnel'] as const)('TLS policy on the %s port', (which) => {
  const port = (): number => (which === 'https' ? relay.ports!.httpsPort : relay.ports!.tunnelPort);

  it('negotiates TLS 1.3 by default and an ECDHE AEAD suite on TLS 1.2', async () => {
    expect(await handshake(port(), {})).toMatchObject({ protocol: 'TLSv1.3' });
    const r = await handshake(port(), { maxVersion: 'TLSv1.2' });
    expect(r).toMatchObject({ protocol: 'TLSv1.2' });
    expect((r as { cipher: string }).cipher).toMatch(/^ECDHE-.*(GCM|CHACHA20)/);
  });

  it('refuses TLS 1.1, and a client that offers only CBC or static-RSA suites', async () => {
    expect(await handshake(port(), { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' })).toBeInstanceOf(Error);
    expect(await handshake(port(), { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA:AES128-SHA' })).toBeInstanceOf(Error);
    expect(await handshake(port(), { maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256' })).toBeInstanceOf(Error);
  });
});
