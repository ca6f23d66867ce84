/**
 * An `http.Agent` whose connections are tunnel streams, made for exactly one mobile connection.
 * The stream it opens carries that connection's metadata (client address, listener, TLS) in its
 * OPEN frame and serves that connection's keep-alive requests and WebSocket upgrade only: it is
 * never handed to another client, so the platform can trust the metadata for every request on
 * it. When the mobile connection closes, the agent is destroyed and so is its stream.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import type { TunnelRegistry } from './tunnel-registry.js';

export class TunnelHttpAgent extends http.Agent {
  private readonly registry: TunnelRegistry;
  private readonly meta: OpenMetadata;
  private readonly waitMs: number;
  /** The platform whose agents serve this mobile connection. */
  readonly platform: string;
  /** The agent connection of the last stream opened (for request logs). */
  lastConnectionId: string | null = null;

  constructor(registry: TunnelRegistry, meta: OpenMetadata, waitMs: number, streamIdleMs: number, platform: string) {
    // `timeout` closes an idle kept-alive stream; active requests are bounded by the
    // forwarder's proxyTimeout instead (Node's agent leaves busy sockets alone).
    super({
      keepAlive: true,
      maxSockets: 1,
      maxFreeSockets: 1,
      scheduling: 'lifo',
      ...(streamIdleMs > 0 ? { timeout: streamIdleMs } : {}),
    });
    this.registry = registry;
    this.meta = meta;
    this.waitMs = waitMs;
    this.platform = platform;
  }

  /** Node asks this before pooling a socket after a response: never pool a draining stream. */
  override keepSocketAlive(socket: Duplex): boolean {
    if ((socket as MuxStream).draining) return false;
    // @types/node declares the base method as void; Node's returns whether to pool
    return (http.Agent.prototype.keepSocketAlive as (s: Duplex) => boolean).call(this, socket);
  }

  // Node calls createConnection(options, callback) and waits for the callback when it returns
  // nothing, which lets a request wait for an agent connection to come up.
  override createConnection(_options: unknown, callback: (err: Error | null, stream?: Duplex) => void): undefined {
    this.registry.acquire(this.waitMs, this.platform).then(
      (conn) => {
        let stream;
        try {
          stream = conn.session.openStream(this.meta);
        } catch (err) {
          callback(err as Error);
          return;
        }
        this.lastConnectionId = conn.id;
        // an idle kept-alive stream on a connection that goes away is closed, so the client's
        // next request opens a stream on another connection instead of failing on this one
        stream.once('goaway', () => {
          if (Object.values(this.freeSockets).some((list) => list?.includes(stream as never))) stream.destroy();
        });
        callback(null, stream);
      },
      (err: Error) => callback(err),
    );
    return undefined;
  }
}
