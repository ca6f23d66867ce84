/**
 * The relay's edge: an HTTP listener (10080) and an HTTPS listener (10443, TLS 1.2+) for mobile
 * clients, with strict parser limits and timeouts. Requests and upgrades go to the forwarder.
 * The listeners track their connections so that a drain can wait for in-flight work.
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Forwarder } from './forwarder.js';

export interface EdgeLimits {
  maxHeaderBytes: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export type EdgeServer = http.Server | https.Server;

export interface MobileListenersOptions {
  forwarder: Forwarder;
  limits: EdgeLimits;
  tls: { cert: string; key: string };
}

/** Modern TLS only; Node's default cipher list already prefers AEAD suites with forward secrecy. */
export const tlsServerDefaults = { minVersion: 'TLSv1.2' as const, honorCipherOrder: true };

export class MobileListeners {
  readonly http: http.Server;
  readonly https: https.Server;
  private readonly sockets = new Set<Socket>();
  private draining = false;

  constructor(options: MobileListenersOptions) {
    const { limits, forwarder } = options;
    const common = {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // how often Node checks the two timeouts above (default 30 s would let a slow client
      // hold a connection up to 30 s past its deadline)
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, limits.headersTimeoutMs / 2)),
      noDelay: true,
      // reject ambiguous requests (smuggling): Node's default strict parser stays on
      insecureHTTPParser: false,
    };
    this.http = http.createServer(common);
    this.https = https.createServer({ ...common, ...tlsServerDefaults, cert: options.tls.cert, key: options.tls.key });
    for (const server of [this.http, this.https] as EdgeServer[]) {
      server.on('request', (req, res) => {
        if (this.draining) res.shouldKeepAlive = false;
        forwarder.handleRequest(req, res);
      });
      server.on('upgrade', forwarder.handleUpgrade);
      server.on('connection', (socket: Socket) => {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
      });
      server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => onClientError(err, socket));
    }
    this.https.on('secureConnection', (socket) => socket.setNoDelay(true));
  }

  setCertificate(cert: string, key: string): void {
    this.https.setSecureContext({ ...tlsServerDefaults, cert, key });
  }

  async listen(host: string, httpPort: number, httpsPort: number): Promise<{ httpPort: number; httpsPort: number }> {
    return { httpPort: await listen(this.http, httpPort, host), httpsPort: await listen(this.https, httpsPort, host) };
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stops accepting, lets in-flight requests finish (responses go out with `Connection: close`,
   * idle keep-alive connections are closed), and cuts whatever is left after `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const closed = Promise.all([this.http, this.https].map((s) => new Promise<void>((r) => s.close(() => r()))));
    const deadline = Date.now() + timeoutMs;
    while (this.sockets.size > 0 && Date.now() < deadline) {
      this.http.closeIdleConnections();
      this.https.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}

function listen(server: EdgeServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** Parser errors and timeouts: answer with a status and a JSON error, then close. */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || (socket as Socket & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const [status, code] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'header_too_large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout']
        : [400, 'bad_request'];
  const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
  const body = JSON.stringify({ error: code, message: reason });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
  );
}
