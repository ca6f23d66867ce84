/**
 * THE SAMPLE APP: a small demonstration server, not the platform server. It stands in for the
 * mobile platform until that exists, and serves the tests and benchmarks: hello, echo, sized
 * downloads, uploads with a digest, a slow answer, and a WebSocket echo.
 */
import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { WebSocketServer } from 'ws';
import { defaults } from '../../shared/defaults.js';
import type { StreamTarget } from './agent.js';

export const SAMPLE_APP_NAME = 'sample app (demo, not the platform server)';

const BLOCK_BYTES = 16 * 1024;

/**
 * Deterministic test bytes: block i is a fixed pseudo-random block stamped with i in its first 8
 * bytes, so reordered, lost or repeated blocks change the digest.
 */
export function patternBlock(index: number, seed = 'relay'): Buffer {
  const block = Buffer.alloc(BLOCK_BYTES);
  let h = createHash('sha256').update(seed).digest();
  for (let o = 0; o < BLOCK_BYTES; o += h.length) {
    h.copy(block, o);
    h = createHash('sha256').update(h).digest();
  }
  block.writeBigUInt64BE(BigInt(index), 0);
  return block;
}

/** Yields `total` pattern bytes in blocks (the last one cut short). */
export function* patternChunks(total: number, seed = 'relay'): Generator<Buffer> {
  const base = patternBlock(0, seed);
  for (let i = 0, sent = 0; sent < total; i++) {
    const block = Buffer.from(base);
    block.writeBigUInt64BE(BigInt(i), 0);
    const n = Math.min(BLOCK_BYTES, total - sent);
    sent += n;
    yield n === BLOCK_BYTES ? block : block.subarray(0, n);
  }
}

export function patternSha256(total: number, seed = 'relay'): string {
  const hash = createHash('sha256');
  for (const chunk of patternChunks(total, seed)) hash.update(chunk);
  return hash.digest('hex');
}

const MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;

/** `--sample-app`: the agent's target that serves each stream with the sample app (the stream stands in for a socket). */
export function sampleAppTarget(): StreamTarget {
  const server = createSampleApp();
  return { name: SAMPLE_APP_NAME, onStream: (stream) => server.emit('connection', stream), close: () => server.closeAllConnections() };
}

export function createSampleApp(): http.Server {
  const server = http.createServer({ keepAliveTimeout: defaults.platformKeepAliveTimeoutMs, noDelay: true }, route);
  server.keepAliveTimeout = defaults.platformKeepAliveTimeoutMs;
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => ws.terminate());
    });
  });
  return server;
}

function route(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://sample.invalid');
  const q = url.searchParams;
  switch (`${req.method} ${url.pathname}`) {
    case 'GET /':
    case 'GET /hello':
      return json(res, 200, {
        app: SAMPLE_APP_NAME,
        message: 'hello through the relay',
        forwardedFor: req.headers['x-forwarded-for'] ?? null,
        forwardedProto: req.headers['x-forwarded-proto'] ?? null,
        forwarded: req.headers.forwarded ?? null,
        socketAddress: req.socket.remoteAddress ?? null,
      });
    case 'GET /bytes': {
      const n = Number(q.get('n') ?? 1024);
      if (!Number.isInteger(n) || n < 0 || n > MAX_DOWNLOAD_BYTES)
        return json(res, 400, { error: 'bad_size', message: `n must be an integer from 0 to ${MAX_DOWNLOAD_BYTES}` });
      const chunked = q.get('chunked') === '1';
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(chunked ? {} : { 'content-length': n }) });
      return streamOut(res, patternChunks(n, q.get('seed') ?? 'relay'));
    }
    case 'POST /echo':
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
      req.pipe(res);
      return;
    case 'POST /upload': {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash.update(chunk);
      });
      req.on('end', () => json(res, 200, { bytes, sha256: hash.digest('hex') }));
      return;
    }
    case 'GET /slow': {
      const ms = Math.min(Number(q.get('ms') ?? 1000) || 0, 60_000);
      const timer = setTimeout(() => json(res, 200, { waitedMs: ms }), ms);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    default:
      return json(res, 404, { error: 'not_found', message: `${req.method} ${url.pathname} is not a sample app route` });
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

/** Writes chunks with backpressure. */
function streamOut(res: ServerResponse, chunks: Iterator<Buffer>): void {
  const pump = (): void => {
    for (;;) {
      const next = chunks.next();
      if (next.done) {
        res.end();
        return;
      }
      if (!res.write(next.value)) {
        res.once('drain', pump);
        return;
      }
    }
  };
  res.on('close', () => res.off('drain', pump));
  pump();
}
