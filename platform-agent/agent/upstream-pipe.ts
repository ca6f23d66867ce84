/**
 * Pipe mode: each tunnel stream becomes a TCP (or TLS) connection to an external platform
 * server. The relay has already set X-Forwarded-For on every request, so the platform sees the
 * mobile client's address. Backpressure is end to end: `pipe` pauses whichever side is ahead.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ResetCode } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import type { StreamTarget } from './agent.js';

export interface UpstreamOptions {
  url: URL;
  /** PEM CA for an https upstream (default: the system's CAs). */
  ca?: string;
  logger: Logger;
}

/** `--upstream`: the agent's target that pipes each stream to the external server. */
export function upstreamTarget(options: UpstreamOptions): StreamTarget {
  return { name: options.url.origin, onStream: createUpstreamPipe(options) };
}

function createUpstreamPipe(options: UpstreamOptions): (stream: MuxStream) => void {
  const { url, logger } = options;
  const secure = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || (secure ? 443 : 80));
  return (stream) => {
    const socket = secure
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ca: options.ca })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      logger.warn(
        { event: 'upstream_error', upstream: url.origin, code: err.code, stream: stream.id },
        `upstream connection failed: ${err.message}`,
      );
      stream.destroy(Object.assign(err, { resetCode: ResetCode.upstreamUnreachable }));
    });
    stream.on('error', () => socket.destroy());
    stream.pipe(socket);
    socket.pipe(stream);
  };
}
