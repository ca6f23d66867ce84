/**
 * The relay's TLS policy on the mobile HTTPS port and the tunnel endpoint: TLS 1.2 or later,
 * forward-secret AEAD suites only. Real handshakes from clients that offer less.
 */
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultEdgeLimits } from '../../relay/edge/edge-limits.js';
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

describe('TLS handshakes are cut at the header timeout', () => {
  const HEADERS_TIMEOUT_MS = 1_000;
  let slow: Relay;
  beforeAll(async () => {
    slow = await startRelay({ limits: { ...defaultEdgeLimits(), headersTimeoutMs: HEADERS_TIMEOUT_MS } });
  });
  afterAll(() => slow.stop(200));

  /** A real ClientHello: the first flight a TLS client writes, caught by a server that answers nothing. */
  async function clientHello(): Promise<Buffer> {
    const catcher = net.createServer();
    await new Promise<void>((r) => catcher.listen(0, '127.0.0.1', r));
    try {
      const hello = new Promise<Buffer>((resolve) => catcher.once('connection', (s) => s.once('data', resolve)));
      const client = tls.connect({ host: '127.0.0.1', port: (catcher.address() as AddressInfo).port, rejectUnauthorized: false });
      client.on('error', () => {});
      const bytes = await hello;
      client.destroy();
      return bytes;
    } finally {
      catcher.close();
    }
  }

  /** Connects raw TCP, writes `first` (if any), and resolves with ms until the relay closed the connection. */
  function closedAfter(first: Buffer | null): Promise<{ ms: number; got: number }> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(slow.ports!.httpsPort, '127.0.0.1');
      const started = performance.now();
      let got = 0;
      socket.on('connect', () => {
        if (first) socket.write(first);
      });
      socket.on('data', (c: Buffer) => (got += c.length));
      socket.on('error', () => {});
      socket.on('close', () => resolve({ ms: performance.now() - started, got }));
      setTimeout(() => {
        socket.destroy();
        reject(new Error('the relay never closed the connection'));
      }, 15_000).unref();
    });
  }

  it('closes a TLS connection that never sends a ClientHello within about the header timeout', async () => {
    const { ms, got } = await closedAfter(null);
    expect(got).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS * 0.8);
    expect(ms).toBeLessThan(HEADERS_TIMEOUT_MS + 5_000);
  });

  it('closes a TLS connection that sends its ClientHello but never finishes the handshake within about the header timeout', async () => {
    const { ms, got } = await closedAfter(await clientHello());
    // the relay answered the hello (ServerHello and the rest of its flight), then waited for the client's Finished
    expect(got).toBeGreaterThan(0);
    expect(ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS * 0.8);
    expect(ms).toBeLessThan(HEADERS_TIMEOUT_MS + 5_000);
    await vi.waitFor(() => expect(slow.edge.connectionCount).toBe(0), { timeout: 5_000 });
  });
});
