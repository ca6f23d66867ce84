/**
 * Raw byte peers for the conformance suites: a client socket (TCP or TLS) that writes exactly
 * the bytes a test gives it, and an upstream TCP server — the agent pipes each tunnel stream to
 * it in pipe mode — that records exactly the bytes it receives and answers only what the test
 * tells it to. Neither parses HTTP for the tests, so a test asserts on the bytes themselves.
 */
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { defaultEdgeLimits, type EdgeLimits } from '../../relay/edge/edge-limits.js';
import type { Relay } from '../../relay/relay.js';
import { pipeTo, startAgent, startRelay } from '../fixtures/harness.js';

/** One end of a raw connection: every read kept in order, writes as given. */
export class RawConn {
  readonly socket: net.Socket;
  /** Each read, in arrival order (a read is what one 'data' event brought). */
  readonly reads: Buffer[] = [];
  /** The peer ended its side (FIN). */
  ended = false;
  closed = false;
  /** The socket error the connection ended with (e.g. ECONNRESET), if any. */
  error: string | null = null;
  private readonly closedPromise: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.reads.push(c));
    socket.on('end', () => (this.ended = true));
    socket.on('error', (err: NodeJS.ErrnoException) => (this.error = err.code ?? err.message));
    this.closedPromise = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  /** Everything received so far, as latin1 text (one character per byte). */
  get text(): string {
    return Buffer.concat(this.reads).toString('latin1');
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  end(data?: string): void {
    if (data === undefined) this.socket.end();
    else this.socket.end(Buffer.from(data, 'latin1'));
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Waits until `cond(text)` holds; rejects after `timeoutMs` with what was received. */
  async waitFor(cond: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!cond(this.text)) {
      if (Date.now() > deadline) throw new Error(`condition not met in time; received ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.text;
  }

  /**
   * Waits until at least `n` bytes are in (or the connection closed), and returns the text: the
   * caller compares it with what it expected, so a wrong byte shows as a diff, not a timeout.
   */
  async receive(n: number, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.text.length < n && !this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    return this.text;
  }

  /** Resolves once the peer ended its side or the connection closed; rejects after `timeoutMs`. */
  async waitEnded(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && !this.closed) {
      if (Date.now() > deadline) throw new Error(`peer never ended; received ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Resolves once the connection is fully closed; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`connection not closed in time; received ${JSON.stringify(this.text)}`)), timeoutMs);
    });
    try {
      await Promise.race([this.closedPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Connects a raw client to the relay: plain TCP, or TLS with `tls: true` (any certificate). */
export function connectClient(port: number, options: { tls?: boolean; localAddress?: string } = {}): Promise<RawConn> {
  return new Promise((resolve, reject) => {
    const local = options.localAddress ? { localAddress: options.localAddress } : {};
    const socket = options.tls
      ? tls.connect({ port, host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false, ...local })
      : net.connect({ port, host: '127.0.0.1', ...local });
    const conn = new RawConn(socket);
    const onError = (err: Error): void => reject(err);
    socket.once('error', onError);
    socket.once(options.tls ? 'secureConnect' : 'connect', () => {
      socket.off('error', onError);
      resolve(conn);
    });
  });
}

/**
 * The external platform server of pipe mode, as bytes: every accepted connection is kept (in
 * accept order) and answers nothing unless a test (or `onData`) writes to it. Half-open is
 * allowed, so the agent ending its side does not end ours.
 */
export class RawUpstream {
  readonly conns: RawConn[] = [];
  private readonly server: net.Server;
  private onData: ((conn: RawConn) => void) | null = null;

  private constructor() {
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => {
      const conn = new RawConn(socket);
      this.conns.push(conn);
      socket.on('data', () => this.onData?.(conn));
    });
  }

  static async start(): Promise<RawUpstream> {
    const upstream = new RawUpstream();
    await new Promise<void>((resolve) => upstream.server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get url(): URL {
    return new URL(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}`);
  }

  /** Calls `handler` after every read on any connection (after the read is recorded). */
  setOnData(handler: ((conn: RawConn) => void) | null): void {
    this.onData = handler;
  }

  /** The `i`-th connection accepted (0-based), once it is there. */
  async nth(i: number, timeoutMs = 10_000): Promise<RawConn> {
    const deadline = Date.now() + timeoutMs;
    while (this.conns.length <= i) {
      if (Date.now() > deadline) throw new Error(`upstream connection #${i} never came (${this.conns.length} so far)`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.conns[i]!;
  }

  async close(): Promise<void> {
    for (const conn of this.conns) conn.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** One response of the relay's own (an error), split: status, lower-cased head, JSON body. */
export interface ErrorReply {
  status: number;
  head: string;
  error: unknown;
}

/** Parses the first response in `text` as one of the relay's JSON error answers. */
export function errorReply(text: string): ErrorReply {
  const end = text.indexOf('\r\n\r\n');
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
  if (end === -1 || !m) throw new Error(`not an HTTP response: ${JSON.stringify(text)}`);
  const head = text.slice(0, end).toLowerCase();
  const length = Number(/\r\ncontent-length: (\d+)/.exec(head)?.[1] ?? NaN);
  const body = text.slice(end + 4, end + 4 + length);
  return { status: Number(m[1]), head, error: (JSON.parse(body) as { error?: unknown }).error };
}

/** A relay, an agent in pipe mode with one tunnel connection, and the raw upstream it pipes to. */
export interface PipeRig {
  relay: Relay;
  agent: PlatformAgent;
  upstream: RawUpstream;
  /** Clients opened through {@link PipeRig.client}, destroyed by {@link PipeRig.dropClients}. */
  clients: RawConn[];
  client(options?: { tls?: boolean; localAddress?: string }): Promise<RawConn>;
  dropClients(): void;
  stop(): Promise<void>;
}

/**
 * Starts a {@link PipeRig}. One tunnel connection keeps the order of streams (and so of upstream
 * connections) the order in which the relay opened them.
 */
export async function startPipeRig(limits: Partial<EdgeLimits> = {}): Promise<PipeRig> {
  const upstream = await RawUpstream.start();
  const relay = await startRelay({ limits: { ...defaultEdgeLimits(), ...limits } });
  const agent = await startAgent(relay, { target: pipeTo(upstream.url), connections: 1 });
  const clients: RawConn[] = [];
  return {
    relay,
    agent,
    upstream,
    clients,
    async client(options = {}) {
      const ports = relay.ports!;
      const conn = await connectClient(options.tls ? ports.httpsPort : ports.httpPort, options);
      clients.push(conn);
      return conn;
    },
    dropClients() {
      for (const conn of clients.splice(0)) conn.destroy();
    },
    async stop() {
      for (const conn of clients.splice(0)) conn.destroy();
      await agent.stop(100);
      await relay.stop(100);
      await upstream.close();
    },
  };
}
