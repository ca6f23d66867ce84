/**
 * Mobile clients for the edge suites: raw TCP exchanges, bare TLS handshakes and requests from a
 * chosen loopback address (Linux routes all of 127.0.0.0/8 to lo, so 127.0.0.2 and 127.0.0.3 are
 * other clients to the relay).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { MobileListeners } from '../../relay/edge/mobile-listeners.js';
import { request, type Reply } from '../fixtures/harness.js';

export interface RawReply {
  /** Everything the server sent before it closed. */
  text: string;
  /** The socket error, if the connection ended with one (e.g. ECONNRESET). */
  error: string | null;
}

/**
 * Connects (from `localAddress` if given), sends `data` (each string a separate write, `pauseMs`
 * apart), and collects what comes back until the server closes or resets.
 */
export function rawExchange(
  port: number,
  data: string | string[],
  options: { host?: string; localAddress?: string; pauseMs?: number; timeoutMs?: number } = {},
): Promise<RawReply> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | null = null;
    const socket = net.connect({
      port,
      host: options.host ?? '127.0.0.1',
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    socket.on('connect', async () => {
      for (const part of Array.isArray(data) ? data : [data]) {
        if (socket.destroyed) return;
        socket.write(part);
        if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
      }
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString(), error }));
    socket.setTimeout(options.timeoutMs ?? 10_000, () => socket.destroy(new Error('server never closed the connection')));
  });
}

/** A bare TLS handshake: `secure` when it completes, else the error code. */
export function tlsHandshake(port: number, host = '127.0.0.1', localAddress?: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      port,
      host,
      servername: 'localhost',
      rejectUnauthorized: false,
      ...(localAddress ? { localAddress } : {}),
    });
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve('secure');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.setTimeout(10_000, () => socket.destroy(new Error('handshake hung')));
  });
}

/** A request's status, or the error code it failed with (ECONNRESET for a dropped client). */
export async function outcome(url: string, options: Parameters<typeof request>[1] = {}): Promise<number | string> {
  try {
    const reply: Reply = await request(url, { agent: false, ...options });
    return reply.status;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
}

/** True when this host can listen on `host` (e.g. `::1`: IPv6 may be off in a container). */
export function canListen(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(0, host, () => server.close(() => resolve(true)));
  });
}

/** Counts the TLS and HTTP work the edge did from now on: handshakes completed or failed, requests parsed. */
export function workCounter(edge: MobileListeners): { secure: number; tlsErrors: number; requests: number } {
  const counts = { secure: 0, tlsErrors: 0 };
  edge.https.on('secureConnection', () => counts.secure++);
  edge.https.on('tlsClientError', () => counts.tlsErrors++);
  const base = edge.requestCount;
  return {
    get secure() {
      return counts.secure;
    },
    get tlsErrors() {
      return counts.tlsErrors;
    },
    get requests() {
      return edge.requestCount - base;
    },
  };
}
