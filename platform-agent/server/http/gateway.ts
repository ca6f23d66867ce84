/**
 * Forwards authenticated `/api/` requests the platform server does not serve itself to the
 * backend application (`--backend <url>`) with `http-proxy`, naming the verified caller in
 * `X-Platform-User` / `X-Platform-Role` / `X-Platform-Device` / `X-Platform-Client-Ip`, and what
 * it may do in `X-Platform-Operations` (its operations, comma-separated, built-in and defined by
 * administrators: a backend enforces its document types with them). A name may be in any script:
 * in `X-Platform-User` every character outside visible ASCII is percent-encoded as UTF-8
 * (`Иванов` → `%D0%98%D0%B2…`, a space → `%20`; `decodeURIComponent` gives the name back; names
 * never hold `%`), since a header value cannot carry it as is. Any
 * `X-Platform-*` header a client sent is removed first, and so are its credentials (the backend
 * trusts the identity headers, so it never needs them), and every header whose name holds `_`
 * (as the relay does by default, nginx's `underscores_in_headers off`): a CGI-style backend reads
 * `X_Platform_User` as `X-Platform-User`, so an underscore spelling could forge an identity header
 * — and that includes requests that reach this server without the relay (its internal listener).
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import httpProxy from 'http-proxy';
import { defaults } from '../../../shared/defaults.js';
import { RelayError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { ApiIdentity, RequestContext } from './auth-routes.js';
import { sendError } from './http-io.js';

export const IDENTITY_HEADERS = Object.freeze({
  user: 'x-platform-user',
  role: 'x-platform-role',
  device: 'x-platform-device',
  clientIp: 'x-platform-client-ip',
  operations: 'x-platform-operations',
});

/** A name as a header value: each character outside visible ASCII percent-encoded (UTF-8). */
export function headerName(name: string): string {
  return name.replace(/[^\x21-\x7e]/gu, (c) => encodeURIComponent(c));
}

const CREDENTIAL_HEADERS = ['authorization', 'twx-mobile-token', 'cookie'];

/** Headers the authentication produced for a request, added to the backend's response. */
const pendingHeaders = new WeakMap<IncomingMessage, Record<string, string | string[]>>();

export class Gateway {
  private readonly proxy: httpProxy;
  private readonly agent: http.Agent;

  constructor(
    readonly backend: URL,
    logger: Logger,
    options: { ca?: string; timeoutMs?: number } = {},
  ) {
    this.agent =
      backend.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) })
        : new http.Agent({ keepAlive: true });
    this.proxy = httpProxy.createProxyServer({
      target: backend.origin,
      agent: this.agent,
      xfwd: false,
      secure: true,
      proxyTimeout: options.timeoutMs ?? defaults.backendTimeoutMs,
    });
    this.proxy.on('proxyRes', (proxyRes, req) => {
      const extra = pendingHeaders.get(req);
      if (!extra) return;
      pendingHeaders.delete(req);
      for (const [name, value] of Object.entries(extra)) {
        const key = name.toLowerCase();
        if (key === 'set-cookie') {
          const theirs = proxyRes.headers['set-cookie'] ?? [];
          proxyRes.headers['set-cookie'] = [...theirs, ...(Array.isArray(value) ? value : [value])];
        } else {
          proxyRes.headers[key] = value;
        }
      }
    });
    this.proxy.on('error', (err, _req, res) => {
      logger.warn({ event: 'backend_error', err: (err as Error).message }, 'backend request failed');
      if (res instanceof http.ServerResponse) sendError(res, new RelayError('PLATFORM_ERR_BACKEND'));
      else res.destroy();
    });
  }

  forward(req: IncomingMessage, res: ServerResponse, who: ApiIdentity, ctx: RequestContext, operations: readonly string[]): void {
    // http-proxy sends req.headers (names in lower case), so deleting here drops them upstream
    for (const name of Object.keys(req.headers)) if (name.startsWith('x-platform-') || name.includes('_')) delete req.headers[name];
    for (const name of CREDENTIAL_HEADERS) delete req.headers[name];
    req.headers[IDENTITY_HEADERS.user] = headerName(who.username);
    req.headers[IDENTITY_HEADERS.role] = who.role;
    req.headers[IDENTITY_HEADERS.operations] = operations.join(',');
    if (who.deviceId) req.headers[IDENTITY_HEADERS.device] = who.deviceId;
    req.headers[IDENTITY_HEADERS.clientIp] = ctx.ip;
    // The authentication's own headers (a session cookie, a new mobile token) join the backend's
    // answer: a backend Set-Cookie must not replace the session cookie, nor the other way round.
    pendingHeaders.set(req, who.responseHeaders);
    this.proxy.web(req, res);
  }

  close(): void {
    this.proxy.close();
    this.agent.destroy();
  }
}
