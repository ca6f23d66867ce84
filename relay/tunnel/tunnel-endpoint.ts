/**
 * The tunnel endpoint: a TLS listener where platform agents open WebSocket connections. The
 * agent's bearer token is checked at the upgrade, in constant time against a SHA-256 hash (the
 * relay keeps no token in clear); a bad or missing token gets a bare HTTP 401 and no upgrade.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { defaults } from '../../shared/defaults.js';
import type { Logger } from '../../shared/logger.js';
import { MuxSession, type SessionOptions } from '../../shared/mux/session.js';
import type { TunnelRegistry } from './tunnel-registry.js';

export interface TunnelEndpointOptions {
  tls: { cert: string; key: string };
  /** SHA-256 of the agent token (32 bytes). */
  tokenHash: Buffer;
  registry: TunnelRegistry;
  logger: Logger;
  mux?: Omit<SessionOptions, 'role' | 'onStream'>;
  maxMessageBytes?: number;
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Constant-time check of a presented `Authorization: Bearer` header against the stored hash. */
export function checkBearer(header: string | undefined, tokenHash: Buffer): boolean {
  const match = /^Bearer ([^\s]+)$/i.exec(header ?? '');
  // hash whatever was presented (even nothing) so that timing says nothing about the header
  const presented = hashToken(match?.[1] ?? '');
  return timingSafeEqual(presented, tokenHash) && match !== null;
}

let connectionCounter = 0;

export class TunnelEndpoint {
  readonly server: https.Server;
  private readonly wss: WebSocketServer;
  private readonly options: TunnelEndpointOptions;

  constructor(options: TunnelEndpointOptions) {
    this.options = options;
    this.server = https.createServer({
      cert: options.tls.cert,
      key: options.tls.key,
      minVersion: 'TLSv1.2',
      noDelay: true,
      headersTimeout: 10_000,
      requestTimeout: 15_000,
    });
    this.server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' }).end('tunnel endpoint: WebSocket upgrade required\n');
    });
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      clientTracking: false,
      maxPayload: options.maxMessageBytes ?? defaults.maxMessageBytes,
    });
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('tlsClientError', (err, socket) => {
      options.logger.debug({ event: 'tunnel_tls_error', remote: socket.remoteAddress, err: err.message }, 'tunnel TLS handshake failed');
    });
  }

  /** Swaps the TLS certificate for new connections. */
  setCertificate(cert: string, key: string): void {
    this.server.setSecureContext({ cert, key, minVersion: 'TLSv1.2' });
  }

  private readonly onUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    const { logger, registry } = this.options;
    const remote = socket.remoteAddress ?? 'unknown';
    socket.on('error', () => socket.destroy());
    if (!checkBearer(req.headers.authorization, this.options.tokenHash)) {
      logger.warn({ event: 'tunnel_auth_failed', remote }, 'agent tunnel upgrade refused: bad or missing token');
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const agentId = sanitizeId(req.headers['x-agent-id']);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const id = `${agentId}#${++connectionCounter}`;
      const session = new MuxSession(ws, { ...this.options.mux, role: 'server' });
      const conn = { id, agentId, remoteAddress: remote, since: new Date(), session };
      logger.info({ event: 'tunnel_connected', conn: id, agent: agentId, remote }, 'agent connected');
      session.on('goaway', () => logger.info({ event: 'tunnel_goaway', conn: id }, 'agent connection going away'));
      session.on('close', (err) => {
        const fields = { event: 'tunnel_disconnected', conn: id, agent: agentId, remote, code: err?.code };
        if (err) logger.warn(fields, `agent disconnected: ${err.message}`);
        else logger.info(fields, 'agent disconnected');
      });
      registry.add(conn);
    });
  };

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function sanitizeId(value: string | string[] | undefined): string {
  const raw = Array.isArray(value) ? value[0] : value;
  const clean = (raw ?? '').replace(/[^A-Za-z0-9._:@-]/g, '').slice(0, 64);
  return clean || 'agent';
}
